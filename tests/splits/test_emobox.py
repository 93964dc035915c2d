"""EmoBox's speaker-count rule (``emobox_coverage`` / ``emobox_rule``) on the six real corpora, made leak-proof."""

from __future__ import annotations

from collections import defaultdict

import pytest

from polyemo.splits import check_leakage, make_split
from polyemo.splits.emobox import is_uneven, regime

EXPECTED_FOLDS = {"emodb": 2, "ravdess": 6, "emovo": 6, "savee": 4, "urdu": 7, "baved": 15}
EXPECTED_REGIME = {"emodb": "speaker_folds", "ravdess": "speaker_folds", "emovo": "loso", "savee": "loso", "urdu": "speaker_folds", "baved": "speaker_folds"}


def parts_of_groups(fold, keys: dict[str, str]) -> dict[str, set[str]]:
    """key (speaker or content hash) -> the parts of the fold its utterances are in."""
    where = defaultdict(set)
    for utt, part in fold.assignment().items():
        where[keys[utt]].add(part)
    return where


@pytest.mark.parametrize("corpus", list(EXPECTED_FOLDS))
def test_fold_counts_follow_the_speaker_count_rule(corpus, emobox_splits, manifests):
    split = emobox_splits[corpus]
    assert len(split.folds) == EXPECTED_FOLDS[corpus]
    assert split.params["regime"] == EXPECTED_REGIME[corpus]
    assert split.speaker_independent
    assert check_leakage(manifests[corpus], split) == []


@pytest.mark.parametrize("corpus", list(EXPECTED_FOLDS))
def test_every_speaker_is_tested_once_and_never_straddles(corpus, emobox_splits, manifests):
    manifest, split = manifests[corpus], emobox_splits[corpus]
    speaker_of = dict(zip(manifest["utt_id"], manifest["speaker"]))
    tested = defaultdict(int)
    for fold in split.folds:
        # Each fold covers the whole corpus exactly once.
        assert sorted(fold.assignment()) == sorted(manifest["utt_id"])
        for speaker, parts in parts_of_groups(fold, speaker_of).items():
            assert len(parts) == 1, f"{fold.name}: {speaker} in {parts}"
            if parts == {"test"}:
                tested[speaker] += 1
        # Validation: non-empty, from training speakers only.
        validation_speakers = {speaker_of[u] for u in fold.validation}
        test_speakers = {speaker_of[u] for u in fold.test}
        assert validation_speakers and not validation_speakers & test_speakers
    assert set(tested) == set(manifest["speaker"]) and set(tested.values()) == {1}


@pytest.mark.parametrize("corpus", ["baved", "ravdess"])
def test_identical_recordings_always_land_on_one_side(corpus, emobox_splits, manifests):
    manifest = manifests[corpus]
    duplicated = manifest[manifest["content_hash"].duplicated(keep=False)]
    assert duplicated["content_hash"].nunique() == {"baved": 27, "ravdess": 1}[corpus]
    hash_of = dict(zip(duplicated["utt_id"], duplicated["content_hash"]))
    for fold in emobox_splits[corpus].folds:
        assignment = fold.assignment()
        for digest, rows in duplicated.groupby("content_hash"):
            assert len({assignment[u] for u in rows["utt_id"]}) == 1, f"{fold.name}: {list(rows['utt_id'])} split"
    assert len(hash_of) == {"baved": 54, "ravdess": 2}[corpus]


def test_baved_speakers_46_and_53_are_held_out_together(emobox_splits):
    for fold in emobox_splits["baved"].folds:
        tested = set(fold.info["test_speakers"])
        assert ("baved/46" in tested) == ("baved/53" in tested)
        validating = set(fold.info["validation_speakers"])
        assert ("baved/46" in validating) == ("baved/53" in validating)


def test_same_seed_same_split_other_seed_other_split(manifests, emobox_splits):
    again = make_split(manifests["ravdess"], "emobox_coverage", seed=0)
    assert again.sha256 == emobox_splits["ravdess"].sha256
    assert again == emobox_splits["ravdess"]
    other = make_split(manifests["ravdess"], "emobox_coverage", seed=1)
    assert other.sha256 != again.sha256
    assert [f.test for f in other.folds] != [f.test for f in again.folds]


