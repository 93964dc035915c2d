"""Raw audio as a fold's input (``features: audio``), for estimators that train an encoder.

:class:`AudioInputs` is the :class:`~polyemo.experiment.inputs.InputProvider` of decoded
clips: every row of the plan decoded once with :func:`polyemo.audio.load_audio` (mono
16 kHz float32) into one flat file of the user cache (``audio/<key>.f32`` + its index),
written atomically and reused by any run over the same files; the clips are memory-mapped
views of it, so a fold's ``SplitData`` (features: per row an array of shape
(1, samples, 1)) costs no memory until a batch reads it, and the operating system's page
cache is the bounded in-memory cache. Rows whose audio cannot be decoded are left out and
listed in the failures file, as for features.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from polyemo.experiment.errors import ExperimentError
from polyemo.experiment.inputs import InputProvider
from polyemo.experiment.plan import FeatureRequest
from polyemo.io import atomic_path, write_json, write_table

AUDIO_KIND = "audio"
FORMAT = "polyemo-decoded-audio/1"


def audio_store_dir(cache_dir: Path | None = None) -> Path:
    from polyemo.paths import user_cache_dir

    return Path(cache_dir) / "audio" if cache_dir is not None else user_cache_dir() / "audio"


def _key(manifest: pd.DataFrame) -> str:
    # content hashes of the decoded PCM where the manifest has them, else path + size + mtime
    items = []
    for path, digest in zip(manifest["path"].astype(str), manifest["content_hash"].astype(object)):
        if isinstance(digest, str) and digest:
            items.append(digest)
        else:
            stat = os.stat(path)
            items.append(f"{path}|{stat.st_size}|{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join([FORMAT, *items]).encode()).hexdigest()[:24]


def decode_rows(manifest: pd.DataFrame, folder: Path, *, progress: bool = False) -> tuple[Path, dict[str, Any]]:
    """Decode every row into ``folder/<key>.f32`` (once; atomic) and return it with its index
    (``offsets``, ``lengths`` in samples; ``failed``: row -> error)."""
    from polyemo.audio import AudioError, load_audio
    from polyemo.progress import progress_bar

    key = _key(manifest)
    data, index_path = folder / f"{key}.f32", folder / f"{key}.json"
    if data.is_file() and index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("format") == FORMAT and data.stat().st_size == 4 * int(index["samples"]):
            return data, index
    folder.mkdir(parents=True, exist_ok=True)
    offsets, lengths, failed, total = [], [], {}, 0
    with atomic_path(data) as tmp, open(tmp, "wb") as handle, \
            progress_bar("{task.fields[status]}", enabled=progress) as bar:
        task = bar.add_task("decode audio", total=len(manifest), status="")
        for row, path in enumerate(manifest["path"].astype(str)):
            try:
                wave = np.ascontiguousarray(load_audio(path), dtype=np.float32)
            except (AudioError, OSError, ValueError) as error:
                failed[str(row)] = str(error)
                wave = np.zeros(0, dtype=np.float32)
            offsets.append(total)
            lengths.append(int(wave.size))
            handle.write(wave.tobytes())
            total += int(wave.size)
            bar.advance(task)
    index = {"format": FORMAT, "samples": total, "offsets": offsets, "lengths": lengths, "failed": failed}
    write_json(index_path, index)
    return data, index


class AudioInputs(InputProvider):
    """Decoded 16 kHz clips of every row (memory-mapped), in ``manifest`` order."""

    layers = [0]

    def __init__(self, manifest: pd.DataFrame, waves: list[np.ndarray], identity: dict[str, Any] | None = None,
                 n_failed: int = 0) -> None:
        self.manifest = manifest
        self.waves = waves
        self.identity = dict(identity or {})
        self.n_failed = n_failed
        self.row_of = {u: i for i, u in enumerate(manifest["utt_id"].astype(str))}

    def split_data(self, rows: pd.DataFrame, classes: list[str], masks: dict[str, np.ndarray]):
        clips = [self.waves[self.row_of[u]].reshape(1, -1, 1) for u in rows["utt_id"].astype(str)]
        return self._split_data(rows, clips, classes, masks)

    @classmethod
    def extract(cls, name: str, manifest: pd.DataFrame, request: FeatureRequest, encoder=None, *, progress: bool = False,
                failures_path: Path | None = None) -> AudioInputs:
        """Decode the rows (``encoder``: the pretrained encoder, for its identity only)."""
        data, index = decode_rows(manifest, audio_store_dir(request.cache_dir), progress=progress)
        flat = np.memmap(data, dtype=np.float32, mode="r") if index["samples"] else np.zeros(0, np.float32)
        failed = {int(k): v for k, v in index["failed"].items()}
        keep = np.array([i not in failed for i in range(len(manifest))], dtype=bool)
        if failures_path is not None and failed:
            write_table(failures_path, pd.DataFrame({"utt_id": manifest["utt_id"].astype(str).to_numpy()[sorted(failed)],
                                                     "error": [failed[i] for i in sorted(failed)]}))
        if not keep.any():
            raise ExperimentError(f"experiment {name!r}: no row's audio could be decoded (see {failures_path})")
        waves = [flat[o:o + n] for o, n, k in zip(index["offsets"], index["lengths"], keep) if k]
        identity = {"kind": AUDIO_KIND, "sample_rate": 16_000}
        if encoder is not None:
            identity = {**encoder.identity.as_dict(), "inputs": AUDIO_KIND}
        return cls(manifest[keep].reset_index(drop=True), waves, identity=identity, n_failed=int((~keep).sum()))

#: the provider of ``features: audio`` (found by polyemo.experiment.inputs.provider_for)
PROVIDER = AudioInputs
