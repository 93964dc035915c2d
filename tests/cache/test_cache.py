"""The feature cache on 20 real EmoDB files: reuse, failures, kill-and-resume, concurrent writers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from polyemo.audio import load_audio
from polyemo.cache import FeatureStore, features
from polyemo.cache.extract import WorkItem, make_batches
from polyemo.cache.store import store_dir_name

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # so spawned workers and subprocesses import the toy encoder too
from cache_toy_encoder import ToyEncoder

N_FILES = 20


@pytest.fixture(scope="module")
def subset(prepared_manifest) -> pd.DataFrame:
    manifest = prepared_manifest("emodb")
    return manifest.sort_values("utt_id").iloc[:N_FILES].reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(subset, tmp_path_factory):
    """Features computed straight from the encoder, bypassing the cache."""
    encoder = ToyEncoder()
    waves = [load_audio(p) for p in subset["path"]]
    frames = [f.layers for f in encoder.frames(waves)]
    return {"pooled": encoder.pooled(waves), "frames": frames}


def store_of(cache_dir: Path) -> Path:
    return cache_dir / store_dir_name(ToyEncoder().identity)


def shard_count(cache_dir: Path) -> int:
    folder = store_of(cache_dir) / "pooled"
    if not folder.exists():
        return 0
    return sum(1 for name in os.listdir(folder) if name.endswith(".safetensors") and not name.startswith("."))


def script(tmp_path: Path, name: str, manifest: pd.DataFrame, cache_dir: Path, delay: float, **kwargs) -> Path:
    """A Python script that fills ``cache_dir`` for ``manifest``, flushing after each batch."""
    manifest_path = tmp_path / f"{name}.parquet"
    manifest.to_parquet(manifest_path)
    path = tmp_path / f"{name}.py"
    path.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(HERE)!r})
            import pandas as pd
            from cache_toy_encoder import ToyEncoder
            from polyemo.cache import features
            if __name__ == "__main__":
                manifest = pd.read_parquet({str(manifest_path)!r})
                result = features(manifest, ToyEncoder(delay={delay}), cache_dir={str(cache_dir)!r},
                                  flush_seconds=0, progress=False, **{kwargs!r})
                assert result.ok.all(), result.failures
            """
        )
    )
    return path


def child_env() -> dict[str, str]:
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}


def test_batches_pack_by_duration():
    items = [WorkItem(str(i), "", seconds, True, False) for i, seconds in enumerate([1, 5, 2, 9, 3, 3])]
    batches = make_batches(items, batch_seconds=6)
    assert [[item.seconds for item in batch] for batch in batches] == [[9], [5], [3, 3], [2, 1]]


def test_cached_features_equal_fresh_and_are_not_recomputed(subset, reference, tmp_path):
    encoder = ToyEncoder()
    first = features(subset, encoder, cache_dir=tmp_path, batch_seconds=10, progress=False)
    assert first.ok.all() and first.failures.empty
    assert (first.computed, first.reused) == (N_FILES, 0)
    assert encoder.items == N_FILES and encoder.calls > 1  # batched by duration, not all at once
    np.testing.assert_array_equal(first.array, reference["pooled"])
    assert first.audio_seconds == pytest.approx(subset["duration"].sum(), rel=1e-3)

    again = ToyEncoder()
    second = features(subset, again, cache_dir=tmp_path, layers=[0, -1], progress=False)
    assert again.calls == 0 and (second.computed, second.reused) == (0, N_FILES)
    assert second.layers == [0, 2]
    np.testing.assert_array_equal(second.array, reference["pooled"][:, [0, 2]])
    counts = FeatureStore(first.store_dir).verify()
    assert counts["pooled"] == N_FILES

    with pytest.raises(ValueError, match="layer 3 out of range"):
        features(subset, again, cache_dir=tmp_path, layers=[3], progress=False)


