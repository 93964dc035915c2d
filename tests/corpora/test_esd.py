from polyemo.corpora import scan

ZH = "0001_000351\t打远一看，它们的确很是美丽，\t生气\n0001_000701\t这是一个测试。\t快乐\n"
EN = "0011_000001\tThe nine the eggs,\tNeutral\n0011_001401\tWhat a surprise.\tSurprise\n"


def test_esd_languages_labels_splits(make_tree):
    root = make_tree({
        "Emotion Speech Dataset/0001/0001.txt": ZH,
        "Emotion Speech Dataset/0001/Angry/train/0001_000351.wav": None,
        "Emotion Speech Dataset/0001/Happy/evaluation/0001_000701.wav": None,
        "Emotion Speech Dataset/0001/Sad/test/0001_001051.wav": None,  # no label line: folder used
        "Emotion Speech Dataset/0011/0011.txt": EN,
        "Emotion Speech Dataset/0011/Neutral/0011_000001.wav": None,
        "Emotion Speech Dataset/0011/Surprise/0011_001401.wav": None,
    })
    rows = scan("esd", root).set_index("utt_id")
    assert rows["label_raw"].tolist() == ["生气", "快乐", "Sad", "Neutral", "Surprise"]
    assert rows["label"].tolist() == ["anger", "happiness", "sadness", "neutral", "surprise"]
    assert rows["language"].tolist() == ["zh", "zh", "zh", "en", "en"]
    assert rows["gender"].tolist() == ["f", "f", "f", "m", "m"]
    assert rows["official_split"].tolist()[:3] == ["train", "validation", "test"]
    assert rows["official_split"].isna().tolist()[3:] == [True, True]
    assert rows.loc["esd/0011_000001", "text"] == "The nine the eggs,"
    assert rows["speaker"].tolist() == ["esd/0001"] * 3 + ["esd/0011"] * 2