def test_uneven_rules(manifests):
    urdu, emodb = manifests["urdu"], manifests["emodb"]
    # Every URDU speaker lacks some class, but every class has >= 2 speakers.
    assert not is_uneven(urdu, "label", "coverage")
    assert is_uneven(urdu, "label", "identical")
    assert regime(emodb, "label", "identical") == "random"
    # A class spoken by a single speaker is uneven under the default rule.
    one_speaker_anger = urdu[(urdu["label"] != "anger") | (urdu["speaker"] == "urdu/SM4")]
    assert is_uneven(one_speaker_anger, "label", "coverage")
    assert regime(one_speaker_anger, "label") == "random"


def test_random_regime_takes_a_quarter_of_each_class_and_keeps_duplicates_together(manifests):
    baved = manifests["baved"]
    split = make_split(baved, "emobox_rule", label_column="arousal_level", seed=3)
    assert split.params["regime"] == "random" and not split.speaker_independent
    (fold,) = split.folds
    assert check_leakage(baved, split) == []
    level_of = dict(zip(baved["utt_id"], baved["arousal_level"]))
    for level, size in baved["arousal_level"].value_counts().items():
        in_test = sum(level_of[u] == level for u in fold.test)
        # int(0.25 * n) as in EmoBox, at most one duplicate group (2 files) more.
        assert int(0.25 * size) <= in_test <= int(0.25 * size) + 1
    assignment = fold.assignment()
    for _, rows in baved[baved["content_hash"].duplicated(keep=False)].groupby("content_hash"):
        assert len({assignment[u] for u in rows["utt_id"]}) == 1
    assert fold.validation


def test_fewer_than_four_speakers_is_one_random_fold(manifests):
    savee = manifests["savee"]
    three = savee[savee["speaker"] != "savee/DC"]
    split = make_split(three, "emobox_coverage", seed=0)
    assert split.params["regime"] == "random" and len(split.folds) == 1
    assert split.folds[0].validation and split.folds[0].test


def test_several_corpora_are_split_one_by_one(pooled, emobox_splits):
    """A pooled manifest: each corpus gets its own folds, named ``<corpus>.fold_<k>``, the same
    as splitting it alone with the same seed."""
    split = make_split(pooled, "emobox_coverage")
    assert split.params["per_corpus"] and split.speaker_independent
    for corpus in ("emodb", "ravdess", "savee", "emovo", "urdu"):
        mine = [f for f in split.folds if f.info["corpus"] == corpus]
        alone = emobox_splits[corpus].folds
        assert [f.name for f in mine] == [f"{corpus}.{f.name}" for f in alone]
        assert [(f.train, f.validation, f.test) for f in mine] == [(f.train, f.validation, f.test) for f in alone]
    assert len(make_split(pooled, "emobox_coverage", corpus="savee").folds) == 4


def test_rule_and_coverage_differ_only_in_balance(manifests):
    urdu = manifests["urdu"]
    rule = make_split(urdu, "emobox_rule")
    assert rule.protocol == "emobox_rule" and rule.params["balance"] == "identical" and rule.params["regime"] == "random"
    assert not rule.speaker_independent and rule.folds[0].info["speaker_independent"] is False
    same = make_split(urdu, "emobox_coverage", balance="identical")
    assert [f.test for f in same.folds] == [f.test for f in rule.folds]


def test_seven_speakers_get_two_folds_not_one(prepared_manifest):
    """EmoBox's S // 4 gives one fold (an empty training part) for 7 speakers: we make 2."""
    from polyemo.splits import make_split

    ravdess = prepared_manifest("ravdess")
    keep = sorted(ravdess["speaker"].unique())[:7]
    rows = ravdess[ravdess["speaker"].isin(keep)].reset_index(drop=True)
    split = make_split(rows, protocol="emobox_coverage", seed=0)
    assert len(split.folds) == 2
    for fold in split.folds:
        assert fold.train and fold.test