def test_same_audio_twice_is_computed_once(subset, reference, tmp_path):
    doubled = pd.concat([subset, subset.iloc[:3].assign(utt_id=lambda f: f["utt_id"] + "-copy")], ignore_index=True)
    encoder = ToyEncoder()
    result = features(doubled, encoder, cache_dir=tmp_path, progress=False)
    assert encoder.items == N_FILES and result.computed == N_FILES and result.ok.all()
    np.testing.assert_array_equal(result.array[N_FILES:], reference["pooled"][:3])


def test_frames_are_stored_per_layer_and_pooled_alongside(subset, reference, tmp_path):
    encoder = ToyEncoder()
    result = features(subset, encoder, kind="frames", layers=[0, 2], cache_dir=tmp_path, progress=False)
    assert result.ok.all() and result.frame_rate == 100.0
    for got, expected in zip(result.array, reference["frames"]):
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, expected[[0, 2]].astype(np.float16))
    # The pooled features came from the same pass; layer 1 frames were never asked for.
    pooled = features(subset, encoder, cache_dir=tmp_path, progress=False)
    assert pooled.computed == 0
    np.testing.assert_array_equal(pooled.array, reference["pooled"])
    calls = encoder.items
    more = features(subset.iloc[:2], encoder, kind="frames", layers=[1], cache_dir=tmp_path, progress=False)
    assert encoder.items == calls + 2 and more.computed == 2
    np.testing.assert_array_equal(more.array[0], reference["frames"][0][[1]].astype(np.float16))


def test_bad_files_are_reported_and_skipped(subset, reference, tmp_path):
    rng = np.random.default_rng(0)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    silent = tmp_path / "silent.flac"
    sf.write(silent, np.zeros(16_000, dtype=np.float32), 16_000)
    short = tmp_path / "short.flac"
    sf.write(short, 0.1 * rng.standard_normal(800).astype(np.float32), 16_000)
    bad = pd.DataFrame({
        "utt_id": ["bad/corrupt", "bad/empty", "bad/silent", "bad/short", "bad/changed"],
        "path": [str(corrupt), str(empty), str(silent), str(short), subset.at[1, "path"]],
        "content_hash": [pd.NA, pd.NA, pd.NA, pd.NA, subset.at[0, "content_hash"]],
        "duration": np.nan,
    })
    manifest = pd.concat([subset.iloc[2:8], bad], ignore_index=True)
    failures_csv = tmp_path / "out" / "failures.csv"
    result = features(manifest, ToyEncoder(), cache_dir=tmp_path / "cache", failures_path=failures_csv, progress=False)

    assert result.ok.tolist() == [True] * 6 + [False] * 5
    np.testing.assert_array_equal(result.array[:6], reference["pooled"][2:8])
    assert np.isnan(result.array[6:]).all()
    errors = dict(zip(result.failures["utt_id"], result.failures["error"]))
    assert set(errors) == set(bad["utt_id"])
    assert "decode" in errors["bad/corrupt"]
    assert "empty" in errors["bad/empty"]
    assert "silent" in errors["bad/silent"]
    assert "too short" in errors["bad/short"]
    assert "changed since the manifest" in errors["bad/changed"]
    assert result.failed == 5 and result.computed == 6
    saved = pd.read_csv(failures_csv)
    assert saved["utt_id"].tolist() == result.failures["utt_id"].tolist()


class FailsOnLongAudio(ToyEncoder):
    """Raises for any batch holding a wave over 2.5 s, as a model might on one odd input."""

    def frames(self, waves):
        if any(wave.size > 2.5 * 16_000 for wave in waves):
            raise RuntimeError("input too long for this model")
        return super().frames(waves)


def test_an_encoder_error_fails_only_its_file(subset, reference, tmp_path):
    long = subset["duration"] > 2.5
    assert 0 < long.sum() < N_FILES
    result = features(subset, FailsOnLongAudio(), cache_dir=tmp_path, batch_seconds=30, progress=False)
    assert result.ok.tolist() == (~long).tolist()
    assert result.failures["error"].str.contains("input too long").all()
    np.testing.assert_array_equal(result.array[~long.to_numpy()], reference["pooled"][~long.to_numpy()])


