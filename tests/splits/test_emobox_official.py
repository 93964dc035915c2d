"""EmoBox's published partitions (../shared/emobox) loaded onto the six shared categorical corpora."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from polyemo import manifest as mf
from polyemo.splits import SplitError, check_leakage, documented_properties, make_split
from polyemo.splits.emobox_official import EmoBoxKeyWarning, find_root, normalise_key

REPO = Path(__file__).resolve().parents[2]
EMOBOX = Path(os.environ.get("POLYEMO_EMOBOX", REPO.parent / "shared" / "emobox"))
CORPORA = ("emodb", "ravdess", "savee", "emovo", "urdu", "ased")
# From ../shared/emobox/README.md: folds, test size per fold, speakers shared by train and test.
FOLDS = {"emodb": 5, "ravdess": 6, "savee": 4, "emovo": 6, "urdu": 1, "ased": 1}
TEST_SIZE = {"emodb": 107, "ravdess": 240, "savee": 120, "emovo": 98, "urdu": 100, "ased": 616}
SHARED_SPEAKERS = {"emodb": 10, "ravdess": 0, "savee": 0, "emovo": 0, "urdu": 18, "ased": 63}
ROWS = {"emodb": 535, "ravdess": 1440, "savee": 480, "emovo": 588, "urdu": 400, "ased": 2474}


@pytest.fixture(scope="module")
def six(prepared_manifest) -> dict:
    if not (EMOBOX / "emodb" / "fold_1").is_dir():
        pytest.fail(f"EmoBox's partitions are missing: {EMOBOX} (set POLYEMO_EMOBOX)")
    return {c: prepared_manifest(c) for c in CORPORA}


@pytest.fixture(scope="module")
def splits(six) -> dict:
    # strict: every published key must be in the manifest, every row in every fold
    return {c: make_split(six[c], "emobox_official", strict=True, seed=0) for c in CORPORA}


@pytest.mark.parametrize("corpus", CORPORA)
def test_every_key_matches_and_every_row_is_in_each_fold(corpus, six, splits):
    manifest, split = six[corpus], splits[corpus]
    assert len(manifest) == ROWS[corpus]
    assert split.protocol == "emobox_official" and split.params["fold_keys_not_in_manifest"] == {}
    assert [f.name for f in split.folds] == [f"{corpus}.fold_{k}" for k in range(1, FOLDS[corpus] + 1)]
    tested = Counter()
    for fold in split.folds:
        # train + validation + test = every row, once; the test part is EmoBox's test file
        assert sorted(fold.assignment()) == sorted(manifest["utt_id"])
        assert len(fold.test) == TEST_SIZE[corpus] == fold.info["published_test"]
        assert len(fold.train) + len(fold.validation) == fold.info["published_train"] == ROWS[corpus] - TEST_SIZE[corpus]
        tested.update(fold.test)
    if FOLDS[corpus] > 1 and corpus != "emodb":
        # speaker folds of RAVDESS, SAVEE, EMOVO: every row is tested exactly once
        assert set(tested.values()) == {1} and len(tested) == ROWS[corpus]
    if corpus == "emodb":
        assert len(tested) == 5 * 107 and set(tested.values()) == {1}  # 535 = 5 x 107


@pytest.mark.parametrize("corpus", CORPORA)
def test_speaker_independence_is_measured_and_reported(corpus, six, splits):
    manifest, split = six[corpus], splits[corpus]
    independent = SHARED_SPEAKERS[corpus] == 0
    assert split.speaker_independent is independent
    assert split.params["speaker_independent"] == {corpus: independent}
    speaker_of = dict(zip(manifest["utt_id"], manifest["speaker"]))
    for fold in split.folds:
        assert fold.info["speaker_independent"] is independent and fold.info["published_partition"] == "emobox"
        training = {speaker_of[u] for u in fold.train + fold.validation}
        shared = training & {speaker_of[u] for u in fold.test}
        assert fold.info["shared_speakers"] == len(shared) == SHARED_SPEAKERS[corpus]
        assert split.params["shared_speakers"][fold.name] == len(shared)
        assert fold.info["shared_recordings"] == 0  # measured: EmoBox's folds keep identical files on one side
    # Not an error: a documented property of the published partition.
    assert check_leakage(manifest, split) == []
    notes = documented_properties(manifest, split)
    assert bool(notes) is not independent
    assert {n.kind for n in notes} <= {"speaker_overlap"} and all(n.documented for n in notes)
    if notes:
        assert "documented property of the published partition" in str(notes[0])


@pytest.mark.parametrize("corpus", CORPORA)
def test_validation_is_carved_from_training_speakers(corpus, six, splits):
    manifest, split = six[corpus], splits[corpus]
    speaker_of = dict(zip(manifest["utt_id"], manifest["speaker"]))
    for fold in split.folds:
        assert fold.validation and not set(fold.validation) & set(fold.test)
        validation = {speaker_of[u] for u in fold.validation}
        assert not validation & {speaker_of[u] for u in fold.train}  # speaker groups of the training part
        if split.speaker_independent:
            assert not validation & {speaker_of[u] for u in fold.test}


def test_labels_agree_with_emobox_and_utterance_validation(six):
    # EmoBox's own label of each key (through label_map.json) is checked on the way: no error.
    split = make_split(six["emodb"], "emobox", validation_by="utterance", strict=True)
    assert split.protocol == "emobox_official"
    for fold in split.folds:
        assert fold.validation and 0.1 < len(fold.validation) / (len(fold.train) + len(fold.validation)) < 0.3
    wrong = six["emodb"].copy()
    wrong.loc[wrong["utt_id"] == "emodb/03a01Fa", "label"] = "sadness"
    with pytest.raises(SplitError, match=r"1 emodb rows are labelled otherwise by EmoBox: emodb-03a01Fa \(EmoBox happiness"):
        make_split(wrong, "emobox_official")


def test_pooled_manifest_is_split_corpus_by_corpus(six, splits):
    pooled = mf.concat([six[c] for c in CORPORA])
    split = make_split(pooled, "emobox_official", strict=True)
    assert len(split.folds) == sum(FOLDS.values()) == 23
    assert not split.speaker_independent  # EmoDB, URDU, ASED are not
    assert split.params["speaker_independent"] == {c: SHARED_SPEAKERS[c] == 0 for c in CORPORA}
    for corpus in CORPORA:
        mine = [f for f in split.folds if f.info["corpus"] == corpus]
        assert [f.test for f in mine] == [f.test for f in splits[corpus].folds]
    assert check_leakage(pooled, split) == []


def test_unknown_row_and_unmatched_keys_are_named(six):
    emodb = six["emodb"]
    stray = emodb.iloc[:1].assign(utt_id="emodb/99z99Zz", path="/nowhere/99z99Zz.wav", content_hash="0" * 32)
    with pytest.raises(SplitError, match=r"1 emodb rows of the manifest are missing from EmoBox's folds.*emodb/99z99Zz"):
        make_split(mf.concat([emodb, stray]), "emobox_official")
    subset = emodb[~emodb["utt_id"].isin(["emodb/03a01Fa", "emodb/03a01Nc"])]
    with pytest.raises(SplitError, match=r"fold keys not in the manifest: emodb 2 \(strict=True"):
        make_split(subset, "emobox_official", strict=True)
    with pytest.warns(EmoBoxKeyWarning, match=r"emodb 2 \(a subset manifest"):
        split = make_split(subset, "emobox_official")
    assert split.params["fold_keys_not_in_manifest"] == {"emodb": 2}
    with pytest.raises(SplitError, match=r"no partition for \['baved'\]"):
        make_split(six["emodb"].assign(corpus="baved", utt_id=six["emodb"]["utt_id"].str.replace("emodb/", "baved/")),
                   "emobox_official")


def test_a_small_subset_skips_folds_without_test_rows(six):
    """A limited manifest is a subset of the folds: folds left without test rows are skipped."""
    emodb = six["emodb"]
    test_1 = [json.loads(line)["key"].removeprefix("emodb-") for line in
              (EMOBOX / "emodb" / "fold_1" / "emodb_test_fold_1.jsonl").read_text().splitlines()]
    others = emodb[~emodb["utt_id"].str.removeprefix("emodb/").isin(test_1)]
    with pytest.warns(EmoBoxKeyWarning, match="folds without rows skipped: \\['emodb.fold_1'\\]"):
        split = make_split(others, "emobox_official")
    assert [f.name for f in split.folds] == ["emodb.fold_2", "emodb.fold_3", "emodb.fold_4", "emodb.fold_5"]
    assert split.params["skipped_folds"] == ["emodb.fold_1"]


def test_root_from_env_beside_corpora_and_clear_error(six, tmp_path, monkeypatch):
    monkeypatch.delenv("POLYEMO_EMOBOX", raising=False)
    for variable in ("POLYEMO_CORPORA", "POLYEMO_SHARED_CORPORA"):
        monkeypatch.delenv(variable, raising=False)
    # beside the corpora root the manifest's audio lies in
    assert find_root(None, six["savee"]).resolve() == EMOBOX.resolve()
    # a copied folder via root= and via $POLYEMO_EMOBOX
    copy = tmp_path / "partitions"
    shutil.copytree(EMOBOX / "savee", copy / "savee")
    assert make_split(six["savee"], "emobox_official", root=str(copy), strict=True).params["corpora"] == ["savee"]
    monkeypatch.setenv("POLYEMO_EMOBOX", str(copy))
    assert find_root(None, six["savee"]) == copy
    monkeypatch.delenv("POLYEMO_EMOBOX")
    elsewhere = six["savee"].assign(path=str(tmp_path / "x.wav"))
    with pytest.raises(SplitError, match="cannot find EmoBox's partitions.*POLYEMO_EMOBOX"):
        make_split(elsewhere, "emobox_official")
    with pytest.raises(SplitError, match="root='/nonexistent' is not a folder"):
        make_split(six["savee"], "emobox_official", root="/nonexistent")


def test_key_normalisation():
    assert normalise_key("JE_n23") == normalise_key("JE-n23") == normalise_key("JE/n23") == "JE-n23"


@pytest.mark.parametrize("target", ["ravdess", "savee"])
def test_track2_balanced_test_sets(target, six):
    pooled = mf.concat([six[c] for c in ("emodb", "ravdess", "savee", "emovo", "urdu")])
    sources = [c for c in ("emodb", "emovo", "urdu", "ravdess", "savee") if c != target]
    split = make_split(pooled, "cross_corpus", train=sources, test=target, pool_train=True, test_set="emobox_track2")
    (fold,) = split.folds
    assert len(fold.test) == 240 and fold.info["test_set"] == "emobox_track2"
    rows = pooled.set_index("utt_id").loc[fold.test]
    assert (rows["corpus"] == target).all()
    assert rows["label"].value_counts().to_dict() == {"anger": 60, "happiness": 60, "neutral": 60, "sadness": 60}
    per_speaker = rows.groupby("speaker").size()
    assert per_speaker.nunique() == 1 and len(per_speaker) == {"ravdess": 20, "savee": 4}[target]
    listed = (EMOBOX / "track2" / f"{target.upper()}_selected_balenced.jsonl").read_text().splitlines()
    stems = {Path(json.loads(line)["wav_filename"]).stem for line in listed}
    assert {u.split("/")[1].split("_")[-1] for u in fold.test} == stems
    assert fold.info["shared_classes"] == ["anger", "happiness", "neutral", "sadness"]
    assert check_leakage(pooled, split) == []
    with pytest.raises(SplitError, match="balanced test sets for \\['ravdess', 'savee'\\] only"):
        make_split(pooled, "cross_corpus", train=target, test="emodb", test_set="emobox_track2")
