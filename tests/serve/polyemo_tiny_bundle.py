"""A small real model bundle for the bundle, predict and serve tests.

A linear head trained for a few seconds on Whisper-tiny.en features of 24 EmoDB clips (four
emotions, six per emotion, several speakers), speaker-normalised. Built once per test session
into pytest's base temp folder and shared by every test module (they put this folder on
``sys.path``), with one encoder instance per process.
"""

from __future__ import annotations

import io
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

ENCODER = "whisper-tiny.en"
EMOTIONS = ("anger", "happiness", "neutral", "sadness")
PER_EMOTION = 6
MIN_UTTERANCES = 3
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def encoder():
    from polyemo.encoders import get_encoder

    return get_encoder(ENCODER)


def training_clips(corpora: Path) -> pd.DataFrame:
    """Six clips per emotion, round-robin over speakers so several speakers appear."""
    manifest = pd.read_csv(corpora / "emodb" / "manifest.csv", dtype={"speaker": str})
    manifest = manifest[manifest["emotion"].isin(EMOTIONS)].sort_values(["speaker", "path"])
    manifest["rank"] = manifest.groupby(["emotion", "speaker"]).cumcount()
    picked = manifest.sort_values(["rank", "speaker"]).groupby("emotion").head(PER_EMOTION)
    picked = picked.assign(path=[str(corpora / "emodb" / p) for p in picked["path"]])
    return picked.reset_index(drop=True)


@lru_cache(maxsize=4)
def _features(corpora: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from polyemo.audio import load_audio

    clips = training_clips(corpora)
    features = encoder().pooled([load_audio(p) for p in clips["path"]])
    labels = np.array([EMOTIONS.index(e) for e in clips["emotion"]])
    return features, labels, clips["speaker"].to_numpy(dtype=object)


def train_head(corpora: Path, normalisation: str = "speaker", head: str = "linear", params: dict | None = None):
    """(HeadModel, HeadConfig, fitted normaliser, features shape) trained on the clips."""
    import torch

    from polyemo.heads import HeadConfig, build_head
    from polyemo.train.data import SplitData
    from polyemo.train.normalise import make_normaliser

    features, labels, speakers = _features(corpora)
    options = {"min_utterances": MIN_UTTERANCES} if normalisation == "speaker" else {}
    normaliser = make_normaliser(normalisation, **options)
    x = features
    if normaliser is not None:
        data = SplitData(features, speakers=speakers)
        x = normaliser.fit(data).transform(data).features
    config = HeadConfig(name=head, params=params or {})
    torch.manual_seed(0)
    model = build_head(config, x.shape[1], x.shape[2], len(EMOTIONS))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    inputs, targets = torch.from_numpy(np.asarray(x, dtype=np.float32)), torch.from_numpy(labels)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(inputs)["emotion"], targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), config, normaliser, features.shape


def export(target: Path, corpora: Path, *, identity: dict | None = None, encoder_name: str = ENCODER,
           normalisation: str = "speaker", head: str = "linear", params: dict | None = None) -> Path:
    from polyemo.bundle import FeatureSpec, ModelCard, export_bundle
    from polyemo.labels import LabelSet

    model, config, normaliser, shape = train_head(corpora, normalisation, head, params)
    spec = FeatureSpec(encoder=encoder_name, identity=identity or encoder().identity.as_dict(),
                       kind="pooled", feature_dim=shape[2])
    card = ModelCard(name="tiny-test-model", description="Test model: 24 EmoDB clips, linear probe.",
                     corpora=["emodb"], languages=["de"], protocol="none (training clips only)",
                     scores={"train_UA": 1.0}, license="research")
    return export_bundle(target, model=model, head_config=config, features=spec,
                         labels=LabelSet(name="big4", classes=list(EMOTIONS)), card=card, normaliser=normaliser,
                         metrics={"note": "trained on its test clips; no held-out score"}, overwrite=True)


def shared_bundle(base: Path, corpora: Path) -> Path:
    """The session's tiny bundle (built by whichever test module asks first)."""
    target = base / "tiny-bundle"
    with _LOCK:
        if not (target / "manifest.json").exists():
            export(target, corpora)
    return target


@lru_cache(maxsize=4)
def recogniser(bundle: Path):
    from polyemo.predict import load_model

    return load_model(bundle, encoder=encoder())


def wav_bytes(wave: np.ndarray, rate: int = 16000) -> bytes:
    """16-bit WAV file contents of a waveform."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _serve_limits():
    from polyemo.serve import ServeConfig

    # Small limits so the limit tests stay small.
    return ServeConfig(max_upload_bytes=3_000_000, max_duration_seconds=60.0)


SERVE_LIMITS = _serve_limits()
