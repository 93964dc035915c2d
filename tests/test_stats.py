import pandas as pd
import pytest

from polyemo import manifest as mf
from polyemo.stats import corpus_stats, plot_label_counts


@pytest.fixture(scope="module")
def two_corpora(prepared_manifest):
    return mf.concat([prepared_manifest("emodb"), prepared_manifest("baved")])


def test_corpus_stats_counts(two_corpora):
    table = corpus_stats(two_corpora).set_index("corpus")
    assert list(table.index) == ["baved", "emodb", "all"]
    emodb = table.loc["emodb"]
    assert (emodb["language"], emodb["files"], emodb["speakers"], emodb["unlabelled"]) == ("de", 535, 10, 0)
    assert emodb["hours"] == pytest.approx(0.413, abs=0.001)
    assert {k: emodb[k] for k in ("anger", "boredom", "disgust", "fear", "happiness", "neutral", "sadness")} == {
        "anger": 127, "boredom": 81, "disgust": 46, "fear": 69, "happiness": 71, "neutral": 79, "sadness": 62}
    assert "surprise" not in table.columns  # no corpus here has it
    baved = table.loc["baved"]
    assert (baved["files"], baved["speakers"], baved["unlabelled"], baved["anger"]) == (1935, 60, 1935, 0)
    assert (baved["arousal_low"], baved["arousal_neutral"], baved["arousal_high"]) == (585, 672, 678)
    total = table.loc["all"]
    assert (total["files"], total["speakers"], total["anger"], total["arousal_high"]) == (2470, 70, 127, 678)
    assert emodb["arousal_low"] == 0


def test_corpus_stats_per_language_and_no_total_for_one_group():
    rows = pd.DataFrame({
        "corpus": ["esd"] * 3, "language": ["zh", "zh", "en"], "speaker": ["esd/0001", "esd/0002", "esd/0011"],
        "label": ["anger", "neutral", pd.NA], "duration": [1800.0, 1800.0, 3600.0],
    })
    table = corpus_stats(rows)
    assert table[["corpus", "language", "files", "hours", "speakers", "unlabelled", "anger"]].values.tolist() == [
        ["esd", "en", 1, 1.0, 1, 1, 0], ["esd", "zh", 2, 1.0, 2, 0, 1], ["all", "all", 3, 2.0, 3, 1, 1]]
    assert len(corpus_stats(rows[rows["language"] == "zh"])) == 1


def test_plot_label_counts_writes_png(two_corpora, tmp_path):
    target = plot_label_counts(two_corpora, tmp_path / "plots" / "labels.png")
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
