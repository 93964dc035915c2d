"""Saving and loading splits: round trip, content hash, tamper detection."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from polyemo.splits import Fold, Split, SplitIntegrityError


@pytest.fixture
def saved(tmp_path, emobox_splits):
    split = emobox_splits["emodb"]
    split.save(tmp_path / "emodb")
    return split, tmp_path / "emodb"


def test_round_trip(saved, manifests):
    split, directory = saved
    assert sorted(p.name for p in directory.iterdir()) == ["fold_1.csv", "fold_2.csv", "split.json"]
    loaded = Split.load(directory)
    assert loaded == split and loaded.sha256 == split.sha256
    assert Split.load(directory / "split.json") == split
    stored = json.loads((directory / "split.json").read_text())
    assert stored["sha256"] == split.sha256 and stored["seed"] == 0 and stored["protocol"] == "emobox_coverage"
    table = pd.read_csv(directory / "fold_1.csv")
    assert list(table.columns) == ["utt_id", "part"]
    assert sorted(table.loc[table["part"] == "test", "utt_id"]) == split.folds[0].test
    frames = loaded.frames(manifests["emodb"], "fold_2")
    assert list(frames["test"]["utt_id"]) == split.folds[1].test


def test_edited_json_is_refused(saved):
    _, directory = saved
    path = directory / "split.json"
    data = json.loads(path.read_text())
    moved = data["folds"][0]["test"].pop()
    data["folds"][0]["train"].append(moved)
    path.write_text(json.dumps(data))
    with pytest.raises(SplitIntegrityError, match="content hash mismatch"):
        Split.load(directory)


def test_edited_seed_is_refused(saved):
    _, directory = saved
    path = directory / "split.json"
    path.write_text(path.read_text().replace('"seed": 0', '"seed": 1'))
    with pytest.raises(SplitIntegrityError, match="modified after it was saved"):
        Split.load(directory)


def test_edited_csv_is_refused(saved):
    split, directory = saved
    path = directory / "fold_2.csv"
    table = pd.read_csv(path)
    table.loc[table["utt_id"] == split.folds[1].test[0], "part"] = "train"
    table.to_csv(path, index=False)
    with pytest.raises(SplitIntegrityError, match="fold_2.csv: train part disagrees"):
        Split.load(directory)


@pytest.mark.parametrize("damage", ["missing_csv", "no_hash", "not_json", "missing_dir"])
def test_broken_saves_get_clear_errors(saved, damage, tmp_path):
    _, directory = saved
    path = directory / "split.json"
    if damage == "missing_csv":
        (directory / "fold_1.csv").unlink()
        match = "fold_1.csv: missing"
    elif damage == "no_hash":
        data = json.loads(path.read_text())
        del data["sha256"]
        path.write_text(json.dumps(data))
        match = "no 'sha256'"
    elif damage == "not_json":
        path.write_text("{ not json")
        match = "not readable JSON"
    else:
        directory = tmp_path / "nothing"
        match = "no such file"
    with pytest.raises(SplitIntegrityError, match=match):
        Split.load(directory)


def test_fold_lists_are_sorted_and_hash_is_order_free():
    a = Fold(name="f", train=["b", "a"], validation=["c"], test=["e", "d"])
    b = Fold(name="f", train=["a", "b"], validation=["c"], test=["d", "e"])
    assert a.train == ["a", "b"] and a == b
    make = lambda fold: Split(protocol="p", seed=0, label_column="label", speaker_independent=True, manifest_sha256="x", folds=[fold])
    assert make(a).sha256 == make(b).sha256
    assert a.assignment() == {"a": "train", "b": "train", "c": "validation", "d": "test", "e": "test"}
