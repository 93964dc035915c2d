"""The shared-corpus recipes also read the corpora as users download them: original WAV
files in the release's folders, next to files that are not part of the corpus."""

from polyemo.corpora import scan


def test_ravdess_actor_folders_speech_only(make_tree):
    root = make_tree({
        "Actor_01/03-01-06-01-02-01-01.wav": None,
        "Actor_02/03-01-08-02-01-02-02.wav": None,
        "Actor_02/03-02-06-01-02-01-02.wav": None,  # song: not part of the speech corpus
        "Actor_02/01-01-06-01-02-01-02.wav": None,  # audio-visual modality
    })
    rows = scan("ravdess", root)
    assert rows["utt_id"].tolist() == ["ravdess/03-01-06-01-02-01-01", "ravdess/03-01-08-02-01-02-02"]
    assert rows["label_raw"].tolist() == ["fearful", "surprised"] and rows["label"].tolist() == ["fear", "surprise"]
    assert rows["gender"].tolist() == ["m", "f"] and rows["intensity"].tolist() == ["normal", "strong"]
    assert rows["text"].tolist() == ["Dogs are sitting by the door", "Kids are talking by the door"]


def test_savee_flat_and_per_speaker_folders(make_tree):
    root = make_tree({
        "ALL/DC_sa01.wav": None,
        "AudioData/KL/su15.wav": None,
        "AudioData/JE/n30.wav": None,
        "AudioData/info.wav": None,
    })
    rows = scan("savee", root).set_index("utt_id")
    assert rows["label"].to_dict() == {"savee/DC_sa01": "sadness", "savee/JE_n30": "neutral", "savee/KL_su15": "surprise"}
    assert rows["speaker"].tolist() == ["savee/DC", "savee/JE", "savee/KL"]
    assert rows["text"].tolist() == ["sa01", "n30", "su15"]


def test_emovo_speaker_folders(make_tree):
    rows = scan("emovo", make_tree({"EMOVO/f1/dis-f1-b1.wav": None, "EMOVO/m3/sor-m3-n5.wav": None, "EMOVO/documents/x.wav": None}))
    assert rows["label_raw"].tolist() == ["disgusto", "sorpresa"]
    assert rows["label"].tolist() == ["disgust", "surprise"]
    assert rows["gender"].tolist() == ["f", "m"] and rows["text"].tolist() == ["b1", "n5"]


def test_urdu_emotion_folders(make_tree):
    rows = scan("urdu", make_tree({"Angry/SM1_F10_A010.wav": None, "Sad/SF10_F1_S01.wav": None}))
    assert rows["speaker"].tolist() == ["urdu/SM1", "urdu/SF10"]
    assert rows["gender"].tolist() == ["m", "f"] and rows["label"].tolist() == ["anger", "sadness"]


def test_baved_word_folders_levels_not_categories(make_tree):
    rows = scan("baved", make_tree({"0/0-m-21-0-1-105.wav": None, "6/49-f-23-6-0-201.wav": None, "5/53-m-20-5-2-1552.wav": None}))
    assert rows["label"].isna().all()
    rows = rows.set_index("utt_id").loc[["baved/0-m-21-0-1-105", "baved/49-f-23-6-0-201", "baved/53-m-20-5-2-1552"]]
    assert rows["arousal_level"].tolist() == ["neutral", "low", "high"]
    assert rows["label_raw"].tolist() == ["neutral", "low", "high"]
    assert rows["speaker"].tolist() == ["baved/0", "baved/49", "baved/53"]
    assert rows["gender"].tolist() == ["m", "f", "m"]
    assert rows["text"].tolist() == ["اعجبني", "سيئ", "مقول"]