def test_killed_run_resumes_with_only_the_missing_items(subset, reference, tmp_path):
    cache = tmp_path / "cache"
    process = subprocess.Popen(
        [sys.executable, str(script(tmp_path, "slow", subset, cache, delay=0.25, batch_seconds=4))], env=child_env()
    )
    deadline = time.monotonic() + 60
    while shard_count(cache) < 2:
        assert process.poll() is None, "the extraction finished or crashed before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    stored = len(FeatureStore(store_of(cache)).pooled_hashes())
    assert 0 < stored < N_FILES
    encoder = ToyEncoder()
    resumed = features(subset, encoder, cache_dir=cache, batch_seconds=4, progress=False)
    assert encoder.items == N_FILES - stored
    assert (resumed.computed, resumed.reused) == (N_FILES - stored, stored)
    assert resumed.ok.all()
    np.testing.assert_array_equal(resumed.array, reference["pooled"])
    store = FeatureStore(store_of(cache))
    assert store.verify()["pooled"] == N_FILES
    index = pd.read_parquet(store.index_path)
    assert len(index) == N_FILES * 3  # one entry per audio and layer
    assert not index.duplicated(["content_hash", "layer"]).any()


def test_two_processes_fill_one_cache(subset, reference, tmp_path):
    cache = tmp_path / "cache"
    halves = [subset.iloc[:13], subset.iloc[7:]]  # overlapping: both may compute rows 7-12
    processes = [
        subprocess.Popen(
            [sys.executable, str(script(tmp_path, f"half{i}", half, cache, delay=0.05, batch_seconds=3))], env=child_env()
        )
        for i, half in enumerate(halves)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]

    store = FeatureStore(store_of(cache))
    assert store.verify()["pooled"] == N_FILES
    encoder = ToyEncoder()
    result = features(subset, encoder, cache_dir=cache, progress=False)
    assert encoder.calls == 0 and result.ok.all()
    np.testing.assert_array_equal(result.array, reference["pooled"])
    leftovers = [name for name in os.listdir(store.directory / "pooled") if name.startswith(".")]
    assert leftovers == []


def test_worker_processes_share_one_cache(subset, reference, tmp_path):
    result = features(
        subset, ToyEncoder(delay=0.6), kind="frames", frame_dtype="float32", cache_dir=tmp_path, workers=2,
        batch_seconds=4, flush_seconds=0, progress=False,
    )
    assert result.ok.all() and result.computed == N_FILES and result.frame_rate == 100.0
    for got, expected in zip(result.array, reference["frames"]):
        np.testing.assert_array_equal(got, expected)
    store = FeatureStore(result.store_dir)
    counts = store.verify()
    assert counts["pooled"] == N_FILES and counts["frame_tensors"] == N_FILES * ToyEncoder.num_layers
    pids = {name.split("-")[1] for name in os.listdir(store.directory / "pooled") if name.endswith(".safetensors")}
    assert len(pids) == 2  # both workers took batches (each call sleeps, so neither can take all)
    np.testing.assert_array_equal(features(subset, ToyEncoder(), cache_dir=tmp_path, progress=False).array, reference["pooled"])


def test_store_survives_a_lost_index_and_ignores_damaged_files(subset, reference, tmp_path):
    result = features(subset, ToyEncoder(), cache_dir=tmp_path, batch_seconds=10, flush_seconds=0, progress=False)
    store_dir = result.store_dir
    (store_dir / "index.parquet").unlink()
    (store_dir / "pooled" / ".half-written.safetensors.tmp").write_bytes(b"\x00" * 100)
    (store_dir / "pooled" / "zz-damaged.safetensors").write_bytes(b"not a shard")
    with pytest.warns(UserWarning, match="unreadable feature shard"):
        store = FeatureStore(store_dir)
    with pytest.warns(UserWarning, match="unreadable feature shard"):
        store.merge_index()
    assert (store_dir / "index.parquet").exists()
    assert len(store.pooled_hashes()) == N_FILES
    np.testing.assert_array_equal(store.read_pooled(subset["content_hash"].tolist()), reference["pooled"])
