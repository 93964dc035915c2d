from polyemo.corpora import prepare, scan

DEMOGRAPHICS = "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1002,21,Female,Caucasian,Not Hispanic\n"


def test_cremad_names_genders_and_formats(make_tree, isolated_cache):
    root = make_tree({
        "VideoDemographics.csv": DEMOGRAPHICS,
        "AudioWAV/1001_DFA_ANG_XX.wav": None,
        "AudioMP3/1001_DFA_ANG_XX.flac": None,  # same recording in a second format: used once
        "AudioWAV/1002_IEO_HAP_HI.wav": None,
        "AudioWAV/1002_TSI_FEA_LO.wav": None,
        "AudioWAV/1003_MTI_NEU_XX.wav": None,  # actor missing from the demographics
        "AudioWAV/readme_not_audio.wav": None,
    })
    rows = scan("cremad", root).set_index("utt_id")
    assert list(rows.index) == ["cremad/1001_DFA_ANG_XX", "cremad/1002_IEO_HAP_HI", "cremad/1002_TSI_FEA_LO", "cremad/1003_MTI_NEU_XX"]
    assert rows.loc["cremad/1001_DFA_ANG_XX", "path"].endswith("AudioWAV/1001_DFA_ANG_XX.wav")
    assert rows["label_raw"].tolist() == ["ANG", "HAP", "FEA", "NEU"]
    assert rows["label"].tolist() == ["anger", "happiness", "fear", "neutral"]
    assert rows["speaker"].tolist() == ["cremad/1001", "cremad/1002", "cremad/1002", "cremad/1003"]
    assert rows["gender"].tolist()[:3] == ["m", "f", "f"] and rows["gender"].isna().tolist()[3]
    assert rows["intensity"].tolist() == ["unspecified", "high", "low", "unspecified"]
    assert rows.loc["cremad/1001_DFA_ANG_XX", "text"] == "Don't forget a jacket"
    assert (rows["language"] == "en").all()

    manifest, failures = prepare("cremad", root, show_progress=False)
    assert failures.empty and len(manifest) == 4
    assert manifest["content_hash"].nunique() == 4 and (manifest["duration"].round(2) == 0.5).all()
