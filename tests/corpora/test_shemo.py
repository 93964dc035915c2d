from polyemo.corpora import scan


def test_shemo_names(make_tree):
    root = make_tree({
        "female/F01A01.wav": None,
        "female/F01W12.wav": None,
        "male/M01H03.wav": None,
        "male/M23F01.wav": None,
        "male/M23N100.wav": None,
        "male/M23S07.wav": None,
    })
    rows = scan("shemo", root).set_index("utt_id")
    assert rows["label"].to_dict() == {
        "shemo/F01A01": "anger", "shemo/F01W12": "surprise", "shemo/M01H03": "happiness",
        "shemo/M23F01": "fear", "shemo/M23N100": "neutral", "shemo/M23S07": "sadness",
    }
    # F01 and M01 are different people
    assert rows["speaker"].tolist() == ["shemo/F01", "shemo/F01", "shemo/M01", "shemo/M23", "shemo/M23", "shemo/M23"]
    assert rows["gender"].tolist() == ["f", "f", "m", "m", "m", "m"]
    assert (rows["language"] == "fa").all()
