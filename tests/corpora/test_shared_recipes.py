"""Every recipe reproduces the speaker, gender, emotion, language and text of every row of
the seven shared corpora's curated manifests (7,852 rows)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from polyemo.labels import normalise

CORPORA = ("emodb", "ravdess", "savee", "emovo", "urdu", "baved", "ased")
ROWS = {"emodb": 535, "ravdess": 1440, "savee": 480, "emovo": 588, "urdu": 400, "baved": 1935, "ased": 2474}
# Corpora whose manifest text must not become ``text`` (ASED: a sentence number that leaks the label).
NO_TEXT = {"ased"}


def _expected(shared_corpora: Path, corpus: str) -> pd.DataFrame:
    expected = pd.read_csv(shared_corpora / corpus / "manifest.csv", dtype=str, keep_default_na=False)
    expected["stem"] = expected["path"].map(lambda p: Path(p).stem)
    return expected.set_index("stem")


@pytest.mark.parametrize("corpus", CORPORA)
def test_recipe_matches_shared_manifest(corpus, shared_corpora, prepared_manifest):
    ours = prepared_manifest(corpus)
    expected = _expected(shared_corpora, corpus)
    assert len(ours) == len(expected) == ROWS[corpus]
    ours["stem"] = ours["path"].map(lambda p: Path(p).stem)
    ours = ours.set_index("stem").loc[expected.index]

    prefix = f"{corpus}/"
    assert ours["speaker"].str.startswith(prefix).all()
    assert ours["speaker"].str.removeprefix(prefix).tolist() == expected["speaker"].tolist()
    assert ours["gender"].tolist() == expected["gender"].tolist()
    assert ours["language"].tolist() == expected["language"].tolist()
    assert (ours["corpus"] == corpus).all()
    assert ours["content_hash"].notna().all() and (ours["duration"] > 0.5).all()

    if corpus == "baved":
        # An arousal level, never forced into a category.
        assert ours["label"].isna().all()
        assert ours["arousal_level"].tolist() == expected["emotion"].tolist()
        assert ours["label_raw"].tolist() == expected["emotion"].tolist()
    else:
        assert ours["arousal_level"].isna().all()
        assert ours["label"].tolist() == expected["emotion"].tolist()
        # label_raw is the corpus' own name and normalises to the canonical label
        assert ours["label_raw"].map(normalise).tolist() == ours["label"].tolist()

    if corpus in NO_TEXT:
        assert ours["text"].isna().all()
        return
    has_text = expected["text"] != ""
    assert ours.loc[has_text, "text"].tolist() == expected.loc[has_text, "text"].tolist()


def test_all_shared_rows_are_checked(shared_corpora):
    assert sum(ROWS.values()) == 7852
    assert sum(len(_expected(shared_corpora, c)) for c in CORPORA) == 7852


def test_ravdess_raw_labels_and_intensity(prepared_manifest):
    ours = prepared_manifest("ravdess")
    assert set(ours["label_raw"]) == {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"}
    assert ours.groupby("intensity").size().to_dict() == {"normal": 768, "strong": 672}
    assert (ours.loc[ours["label"] == "neutral", "intensity"] == "normal").all()


def test_ased_offers_no_text_and_majority_gender(prepared_manifest, shared_corpora):
    """ASED's sentence number leaks the label, so it never becomes ``text``; the five files
    whose gender code disagrees with their speaker's other files get the speaker's gender."""
    ours = prepared_manifest("ased")
    assert ours["text"].isna().all()
    # the sentence is kept for leakage analysis only, and it does leak: most sentences one emotion
    assert ours["sentence"].notna().all() and set(ours["sentence"]) == {f"0{i}" for i in range(1, 8)}
    assert (ours.groupby("speaker")["gender"].nunique() == 1).all()
    stems = ours["path"].map(lambda p: Path(p).stem)
    disagree = ours[stems.str.split("-").str[3].map({"01": "f", "02": "m"}) != ours["gender"]]
    assert sorted(disagree["speaker"]) == [f"ased/{s}" for s in ("09", "15", "21", "23", "25")]
    assert ours.groupby("gender")["speaker"].nunique().to_dict() == {"f": 25, "m": 40}
    assert ours["label"].value_counts().to_dict() == {
        "neutral": 522, "fear": 510, "anger": 486, "happiness": 486, "sadness": 470}
