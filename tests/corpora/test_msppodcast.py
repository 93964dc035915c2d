import pytest

from polyemo.corpora import scan
from polyemo.corpora.base import RecipeError

LABELS = """FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set
MSP-PODCAST_0001_0008.wav,N,4.2,4.0,4.6,127,Female,Test1
MSP-PODCAST_0001_0019.wav,A,7.0,1.0,6.4,127,Female,Train
MSP-PODCAST_0002_0033.wav,X,3.4,3.2,3.8,Unknown,Unknown,Development
MSP-PODCAST_0002_0039.wav,C,4.0,2.0,5.0,Unknown,Male,Test2
MSP-PODCAST_0003_0001.wav,H,5.0,6.0,5.0,12,Male,Train
"""


def test_msppodcast_classes_dimensions_splits(make_tree):
    root = make_tree({
        "Labels/labels_consensus.csv": LABELS,
        "Audios/MSP-PODCAST_0001_0008.wav": None,
        "Audios/MSP-PODCAST_0001_0019.wav": None,
        "Audios/MSP-PODCAST_0002_0033.wav": None,
        "Audios/MSP-PODCAST_0002_0039.wav": None,
        "Audios/MSP-PODCAST_0009_0009.wav": None,  # not labelled
    })
    rows = scan("msppodcast", root).set_index("utt_id")
    assert len(rows) == 4  # the unlabelled file and the label row without audio are left out
    assert rows["label"].tolist()[:2] == ["neutral", "anger"]
    assert rows["label"].isna().tolist() == [False, False, True, False]  # X: no agreement
    assert rows["label_raw"].tolist() == ["neutral", "angry", "no agreement", "contempt"]
    assert rows["label"].iloc[3] == "contempt"
    assert rows["official_split"].tolist() == ["test", "train", "validation", "test"]
    angry = rows.loc["msppodcast/MSP-PODCAST_0001_0019"]
    assert (angry["arousal"], angry["valence"], angry["dominance"]) == (1.0, 0.0, pytest.approx(0.9))
    assert rows["speaker"].tolist()[:2] == ["msppodcast/127", "msppodcast/127"]
    # unknown speakers never merge into one
    assert rows["speaker"].tolist()[2:] == ["msppodcast/unknown-MSP-PODCAST_0002_0033", "msppodcast/unknown-MSP-PODCAST_0002_0039"]
    assert rows["gender"].tolist()[0] == "f" and rows["gender"].isna().tolist()[2] and rows["gender"].tolist()[3] == "m"


def test_msppodcast_unknown_class_names_the_line(make_tree):
    root = make_tree({
        "Labels/labels_consensus.csv": LABELS.replace(",H,", ",Q,"),
        "Audios/MSP-PODCAST_0003_0001.wav": None,
    })
    with pytest.raises(RecipeError, match=r"line 6 .*MSP-PODCAST_0003_0001.*'Q'"):
        scan("msppodcast", root)


def test_msppodcast_missing_label_file(make_tree):
    root = make_tree({"Audios/MSP-PODCAST_0003_0001.wav": None})
    with pytest.raises(RecipeError, match="labels_consensus.csv"):
        scan("msppodcast", root)
