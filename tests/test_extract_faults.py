"""Faults survived by extraction (issue 15): ``kill -9`` at several random points of an eGeMAPS
extraction of 30 EmoDB files, then a re-run: finished shards kept, the cache readable, the
features identical to an uninterrupted extraction.

The killed process runs :func:`polyemo.cache.features` (what ``polyemo extract`` is a thin layer
over) with shards of 3 recordings, so a few seconds of work have several shards to die between;
the final re-run and the reference are the ``polyemo extract`` command itself."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from polyemo.cache import features

FILES = 30


def shards(cache: Path) -> int:
    return sum(1 for _ in cache.rglob("*.safetensors")) if cache.exists() else 0


def command(manifest: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "polyemo", "extract", str(manifest), "--encoder", "egemaps", "--cache-dir", str(cache),
            "--batch-seconds", "3", "--no-progress"]


SMALL_SHARDS = """
import sys
import pandas as pd
from polyemo.cache import features
features(pd.read_csv(sys.argv[1], dtype={"utt_id": str, "speaker": str, "content_hash": str}), "egemaps", cache_dir=sys.argv[2], progress=False, batch_seconds=3,
         shard_items=3, flush_seconds=0.5)
"""


def killable(manifest: Path, cache: Path) -> list[str]:
    return [sys.executable, "-c", SMALL_SHARDS, str(manifest), str(cache)]


@pytest.fixture(scope="module")
def manifest(prepared_manifest, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("extract") / "manifest.csv"
    prepared_manifest("emodb").sort_values("utt_id").iloc[:FILES].to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_kill_9_during_extract_then_rerun_gives_the_uninterrupted_features(manifest, tmp_path):
    import pandas as pd

    rows = pd.read_csv(manifest, dtype={"utt_id": str, "speaker": str, "content_hash": str})
    reference_cache = tmp_path / "reference"
    subprocess.run(command(manifest, reference_cache), check=True, capture_output=True, timeout=600)
    reference = features(rows, "egemaps", cache_dir=reference_cache, progress=False)
    assert reference.computed == 0 and reference.array.shape == (FILES, 1, 88)
    total = FILES // 3  # shards of the killable runs

    cache = tmp_path / "killed"
    rng = random.Random(15)
    targets = [0, *sorted(rng.sample(range(1, total), 2))]  # 0: kill while it starts up
    counts = []
    for target in targets:
        process = subprocess.Popen(killable(manifest, cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started, delay = time.monotonic(), rng.uniform(0.3, 2.0)
        while process.poll() is None and time.monotonic() - started < 300:
            if (target == 0 and time.monotonic() - started > delay) or (target and shards(cache) >= target):
                break
            time.sleep(0.01)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        counts.append(shards(cache))
    assert counts == sorted(counts) and 0 < counts[-1] < total, counts  # finished shards are kept, work was left
    finished = subprocess.run(command(manifest, cache), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr + finished.stdout
    said = finished.stdout + finished.stderr
    assert "computed " in said, said
    reused = FILES - int(said.split("computed ")[1].split(",")[0])
    assert reused >= 3 * (counts[-1] - 1), said  # the killed runs' finished shards were reused, not recomputed
    resumed = features(rows, "egemaps", cache_dir=cache, progress=False)
    assert resumed.computed == 0  # everything is in the cache after the re-run
    np.testing.assert_array_equal(resumed.array, reference.array)
