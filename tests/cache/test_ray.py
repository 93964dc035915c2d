"""Extraction as Ray tasks on a local Ray instance (2 CPUs): the same features as the local run,
the same store, resumable."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyemo.cache import FeatureStore, features

ray = pytest.importorskip("ray")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cache_toy_encoder import ToyEncoder  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    import os

    from polyemo.distributed import connect

    # Ray's worker processes import the toy encoder by module name, as spawned workers do
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *([saved] if saved else [])])
    try:
        connect("local", num_cpus=2)
        yield
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def subset(prepared_manifest) -> pd.DataFrame:
    return prepared_manifest("emodb").sort_values("utt_id").iloc[:16].reset_index(drop=True)


def test_ray_tasks_fill_the_same_store_with_the_same_features(subset, tmp_path, local_ray):
    local = features(subset, ToyEncoder(), cache_dir=tmp_path / "local", progress=False)
    first = features(subset.iloc[:6], ToyEncoder(), cache_dir=tmp_path / "ray", progress=False, batch_seconds=5,
                     ray="local")
    assert first.computed == 6 and first.ok.all()
    resumed = features(subset, ToyEncoder(), cache_dir=tmp_path / "ray", progress=False, batch_seconds=5, ray="local")
    assert (resumed.computed, resumed.reused) == (len(subset) - 6, 6)  # only what was missing
    np.testing.assert_array_equal(resumed.array, local.array)
    assert FeatureStore(resumed.store_dir).verify()["bad"] == []


def test_a_failing_encoder_on_ray_fails_its_files_not_the_run(subset, tmp_path, local_ray):
    from cache_toy_encoder import BrokenToyEncoder

    result = features(subset.iloc[:4], BrokenToyEncoder(), cache_dir=tmp_path, progress=False, ray="local")
    assert not result.ok.any() and result.failures["error"].str.contains("no memory on that node").all()
