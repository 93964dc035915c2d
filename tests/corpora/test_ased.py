"""ASED recipe on the original download's layout (``01Neutral/n1-...wav`` folders)."""

from polyemo.corpora import scan


def test_ased_download_layout_majority_gender_and_no_text(make_tree):
    rows = scan("ased", make_tree({
        "01Neutral/n1-01-01-01-09.wav": None,
        "02Fearful/f2-03-02-01-09.wav": None,
        "04Sad/S4-01-02-02-09.wav": None,  # upper-case letter and a stray male code, as in the corpus
        "05Angry/a5-02-01-02-33.wav": None,
        "03Happy/h4-02-01-02-33.wav": None,  # letter h with folder number 4: not an ASED name
        "README.txt": "not audio",
    }))
    assert rows["speaker"].tolist() == ["ased/09", "ased/09", "ased/09", "ased/33"]
    assert rows["label"].tolist() == ["neutral", "fear", "sadness", "anger"]
    assert rows["label_raw"].tolist() == ["neutral", "fearful", "sad", "angry"]
    assert rows["gender"].tolist() == ["f", "f", "f", "m"]  # speaker 09's majority, not the file's code
    assert rows["text"].isna().all()  # the sentence number leaks the label
    assert rows["sentence"].tolist() == ["01", "03", "01", "02"]
    assert (rows["language"] == "am").all() and rows["utt_id"].str.startswith("ased/").all()
