import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from polyemo import manifest as mf


def tiny(rows=3) -> pd.DataFrame:
    frame = pd.DataFrame({
        "utt_id": [f"c/u{i}" for i in range(rows)],
        "path": [f"/data/u{i}.wav" for i in range(rows)],
        "corpus": "c",
        "language": ["ar", None, "de"][:rows],
        "speaker": ["c/1", "c/1", "c/2"][:rows],
        "gender": ["m", None, "f"][:rows],
        "label_raw": ["low", "rabbia", "W"][:rows],
        "label": [None, "anger", "anger"][:rows],
        "duration": [1.5, 2.25, np.nan][:rows],
        "text": ["لم يعجبني", "„Ród smoka”, \"quoted\"", None][:rows],
        "content_hash": ["a" * 32, "b" * 32, None][:rows],
        "arousal_level": ["low", None, None][:rows],
        "valence": [None, 0.25, None][:rows],
    })
    return frame


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_save_load_roundtrip(tmp_path, suffix):
    frame = mf.validate(tiny())
    written = mf.save(frame, tmp_path / "m" / "manifest.parquet")
    assert [p.name for p in written] == ["manifest.parquet", "manifest.csv"]
    loaded = mf.load(tmp_path / "m" / f"manifest{suffix}")
    assert list(loaded.columns) == mf.COLUMNS
    pd.testing.assert_frame_equal(loaded, frame, check_dtype=True)
    assert loaded["label"].isna().tolist() == [True, False, False]
    assert loaded["text"].iloc[0] == "لم يعجبني"


def test_schema_columns_and_dtypes():
    frame = mf.normalise_frame(tiny().assign(intensity="strong"))
    assert list(frame.columns) == mf.COLUMNS + ["intensity"]  # extra columns kept, at the end
    assert frame["duration"].dtype == "float64" and frame["arousal"].isna().all()
    assert str(frame["speaker"].dtype).startswith("string")
    assert mf.empty().columns.tolist() == mf.COLUMNS


def test_validation_errors():
    with pytest.raises(mf.ManifestError, match="duplicate utt_id"):
        mf.validate(pd.concat([tiny(), tiny()]))
    with pytest.raises(mf.ManifestError, match=r"row 1 has an empty 'speaker'"):
        mf.validate(tiny().assign(speaker=["c/1", "", "c/2"]))
    with pytest.raises(mf.ManifestError, match="lacks required columns.*'label'"):
        mf.validate(tiny().drop(columns=["label"]))


def test_concat_keeps_extra_columns():
    both = mf.concat([tiny(2).assign(intensity="low"), tiny(3).assign(utt_id=lambda f: "d/" + f["utt_id"])])
    assert len(both) == 5 and both["intensity"].isna().sum() == 3


def test_hash_cache_reuses_and_notices_changes(tmp_path, isolated_hash_cache):
    path = tmp_path / "a.wav"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 16000)
    cache = mf.HashCache(tmp_path / "hashes.sqlite")
    results, failures = mf.hash_files([str(path), str(tmp_path / "missing.wav")], cache=cache)
    assert failures == {str(tmp_path / "missing.wav"): "file not found"}
    digest, duration = results[str(path)]
    assert duration == 0.5
    # A cached entry is used as is (proved by planting a fake one for the same file state).
    key = mf._file_key(str(path))
    cache.store([(*key, "f" * 32, 9.0)])
    assert mf.hash_files([str(path)], cache=cache)[0][str(path)] == ("f" * 32, 9.0)
    # Rewriting the file changes its identity, so it is hashed again.
    sf.write(path, np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32), 16000)
    new_digest, new_duration = mf.hash_files([str(path)], cache=cache)[0][str(path)]
    assert new_duration == 1.0 and new_digest not in (digest, "f" * 32)


@pytest.fixture
def isolated_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYEMO_CACHE", str(tmp_path / "cache"))


def test_add_content_hashes_lists_undecodable_files(tmp_path, isolated_hash_cache):
    good, bad = tmp_path / "good.flac", tmp_path / "bad.wav"
    sf.write(good, np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 16000)
    bad.write_bytes(b"garbage" * 10)
    frame = tiny(2).assign(path=[str(good), str(bad)], content_hash=None, duration=None)
    manifest, failures = mf.add_content_hashes(frame, show_progress=False)
    assert manifest["path"].tolist() == [str(good)] and manifest["content_hash"].str.len().tolist() == [32]
    assert failures["path"].tolist() == [str(bad)] and "cannot decode" in failures["error"].iloc[0]


def duplicate_groups(manifest: pd.DataFrame) -> list[list[str]]:
    groups = manifest.groupby("content_hash")["utt_id"].agg(sorted)
    return sorted(g for g in groups if len(g) > 1)


def test_duplicates_by_content_hash_in_real_corpora(prepared_manifest):
    baved = duplicate_groups(prepared_manifest("baved"))
    assert len(baved) == 27 and all(len(g) == 2 for g in baved)
    assert ["baved/46-m-20-0-0-156", "baved/53-m-20-0-0-209"] in baved
    assert ["baved/49-m-23-0-2-199", "baved/49-m-23-0-2-200"] in baved  # same-speaker repeat
    assert duplicate_groups(prepared_manifest("ravdess")) == [["ravdess/03-01-03-01-02-01-07", "ravdess/03-01-03-01-02-02-07"]]
    for corpus in ("emodb", "savee", "emovo", "urdu"):
        assert duplicate_groups(prepared_manifest(corpus)) == [], corpus
