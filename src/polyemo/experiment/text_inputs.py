"""Speech + text inputs: pooled speech features with a transcript's text features (``text:``).

The provider for experiments with a ``text:`` block (:mod:`polyemo.experiment.text_spec`):

1. the speech features, exactly as :class:`~polyemo.experiment.inputs.CachedFeatures` serves them;
2. each row's text: the ASR transcript (:func:`polyemo.encoders.asr.transcribe_manifest`,
   every row, cached by audio content hash, so a second run decodes nothing) or the
   manifest's ``text``; a row without one gets the empty text;
3. its text features (:func:`polyemo.cache.text_store.text_features`, cached by text hash),
   one layer (``layer``);
4. fused (``fusion``): ``concat`` appends the text vector to every speech layer
   ``(N, L, D_speech + D_text)``; ``text`` serves the text vector alone ``(N, 1, D_text)``;
   ``cross_attention`` serves frames followed by text-token slots (:func:`frames_with_tokens`).

Only transcripts and text enter, never labels, so nothing here can leak a test label; ASED's
README warns that its sentences give away the emotion: the recipe leaves ASED out.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyemo.experiment.errors import ExperimentError
from polyemo.experiment.inputs import CachedFeatures
from polyemo.experiment.plan import FeatureRequest
from polyemo.experiment.text_spec import TextSpec

# One text encoder and one transcriber in memory per process (as shared_encoder does for speech).
_TEXT: dict[str, Any] = {}


def _shared(kind: str, key: Any, make):
    blob = json.dumps([kind, key], sort_keys=True, default=str)
    if blob not in _TEXT:
        for old in [k for k in _TEXT if json.loads(k)[0] == kind]:
            del _TEXT[old]
        _TEXT[blob] = make()
    return _TEXT[blob]


def row_texts(manifest: pd.DataFrame, spec: TextSpec, *, progress: bool) -> tuple[list[str], pd.DataFrame]:
    """Each row's text under ``spec.source`` (transcripts computed or read from the store)."""
    if spec.source == "text":
        texts = manifest["text"].astype(object).where(manifest["text"].notna(), "").tolist()
        return [str(t) for t in texts], manifest
    from polyemo.encoders.asr import Transcriber, transcribe_manifest

    asr = spec.asr
    transcriber = _shared("asr", asr.model_dump(mode="json", exclude={"store", "batch_size"}),
                          lambda: Transcriber(asr.model, language=asr.language, beams=asr.beams))
    result = transcribe_manifest(manifest, transcriber, rows="all", batch_size=asr.batch_size, store=asr.store,
                                 progress=progress)
    if len(result.failures):
        first = result.failures.iloc[0]
        raise ExperimentError(f"transcribing {len(result.failures)} rows failed, e.g. {first['utt_id']}: {first['error']}")
    texts = result.manifest["transcript"].astype(object).where(result.manifest["transcript"].notna(), "").tolist()
    return [str(t) for t in texts], result.manifest


def pick_layer(features: np.ndarray, layer: int | str) -> np.ndarray:
    """(N, L, D) -> (N, D): one text layer (``last``, ``mean`` over layers, or an index)."""
    if layer == "last":
        return features[:, -1]
    if layer == "mean":
        return features.mean(axis=1)
    if not -features.shape[1] <= int(layer) < features.shape[1]:
        raise ExperimentError(f"text.layer {layer} is out of range: the text encoder has {features.shape[1]} layers")
    return features[:, int(layer)]


def frames_with_tokens(speech: list[np.ndarray], tokens: list[np.ndarray], layer: int | str, slots: int) -> list[np.ndarray]:
    """Per row (L, T + slots, D_speech + D_text): speech frames, then ``slots`` text-token slots
    (one text layer, the same for every speech layer; unused slots zero) -- the layout of
    :class:`polyemo.heads.fusion.CrossAttentionFusionHead`."""
    out = []
    for frames, states in zip(speech, tokens):
        text = pick_layer(states.astype(np.float32)[None], layer)[0][:slots]  # (tokens, D_text)
        n_layers, n_frames, d_speech = frames.shape
        row = np.zeros((n_layers, n_frames + slots, d_speech + text.shape[-1]), np.float32)
        row[:, :n_frames, :d_speech] = frames
        row[:, n_frames:n_frames + len(text), d_speech:] = text
        out.append(row)
    return out


class SpeechTextFeatures(CachedFeatures):
    """Pooled speech features with text features appended (or text alone), in ``manifest`` order."""

    @classmethod
    def extract(cls, name: str, manifest: pd.DataFrame, request: FeatureRequest, encoder, *, progress: bool,
                failures_path: Path | None) -> SpeechTextFeatures:
        from polyemo.cache.text_store import text_features
        from polyemo.encoders.text import get_text_encoder

        spec = TextSpec(**request.text)
        wanted = "frames" if spec.fusion == "cross_attention" else "pooled"
        if request.kind != wanted:
            raise ExperimentError(f"experiment {name!r}: text fusion {spec.fusion!r} takes {wanted} speech features, "
                                  f"not {request.kind!r}")
        speech = CachedFeatures.extract(name, manifest, request.model_copy(update={"text": None}), encoder,
                                        progress=progress, failures_path=failures_path)
        rows = speech.manifest
        texts, rows = row_texts(rows, spec, progress=progress)
        try:
            text_encoder = _shared("text", [spec.encoder, spec.options], lambda: get_text_encoder(spec.encoder, **spec.options))
        except (ValueError, KeyError, FileNotFoundError, OSError) as error:
            raise ExperimentError(f"experiment {name!r}: cannot load text encoder {spec.encoder!r}: {error}") from None
        languages = rows["language"].astype(object).where(rows["language"].notna(), None).tolist()
        if spec.fusion == "cross_attention":
            tokens, _ = text_features(texts, text_encoder, languages=languages, kind="tokens", cache_dir=spec.cache_dir,
                                      progress=progress)
            array, layers = frames_with_tokens(speech.array, tokens, spec.layer, spec.tokens), list(speech.layers)
        else:
            pooled, _ = text_features(texts, text_encoder, languages=languages, cache_dir=spec.cache_dir,
                                      progress=progress)
            vector = pick_layer(pooled, spec.layer).astype(np.float32)
            speech_array = np.asarray(speech.array, np.float32)
            if spec.fusion == "concat":
                tiled = np.repeat(vector[:, None, :], speech_array.shape[1], axis=1)
                array, layers = np.concatenate([speech_array, tiled], axis=-1), list(speech.layers)
            else:
                array, layers = vector[:, None, :], [0]
        text_identity = text_encoder.identity.as_dict()
        spec_record = spec.model_dump(mode="json", exclude={"cache_dir"})
        spec_record["asr"].pop("store", None)
        key = hashlib.sha256(json.dumps([speech.identity.get("key"), text_identity["key"], spec_record],
                                        sort_keys=True).encode()).hexdigest()[:20]
        identity = {**speech.identity, "key": key, "speech": dict(speech.identity), "text": text_identity,
                    "text_spec": spec_record}
        provider = cls(rows, array, layers, identity=identity, n_failed=speech.n_failed)
        provider.dimensions = request.dimensions
        provider.texts = texts
        return provider


PROVIDER = SpeechTextFeatures
