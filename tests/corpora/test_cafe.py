from polyemo.corpora import scan


def test_cafe_names_intensity_and_neutral(make_tree):
    root = make_tree({
        "CaFE_48k/Colère/Faible/01-C-1-1.wav": None,
        "CaFE_48k/Dégoût/Fort/02-D-2-6.wav": None,
        "CaFE_48k/Joie/Fort/07-J-2-3.aiff": None,
        "CaFE_48k/Neutre/12-N-4.wav": None,
        "CaFE_48k/Tristesse/Faible/11-T-1-5.wav": None,
        "CaFE_48k/Readme.wav": None,
    })
    rows = scan("cafe", root).set_index("utt_id")
    assert list(rows.index) == ["cafe/01-C-1-1", "cafe/02-D-2-6", "cafe/07-J-2-3", "cafe/12-N-4", "cafe/11-T-1-5"]
    assert rows["label_raw"].tolist() == ["colère", "dégoût", "joie", "neutre", "tristesse"]
    assert rows["label"].tolist() == ["anger", "disgust", "happiness", "neutral", "sadness"]
    assert rows["gender"].tolist() == ["m", "f", "m", "f", "m"]  # odd actors are men
    assert rows["intensity"].tolist() == ["low", "high", "high", "normal", "low"]
    assert rows.loc["cafe/12-N-4", "text"] == "Quatre vieilles truies éléphantesques"
    assert (rows["language"] == "fr").all()
