from polyemo.corpora import scan


def test_tess_speakers_words_and_pleasant_surprise(make_tree):
    root = make_tree({
        "TESS Toronto emotional speech set data/OAF_angry/OAF_back_angry.wav": None,
        "TESS Toronto emotional speech set data/OAF_Pleasant_surprise/OAF_back_ps.wav": None,
        "TESS Toronto emotional speech set data/OAF_neutral/OA_bite_neutral.wav": None,
        "TESS Toronto emotional speech set data/YAF_pleasant_surprised/YAF_chat_ps.wav": None,
        "TESS Toronto emotional speech set data/YAF_sad/YAF_chat_sad.wav": None,
        "TESS Toronto emotional speech set data/YAF_disgust/YAF_chat_disgust.wav": None,
    })
    rows = scan("tess", root).sort_values("utt_id").set_index("utt_id")
    assert rows.loc["tess/OAF_back_ps", "label_raw"] == "ps"
    assert rows.loc["tess/OAF_back_ps", "label"] == "surprise"
    assert rows.loc["tess/OAF_bite_neutral", "speaker"] == "tess/OAF"  # OA_ typo of the release
    assert rows.loc["tess/YAF_chat_disgust", "label"] == "disgust"
    assert rows.loc["tess/YAF_chat_sad", "text"] == "Say the word chat"
    assert set(rows["speaker"]) == {"tess/OAF", "tess/YAF"}
    assert (rows["gender"] == "f").all() and (rows["language"] == "en").all()
    assert len(rows) == 6
