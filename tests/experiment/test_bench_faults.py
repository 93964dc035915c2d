"""Faults survived by a benchmark (issue 15): ``kill -9`` of ``polyemo bench`` at several random
points, then a re-run: finished cells are kept, nothing half-written is read, and the final
leaderboard and predictions equal those of an uninterrupted run."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

GRID = {
    "name": "faults",
    "primary": "ua",
    "base": {"labels": "big4", "corpora": ["emodb"], "protocol": "speaker_kfold", "encoder": {"name": "egemaps"},
             "features": "pooled", "head": {"name": "logreg", "params": {"C": [1.0]}}, "limit": 40,
             "metrics": {"primary": "ua", "n_boot": 50}, "seed": 0},
    "parts": [{"name": "grid", "axes": {"normalisation": ["none", "global"], "head.params.C": [[0.1], [1.0]]}}],
}


def bench(grid: Path, out: Path, corpora: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "polyemo", "bench", str(grid), "-o", str(out), "--corpora-root", str(corpora),
            "--set", f"encoder.cache_dir={cache}", "--no-progress"]


def outputs(out: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    board = pd.read_csv(out / "leaderboard.csv")[["cell", "ua_mean", "status"]]
    predictions = {p.parent.name: p.read_text() for p in sorted((out / "cells").glob("*/predictions.csv"))}
    return board, predictions


@pytest.mark.slow
def test_kill_9_during_bench_then_rerun_gives_the_uninterrupted_results(shared_corpora, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    started = time.perf_counter()
    subprocess.run(bench(grid, tmp_path / "reference", shared_corpora, tmp_path / "ref-cache"), check=True,
                   capture_output=True)
    reference_seconds = time.perf_counter() - started
    expected = outputs(tmp_path / "reference")
    assert len(expected[1]) == 4

    out, cache = tmp_path / "killed", tmp_path / "cache"
    rng = random.Random(15)
    for _ in range(3):  # kill at random points between start-up and the end of the reference run
        process = subprocess.Popen(bench(grid, out, shared_corpora, cache), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 0.9) * reference_seconds)
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = subprocess.run(bench(grid, out, shared_corpora, cache), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-3000:]
    board, predictions = outputs(out)
    pd.testing.assert_frame_equal(board, expected[0])
    assert predictions == expected[1]
