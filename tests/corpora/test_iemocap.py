import pytest

from polyemo.corpora import scan
from polyemo.corpora.base import RecipeError

EVALUATION = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
C-E2:\tNeutral;\t()
A-E3:\tval 3; act 2; dom  2;\t()

[10.0100 - 11.3925]\tSes01F_impro01_M001\texc\t[4.0000, 5.0000, 1.0000]

[14.8872 - 18.0175]\tSes01F_impro01_M002\txxx\t[2.5000, 3.5000, 3.5000]
"""
SCRIPT_EVALUATION = """% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]

[1.0000 - 2.0000]\tSes02M_script01_1_F003\tfru\t[1.5000, 3.0000, 2.0000]
"""
TRANSCRIPT = "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\nSes01F_impro01_M001 [010.0100-011.3925]: Do you have your forms?\n"


def test_iemocap_labels_dimensions_speakers_sessions(make_tree):
    root = make_tree({
        "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt": EVALUATION,
        "Session1/dialog/EmoEvaluation/Categorical/Ses01F_impro01_e1_cat.txt": "Ses01F_impro01_F000 :Neutral state; ()\n",
        "Session1/dialog/transcriptions/Ses01F_impro01.txt": TRANSCRIPT,
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav": None,
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M001.wav": None,
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M002.wav": None,
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M099.wav": None,  # no evaluation line
        "Session2/dialog/EmoEvaluation/Ses02M_script01_1.txt": SCRIPT_EVALUATION,
        "Session2/sentences/wav/Ses02M_script01_1/Ses02M_script01_1_F003.wav": None,
    })
    rows = scan("iemocap", root).set_index("utt_id")
    assert len(rows) == 4
    first = rows.loc["iemocap/Ses01F_impro01_F000"]
    assert (first["label_raw"], first["label"], first["speaker"], first["gender"]) == ("neu", "neutral", "iemocap/Ses01F", "f")
    assert (first["valence"], first["arousal"], first["dominance"]) == (0.375, 0.375, 0.375)
    assert first["text"] == "Excuse me." and first["session"] == "1" and first["style"] == "impro"
    # [V, A, D] order: valence 4 -> 0.75, arousal 5 -> 1.0, dominance 1 -> 0.0
    excited = rows.loc["iemocap/Ses01F_impro01_M001"]
    assert (excited["valence"], excited["arousal"], excited["dominance"]) == (0.75, 1.0, 0.0)
    assert excited["label_raw"] == "exc" and excited["speaker"] == "iemocap/Ses01M" and excited["gender"] == "m"
    assert rows.loc["iemocap/Ses01F_impro01_M002", "label"] == "other"  # xxx: no agreement
    scripted = rows.loc["iemocap/Ses02M_script01_1_F003"]
    assert (scripted["speaker"], scripted["session"], scripted["style"], scripted["label"]) == ("iemocap/Ses02F", "2", "script", "other")
    assert rows["speaker"].nunique() == 3


def test_iemocap_without_label_files_is_a_clear_error(make_tree):
    root = make_tree({"Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav": None})
    with pytest.raises(RecipeError, match="EmoEvaluation"):
        scan("iemocap", root)
