"""Helpers for recipe tests: tiny valid audio files in synthetic corpus trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def write_audio(path: Path, seconds: float = 0.5, rate: int = 16_000, seed: int = 0, channels: int = 1) -> Path:
    """Write ``seconds`` of low-level noise (seeded, so each file differs) in the suffix' format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).normal(0, 0.1, (int(seconds * rate), channels)).astype(np.float32)
    sf.write(path, noise, rate)
    return path


@pytest.fixture
def make_tree(tmp_path):
    """``make_tree({"a/b.wav": None, "labels.txt": "text"})``: files under tmp_path/corpus."""

    def make(files: dict[str, str | None], root_name: str = "corpus") -> Path:
        root = tmp_path / root_name
        for seed, (relative, content) in enumerate(sorted(files.items())):
            target = root / relative
            if content is None:
                write_audio(target, seed=seed)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content, encoding="utf-8")
        return root

    return make


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Keep content hashes of synthetic files out of the user's cache."""
    monkeypatch.setenv("POLYEMO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
