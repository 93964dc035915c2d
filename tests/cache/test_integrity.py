"""Per-layer pooled entries, checksummed shards, quarantine and recomputation, verify and gc."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyemo.audio import load_audio
from polyemo.cache import FeatureStore, features
from polyemo.cache.store import QUARANTINE, CorruptShardError, file_checksum, named_checksum

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cache_toy_encoder import StoppingToyEncoder, ToyEncoder

N_FILES = 12


@pytest.fixture(scope="module")
def subset(prepared_manifest) -> pd.DataFrame:
    return prepared_manifest("emodb").sort_values("utt_id").iloc[:N_FILES].reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(subset):
    return ToyEncoder().pooled([load_audio(p) for p in subset["path"]])


def _shards(store_dir: Path) -> list[Path]:
    return sorted((store_dir / "pooled").glob("*.safetensors"))


def test_a_run_needing_shallow_layers_stops_early_and_deeper_ones_are_computed_later(subset, reference, tmp_path):
    encoder = StoppingToyEncoder()
    shallow = features(subset, encoder, layers=[1], cache_dir=tmp_path, progress=False)
    assert set(encoder.deepest) == {1}  # block 2 never ran
    np.testing.assert_array_equal(shallow.array, reference[:, [1]])
    store = FeatureStore(shallow.store_dir)
    assert all(store.has_pooled(h, [0, 1]) and not store.has_pooled(h, [2]) for h in subset["content_hash"])

    again = StoppingToyEncoder()  # layer 0 was computed on the way: reused, nothing runs
    zeroth = features(subset, again, layers=[0], cache_dir=tmp_path, progress=False)
    assert again.calls == 0 and zeroth.reused == N_FILES
    np.testing.assert_array_equal(zeroth.array, reference[:, [0]])

    deeper = StoppingToyEncoder()
    everything = features(subset, deeper, cache_dir=tmp_path, progress=False)
    assert everything.computed == N_FILES and set(deeper.deepest) == {2}
    np.testing.assert_array_equal(everything.array, reference)


def test_shard_names_carry_their_checksum(subset, tmp_path):
    result = features(subset, ToyEncoder(), cache_dir=tmp_path, progress=False)
    for shard in _shards(result.store_dir):
        assert named_checksum(shard.name) == file_checksum(shard)


def test_a_flipped_byte_is_caught_quarantined_and_recomputed(subset, reference, tmp_path):
    first = features(subset, ToyEncoder(), cache_dir=tmp_path, batch_seconds=10, flush_seconds=0, progress=False)
    shards = _shards(first.store_dir)
    assert len(shards) > 1
    victim = shards[0]
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF  # inside the last feature value: the header still parses
    victim.write_bytes(bytes(data))

    store = FeatureStore(first.store_dir)  # a reader that trusts nothing it has not checked
    with pytest.raises(CorruptShardError, match="checksum mismatch"), pytest.warns(UserWarning, match="quarantined"):
        store.read_pooled(subset["content_hash"].tolist())
    assert not victim.exists() and (first.store_dir / QUARANTINE / f"pooled__{victim.name}").exists()

    # the next run recomputes exactly the rows that shard held, and the numbers are right
    encoder = ToyEncoder()
    second = features(subset, encoder, cache_dir=tmp_path, progress=False)
    assert second.ok.all() and 0 < second.computed < N_FILES
    np.testing.assert_array_equal(second.array, reference)


def test_extraction_checks_shards_before_reusing_them(subset, reference, tmp_path):
    first = features(subset, ToyEncoder(), cache_dir=tmp_path, progress=False)
    (victim,) = _shards(first.store_dir)
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF
    victim.write_bytes(bytes(data))
    encoder = ToyEncoder()
    with pytest.warns(UserWarning, match="checksum mismatch"):
        second = features(subset, encoder, cache_dir=tmp_path, progress=False)
    assert (second.computed, second.reused) == (N_FILES, 0)  # never the wrong features
    np.testing.assert_array_equal(second.array, reference)


def test_truncated_and_missing_shards_are_recomputed_not_a_crash(subset, reference, tmp_path):
    first = features(subset, ToyEncoder(), cache_dir=tmp_path, batch_seconds=10, flush_seconds=0, progress=False)
    shards = _shards(first.store_dir)
    shards[0].write_bytes(shards[0].read_bytes()[:200])  # truncated, still in the index
    shards[1].unlink()  # gone, still in the index
    with pytest.warns(UserWarning):
        second = features(subset, ToyEncoder(), cache_dir=tmp_path, progress=False)
    assert second.ok.all() and second.computed > 0
    np.testing.assert_array_equal(second.array, reference)


def test_verify_reports_bad_files_and_gc_frees_them(subset, tmp_path):
    first = features(subset, ToyEncoder(), cache_dir=tmp_path, batch_seconds=10, flush_seconds=0, progress=False)
    store = FeatureStore(first.store_dir)
    clean = store.verify()
    assert clean["bad"] == [] and clean["pooled"] == N_FILES
    victim = _shards(first.store_dir)[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="quarantined"):
        report = store.verify()
    assert [b["file"] for b in report["bad"]] == [str(victim)] and "checksum" in report["bad"][0]["problem"]
    assert report["pooled"] < N_FILES
    # a duplicate written by a second writer is shadowed by the earlier shard: gc removes it
    features(subset, ToyEncoder(), cache_dir=tmp_path, progress=False)  # recomputes the quarantined rows
    freed = store.gc()
    assert freed["bytes_freed"] > 0 and not (first.store_dir / QUARANTINE).exists()
    assert store.verify()["bad"] == [] and len(store.pooled_hashes()) == N_FILES


def test_an_index_of_the_old_format_is_rebuilt(subset, reference, tmp_path):
    first = features(subset, ToyEncoder(), cache_dir=tmp_path, progress=False)
    index = pd.read_parquet(first.store_dir / "index.parquet")
    index.drop(columns=["slot", "checksum"]).to_parquet(first.store_dir / "index.parquet")
    store = FeatureStore(first.store_dir)
    np.testing.assert_array_equal(store.read_pooled(subset["content_hash"].tolist()), reference)


class _Versioned(ToyEncoder):
    """The toy encoder with a versioned identity (as every neural encoder now has), optionally
    computing slightly different numbers (as after an upgrade that changes them)."""

    def __init__(self, shift: float = 0.0) -> None:
        super().__init__()
        self.shift = shift

    @property
    def identity(self):
        from dataclasses import replace

        return replace(super().identity, versions={"feature_code": "1", "torch": "x"})

    def frames(self, waves):
        out = super().frames(waves)
        for f in out:
            f.layers += np.float32(self.shift)
        return out


def test_the_cache_key_carries_versions(subset, tmp_path):
    plain, versioned = ToyEncoder().identity, _Versioned().identity
    assert versioned.key() != plain.key() and versioned.unversioned_key() == plain.key()
    assert versioned.as_dict()["versions"] == {"feature_code": "1", "torch": "x"}


def test_a_store_of_an_older_version_is_adopted_only_if_recomputed_features_agree(subset, reference, tmp_path):
    features(subset, ToyEncoder(), cache_dir=tmp_path / "a", progress=False)  # written before versions
    encoder = _Versioned()
    adopted = features(subset, encoder, cache_dir=tmp_path / "a", progress=False)
    assert adopted.computed == 0 and adopted.reused == N_FILES
    np.testing.assert_array_equal(adopted.array, reference)
    record = FeatureStore(adopted.store_dir).info["adopted_from"]
    assert record["checked_recordings"] == 8 and record["max_relative_difference"] == 0.0

    features(subset, ToyEncoder(), cache_dir=tmp_path / "b", progress=False)
    with pytest.warns(UserWarning, match="differ from this version"):
        changed = features(subset, _Versioned(shift=0.01), cache_dir=tmp_path / "b", progress=False)
    assert changed.computed == N_FILES  # numbers moved: nothing of the old store is reused
    assert "adopted_from" not in FeatureStore(changed.store_dir).info


def test_a_full_disk_leaves_the_store_consistent_and_a_rerun_finishes(subset, reference, tmp_path, monkeypatch):
    import errno

    import safetensors.numpy

    real_save = safetensors.numpy.save_file
    calls = {"n": 0}

    def fills_up(tensors, path, metadata=None):
        calls["n"] += 1
        if calls["n"] > 2:  # two shards fit, then the disk is full
            with open(path, "wb") as handle:
                handle.write(b"\0" * 100)  # a partial write, as a real ENOSPC leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(safetensors.numpy, "save_file", fills_up)
    with pytest.raises(OSError, match="No space left"):
        features(subset, ToyEncoder(), cache_dir=tmp_path, batch_seconds=5, flush_seconds=0, progress=False)
    monkeypatch.setattr(safetensors.numpy, "save_file", real_save)
    store_dir = next(tmp_path.iterdir())
    assert not list(store_dir.rglob("*.tmp"))  # no partial file left behind
    store = FeatureStore(store_dir)
    assert store.verify()["bad"] == [] and 0 < len(store.pooled_hashes()) < N_FILES
    again = features(subset, ToyEncoder(), cache_dir=tmp_path, progress=False)
    assert again.reused == len(store.pooled_hashes()) and again.ok.all()
    np.testing.assert_array_equal(again.array, reference)
