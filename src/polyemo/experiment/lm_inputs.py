"""Rows as text (and speech tokens) for the language-model estimators (``features: lm``).

The provider of ``features: lm`` (found by :func:`polyemo.experiment.inputs.provider_for`):
each row's text is the ASR transcript or the manifest's ``text`` (the ``text:`` block's
``source`` and ``asr``, served by :func:`polyemo.experiment.text_inputs.row_texts`), and the
``text:`` block's ``fusion`` says what speech goes with it:

- ``text``: none (the text LM classifier, the zero-shot LM);
- ``concat``: the speech encoder's pooled layer states, one token per layer (cached features;
  ``encoder.layers`` picks them, and candidates of ``select:`` may choose among them);
- ``cross_attention``: the speech encoder's frames of one layer (``encoder.layers: [k]``).

The LM's tokenizer belongs to the estimator, so rows carry their text itself
(:mod:`polyemo.text_lm.rows`). Only texts and speech features enter, never labels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from polyemo.experiment.errors import ExperimentError
from polyemo.experiment.inputs import CachedFeatures
from polyemo.experiment.plan import FeatureRequest
from polyemo.experiment.text_spec import TextSpec
from polyemo.text_lm.rows import pack_row, unpack_row  # noqa: F401  (the row format, re-exported)

LM_KIND = "lm"
_SPEECH = {"text": None, "concat": "pooled", "cross_attention": "frames"}


class LMInputs(CachedFeatures):
    """Packed rows (:func:`pack_row`) of every row, in ``manifest`` order."""

    @classmethod
    def extract(cls, name: str, manifest: pd.DataFrame, request: FeatureRequest, encoder=None, *, progress: bool = False,
                failures_path: Path | None = None) -> LMInputs:
        from polyemo.experiment.text_inputs import row_texts

        spec = TextSpec(**(request.text or {"fusion": "text"}))
        kind = _SPEECH[spec.fusion]
        rows, speech, identity, layers = manifest, None, {}, [0]
        if kind is not None:
            if kind == "frames" and (request.layers is None or len(request.layers) != 1):
                raise ExperimentError(f"experiment {name!r}: features lm with speech frames (text.fusion: "
                                      "cross_attention) reads one encoder layer: set encoder.layers: [k]")
            cached = CachedFeatures.extract(name, manifest, request.model_copy(update={"text": None, "kind": kind}),
                                            encoder, progress=progress, failures_path=failures_path)
            rows, identity = cached.manifest, dict(cached.identity)
            # frames: one slot of T frames; pooled: one slot per layer holding that layer's vector
            speech = ([np.asarray(a, np.float32)[:1] for a in cached.array] if kind == "frames"
                      else np.asarray(cached.array, np.float32)[:, :, None, :])
            layers = list(cached.layers)
        texts, rows = row_texts(rows, spec, progress=progress)
        languages = rows["language"].astype(object).where(rows["language"].notna(), None).tolist() \
            if "language" in rows else [None] * len(rows)
        try:
            array = [pack_row(t, lang, None if speech is None else speech[i]) for i, (t, lang) in enumerate(zip(texts, languages))]
        except ValueError as error:
            raise ExperimentError(f"experiment {name!r}: {error}") from None
        spec_record = spec.model_dump(mode="json", include={"source", "fusion", "asr"})
        spec_record["asr"].pop("store", None)
        key = hashlib.sha256(json.dumps([identity.get("key"), spec_record, texts], sort_keys=True).encode()).hexdigest()[:20]
        provider = cls(rows.reset_index(drop=True), array, layers, n_failed=len(manifest) - len(rows),
                       identity={"kind": LM_KIND, "key": key, "speech": identity, "text_spec": spec_record})
        provider.dimensions = request.dimensions
        provider.texts = texts
        return provider


PROVIDER = LMInputs
