import pytest

from polyemo.corpora import scan
from polyemo.corpora.base import RecipeError

TSV = (
    "file_id\temotion\traw_text\tnormalized_text\tspeaker_id\tgender\tage\n"
    "WR0_surprised_64.wav\tsurprised\tUcho wykrywa dźwięki o różnej częstotliwości.\tucho wykrywa dźwięki o różnej częstotliwości\t        WR0\tmale\t23\n"
    "EB0_neutral_13.wav\tneutral\t„Ród smoka” to serial telewizyjny.\tród smoka to serial telewizyjny\t        EB0\tfemale\t27\n"
    "MP0_sadness_79.wav\tsadness\tMleko jest źródłem wapnia.\tmleko jest źródłem wapnia\t        MP0\tmale\t24\n"
)


def test_nemo_table(make_tree):
    root = make_tree({
        "data.tsv": TSV,
        "samples/WR0_surprised_64.wav": None,
        "samples/EB0_neutral_13.wav": None,
    })
    rows = scan("nemo", root).set_index("utt_id")
    assert list(rows.index) == ["nemo/WR0_surprised_64", "nemo/EB0_neutral_13"]
    assert rows["label"].tolist() == ["surprise", "neutral"]
    assert rows["label_raw"].tolist() == ["surprised", "neutral"]
    assert rows["speaker"].tolist() == ["nemo/WR0", "nemo/EB0"]  # padding of the release stripped
    assert rows["gender"].tolist() == ["m", "f"]
    assert rows["text"].tolist()[1] == "„Ród smoka” to serial telewizyjny."
    assert (rows["language"] == "pl").all()


def test_nemo_unknown_emotion_names_the_line(make_tree):
    root = make_tree({"data.tsv": TSV.replace("\tsadness\t", "\tsmutek\t"), "samples/MP0_sadness_79.wav": None})
    with pytest.raises(RecipeError, match=r"line 4 \(MP0_sadness_79\).*smutek"):
        scan("nemo", root)
