"""Bench cells as Ray tasks on a local Ray instance (2 CPUs): the same metrics as the local run."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from polyemo.experiment import run_bench

ray = pytest.importorskip("ray")

GRID = {
    "name": "ray-check",
    "primary": "ua",
    "base": {"labels": "big4", "corpora": ["emodb"], "protocol": "speaker_kfold", "encoder": {"name": "egemaps"},
             "features": "pooled", "head": {"name": "logreg", "params": {"C": [1.0]}}, "limit": 40,
             "metrics": {"primary": "ua", "n_boot": 20}, "seed": 0},
    "parts": [{"name": "norm", "axes": {"normalisation": ["none", "global"]}}],
}


@pytest.fixture(scope="module")
def local_ray():
    from polyemo.distributed import connect

    connect("local", num_cpus=2)
    yield
    ray.shutdown()


def test_cells_on_ray_score_as_the_local_run(shared_corpora, tmp_path, local_ray):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    overrides = {"corpora_root": str(shared_corpora), "encoder.cache_dir": str(tmp_path / "cache")}
    local = run_bench(grid, tmp_path / "local", overrides=overrides, progress=False)
    remote = run_bench(grid, tmp_path / "ray", overrides=overrides, progress=False, ray="local")
    assert not remote.errors and set(remote.results) == set(local.results) and len(local.results) == 2
    columns = ["cell", "ua_mean", "status"]
    pd.testing.assert_frame_equal(remote.leaderboard[columns].reset_index(drop=True),
                                  local.leaderboard[columns].reset_index(drop=True))
    for cell in local.results:
        assert (tmp_path / "ray" / "cells" / cell / "predictions.csv").read_text() == \
            (tmp_path / "local" / "cells" / cell / "predictions.csv").read_text()
