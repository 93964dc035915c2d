"""LOSO, speaker k-fold, official, zero-shot and cross-corpus protocols on the real corpora."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from polyemo import manifest as mf
from polyemo.splits import PROTOCOLS, SplitError, check_leakage, make_split


def speakers_of(manifest: pd.DataFrame, ids) -> set[str]:
    speaker = dict(zip(manifest["utt_id"], manifest["speaker"]))
    return {speaker[u] for u in ids}


def test_registry_lists_every_protocol():
    assert PROTOCOLS.names() == sorted([
        "cross_corpus", "emobox_coverage", "emobox_official", "emobox_rule", "leave_one_corpus_out",
        "leave_one_language_out", "loso", "official", "speaker_kfold",
    ])
    assert PROTOCOLS.get("lolo") is PROTOCOLS.get("leave_one_language_out")
    # Plain "emobox" means EmoBox's published partition; its fold rule has its own names.
    assert PROTOCOLS.get("emobox") is PROTOCOLS.get("emobox_official")


def test_loso_one_fold_per_speaker_group(manifests):
    savee = manifests["savee"]
    split = make_split(savee, "loso", seed=0)
    assert [len(speakers_of(savee, f.test)) for f in split.folds] == [1, 1, 1, 1]
    assert all(f.validation and not speakers_of(savee, f.validation) & speakers_of(savee, f.test) for f in split.folds)
    baved = manifests["baved"]
    split = make_split(baved, "loso", label_column="arousal_level", seed=0)
    # 60 speakers, but 46 and 53 share recordings: 59 groups.
    assert len(split.folds) == 59
    joint = [f for f in split.folds if "baved/46" in f.info["test_speakers"]]
    assert len(joint) == 1 and set(joint[0].info["test_speakers"]) == {"baved/46", "baved/53"}


def test_speaker_kfold_is_speaker_independent_and_stratified(manifests):
    ravdess = manifests["ravdess"]
    split = make_split(ravdess, "speaker_kfold", k=5, seed=0)
    assert len(split.folds) == 5 and check_leakage(ravdess, split) == []
    tested = Counter(s for f in split.folds for s in speakers_of(ravdess, f.test))
    assert set(tested) == set(ravdess["speaker"]) and set(tested.values()) == {1}
    label = dict(zip(ravdess["utt_id"], ravdess["label"]))
    for fold in split.folds:
        assert {label[u] for u in fold.test} == set(ravdess["label"])
    assert make_split(ravdess, "speaker_kfold", k=5, seed=1).sha256 != split.sha256
    with pytest.raises(SplitError, match="needs at least 5 speaker groups, found 4"):
        make_split(manifests["savee"], "speaker_kfold", k=5)


def test_official_split(manifests):
    emodb = manifests["emodb"]
    with pytest.raises(SplitError, match="no official split"):
        make_split(emodb, "official")
    part = {"13": "dev", "14": "test", "15": "test", "16": "test"}
    frame = emodb.copy()
    frame["official_split"] = frame["speaker"].str[-2:].map(part).fillna("train")
    # A copy of a test recording filed under a training speaker must not reach training.
    copy = frame[frame["official_split"] == "test"].iloc[[0]].copy()
    copy["utt_id"], copy["speaker"], copy["official_split"] = "emodb/copy", "emodb/03", "train"
    frame = mf.concat([frame, copy])
    split = make_split(frame, "official")
    (fold,) = split.folds
    assert split.speaker_independent and check_leakage(frame, split) == []
    assert speakers_of(frame, fold.validation) == {"emodb/13"}
    assert speakers_of(frame, fold.test) == {"emodb/14", "emodb/15", "emodb/16"}
    assert "emodb/copy" not in fold.train and fold.info["dropped_train_same_audio_as_test"] == 1
    # Without a validation part it is carved from the training speakers.
    frame["official_split"] = frame["official_split"].replace("dev", "train")
    (fold,) = make_split(frame, "official").folds
    assert fold.info["validation_carved"] and fold.validation
    assert not speakers_of(frame, fold.validation) & speakers_of(frame, fold.train)


@pytest.mark.parametrize("protocol,column", [("leave_one_corpus_out", "corpus"), ("leave_one_language_out", "language")])
def test_zero_shot_folds_hold_out_the_target_completely(pooled, protocol, column):
    # Plant an English copy of a German recording: it must stay out of training for German.
    german = pooled[pooled["language"] == "de"].iloc[[0]].copy()
    german["utt_id"], german["corpus"], german["language"], german["speaker"] = "savee/copy", "savee", "en", "savee/XX"
    manifest = mf.concat([pooled, german])
    split = make_split(manifest, protocol, seed=0)
    values = sorted(manifest[column].unique())
    assert [f.info["target"] for f in split.folds] == values
    for fold in split.folds:
        target = fold.info["target"]
        rows = manifest.set_index("utt_id")
        assert not (rows.loc[fold.train + fold.validation, column] == target).any()
        unseen = fold.info.get("dropped_test_unseen_classes", [])
        expected_test = manifest[(manifest[column] == target) & ~manifest["label"].isin(unseen)]
        assert set(fold.test) == set(expected_test["utt_id"])
        assert fold.validation and not speakers_of(manifest, fold.validation) & speakers_of(manifest, fold.test)
    german_fold = split.fold("holdout_de" if column == "language" else "holdout_emodb")
    assert "savee/copy" not in german_fold.train + german_fold.validation
    assert german_fold.info["dropped_train_same_audio"] == 1
    # boredom exists only in German, calm only in RAVDESS: untestable when held out.
    assert german_fold.info["dropped_test_unseen_classes"] == ["boredom"]


def test_zero_shot_target_selection_and_errors(pooled, manifests):
    split = make_split(pooled, "lolo", target=["ur", "it"], seed=0)
    assert [f.name for f in split.folds] == ["holdout_it", "holdout_ur"]
    with pytest.raises(SplitError, match=r"target \['xx'\] not found"):
        make_split(pooled, "lolo", target="xx")
    with pytest.raises(SplitError, match="at least 2 values"):
        make_split(manifests["emodb"], "leave_one_corpus_out")


def test_cross_corpus_balanced_test_per_speaker_and_class(pooled):
    split = make_split(pooled, "cross_corpus", train="emodb", test="savee", seed=0)
    (fold,) = split.folds
    assert fold.name == "emodb_to_savee" and fold.holdout == {"corpus": ["savee"]}
    shared = ["anger", "disgust", "fear", "happiness", "neutral", "sadness"]
    assert fold.info["shared_classes"] == shared
    rows = pooled.set_index("utt_id")
    test = rows.loc[fold.test]
    cells = Counter(zip(test["speaker"], test["label"]))
    assert len(cells) == 4 * 6 and set(cells.values()) == {fold.info["per_speaker_and_class"]} == {15}
    train = rows.loc[fold.train + fold.validation]
    assert set(train["corpus"]) == {"emodb"} and set(train["label"]) == set(shared)
    assert fold.validation
    assert make_split(pooled, "cross_corpus", train="emodb", test="savee", seed=1).folds[0].test != fold.test


def test_cross_corpus_fallback_pairs_and_duplicates(pooled):
    split = make_split(pooled, "cross_corpus", train=["emodb", "ravdess"], test=["urdu", "ravdess"], seed=0)
    assert [f.name for f in split.folds] == ["emodb_to_urdu", "emodb_to_ravdess", "ravdess_to_urdu"]
    urdu_fold = split.fold("emodb_to_urdu")
    # No URDU speaker has all four classes: equal counts per class instead.
    assert urdu_fold.info["balance"] == "class" and "balance_fallback" in urdu_fold.info
    labels = pooled.set_index("utt_id").loc[urdu_fold.test, "label"]
    assert set(labels.value_counts()) == {urdu_fold.info["per_class"]}
    ravdess_fold = split.fold("emodb_to_ravdess")
    hashes = pooled.set_index("utt_id").loc[ravdess_fold.test, "content_hash"]
    assert not hashes.duplicated().any()
    pooled_split = make_split(pooled, "cross_corpus", train=["emodb", "emovo", "savee"], test=["savee", "urdu"], pool_train=True)
    assert [f.name for f in pooled_split.folds] == ["emodb+emovo_to_savee", "emodb+emovo+savee_to_urdu"]


def test_bad_requests_get_clear_errors(manifests):
    emodb = manifests["emodb"]
    with pytest.raises(KeyError, match="unknown split protocol 'nope'; known: cross_corpus"):
        make_split(emodb, "nope")
    with pytest.raises(SplitError, match="protocol 'loso'.*unexpected keyword argument 'k'"):
        make_split(emodb, "loso", k=3)
    with pytest.raises(SplitError, match="no label column 'valence_class'"):
        make_split(emodb, "loso", label_column="valence_class")
    with pytest.raises(SplitError, match="use label_column='arousal_level'"):
        make_split(manifests["baved"], "emobox")
    with pytest.raises(SplitError, match="validation_fraction must be between 0 and 1"):
        make_split(emodb, "loso", validation_fraction=1.5)
    with pytest.raises(SplitError, match=r"corpora \['emodb'\] have no rows with 'arousal_level'"):
        make_split(mf.concat([emodb, manifests["baved"]]), "cross_corpus", train="emodb", test="baved", label_column="arousal_level")
    with pytest.raises(SplitError, match="emodb_to_urdu: the corpora share no class"):
        make_split(mf.concat([emodb, manifests["urdu"].assign(label="calm")]), "cross_corpus", train="emodb", test="urdu")
