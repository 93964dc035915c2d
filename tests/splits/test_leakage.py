"""The leakage checker passes clean splits and catches deliberately corrupted ones."""

from __future__ import annotations

import pytest

from polyemo.splits import LeakageError, Split, assert_no_leakage, check_leakage, make_split


def corrupted(split: Split, index: int, **parts) -> Split:
    fold = split.folds[index].model_copy(update=parts)
    folds = list(split.folds)
    folds[index] = fold
    return split.model_copy(update={"folds": folds})


def kinds(problems) -> set[str]:
    return {p.kind for p in problems}


def test_test_speaker_moved_into_training_is_caught(manifests, emobox_splits):
    manifest, split = manifests["emodb"], emobox_splits["emodb"]
    fold = split.folds[0]
    moved = fold.test[0]
    speaker = manifest.set_index("utt_id").at[moved, "speaker"]
    bad = corrupted(split, 0, train=fold.train + [moved], test=fold.test[1:])
    problems = check_leakage(manifest, bad)
    assert kinds(problems) == {"speaker_overlap"}
    assert problems[0].fold == "fold_1" and speaker in problems[0].message and moved in problems[0].message
    with pytest.raises(LeakageError, match=f"fold fold_1: speaker_overlap: speakers in both train and test: {speaker}"):
        assert_no_leakage(manifest, bad)


def test_one_of_a_baved_duplicate_pair_on_the_other_side_is_caught(manifests, emobox_splits):
    baved = manifests["baved"]
    pair = baved[baved["content_hash"].duplicated(keep=False) & baved["speaker"].isin(["baved/46", "baved/53"])]
    first, second = pair.sort_values("utt_id").groupby("content_hash")["utt_id"].apply(list).iloc[0]
    split = emobox_splits["baved"]
    index = next(i for i, f in enumerate(split.folds) if first in f.train)
    fold = split.folds[index]
    assert second in fold.train
    bad = corrupted(split, index, train=[u for u in fold.train if u != second], test=fold.test + [second])
    problems = check_leakage(baved, bad)
    assert "content_hash_overlap" in kinds(problems)
    message = next(p.message for p in problems if p.kind == "content_hash_overlap")
    assert first in message and second in message

    # In a speaker-dependent split only the hash check can see it.
    random_split = make_split(baved, "emobox_rule", label_column="arousal_level", seed=0)
    (fold,) = random_split.folds
    parts = fold.assignment()
    side = parts[first]
    assert parts[second] == side
    other = "test" if side != "test" else "train"
    moved = {side: [u for u in fold.part(side) if u != second], other: fold.part(other) + [second]}
    problems = check_leakage(baved, corrupted(random_split, 0, **moved))
    assert kinds(problems) == {"content_hash_overlap"}


def test_target_language_file_in_training_is_caught(pooled):
    split = make_split(pooled, "leave_one_language_out", target="it", seed=0)
    (fold,) = split.folds
    assert fold.holdout == {"language": ["it"]}
    italian = pooled.loc[pooled["language"] == "it", "utt_id"].tolist()
    assert set(fold.test) == set(italian)
    intruder = italian[5]
    bad = corrupted(split, 0, validation=fold.validation + [intruder], test=[u for u in fold.test if u != intruder])
    problems = check_leakage(pooled, bad)
    assert "holdout_in_training" in kinds(problems)
    message = next(p.message for p in problems if p.kind == "holdout_in_training")
    assert "1 validation files have language in the zero-shot target ['it']" in message and intruder in message


def test_empty_validation_unknown_ids_and_repeated_ids_are_caught(manifests, emobox_splits):
    manifest, split = manifests["savee"], emobox_splits["savee"]
    fold = split.folds[1]
    problems = check_leakage(manifest, corrupted(split, 1, train=fold.train + fold.validation, validation=[]))
    assert kinds(problems) == {"empty_part"} and "validation part is empty" in problems[0].message

    problems = check_leakage(manifest, corrupted(split, 1, test=fold.test + ["savee/NOPE_x01"]))
    assert kinds(problems) == {"unknown_utt_id"} and "savee/NOPE_x01" in problems[0].message

    problems = check_leakage(manifest, corrupted(split, 1, validation=fold.validation + fold.train[:1]))
    assert kinds(problems) == {"utt_id_overlap", "speaker_overlap", "content_hash_overlap"}
    assert fold.train[0] in next(p.message for p in problems if p.kind == "utt_id_overlap")

    problems = check_leakage(manifest, corrupted(split, 1, test=fold.test + fold.test[:1]))
    assert kinds(problems) == {"utt_id_overlap"} and "listed twice in test" in problems[0].message

    problems = check_leakage(manifest, corrupted(split, 1, test=[]))
    assert "empty_part" in kinds(problems)


def test_make_split_refuses_to_return_a_leaking_split(manifests, monkeypatch):
    """make_split audits what a protocol returns, so a buggy protocol cannot leak silently."""
    from polyemo.splits import PROTOCOLS

    honest = PROTOCOLS.get("loso")

    def buggy(manifest, **kwargs):
        split = honest(manifest, **kwargs)
        fold = split.folds[0]
        return corrupted(split, 0, train=fold.train + fold.test[:1])

    monkeypatch.setitem(PROTOCOLS._entries, "loso", buggy)
    with pytest.raises(LeakageError, match="utt_id_overlap"):
        make_split(manifests["savee"], "loso")
