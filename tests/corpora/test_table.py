import pandas as pd
import pytest

from polyemo.corpora import prepare, scan
from polyemo.corpora.base import RecipeError


@pytest.fixture
def audio_tree(make_tree):
    return make_tree({"clips/a.wav": None, "clips/b.flac": None, "clips/c.wav": None, "broken.wav": "not audio at all"})


def write(root, text, name="labels.csv"):
    (root / name).write_text(text, encoding="utf-8")
    return root / name


def test_table_csv_all_columns(audio_tree):
    absolute = (audio_tree / "clips/c.wav").resolve()
    table = write(audio_tree, (
        "path,label,speaker,language,gender,text,arousal,valence,dominance,split,notes\n"
        "clips/a.wav,angry,s1,en,male,hello,0.9,0.1,0.8,train,x\n"
        "clips/b.flac,ps,s2,,F,,,,,dev,\n"
        f"{absolute},,s1,en,,,0.2,,,test,\n"
    ))
    rows = scan("table", table, language="fr")
    assert rows["utt_id"].tolist() == ["labels/clips/a", "labels/clips/b", "labels/clips/c"]
    assert rows["label_raw"].tolist()[:2] == ["angry", "ps"]
    assert rows["label"].tolist()[:2] == ["anger", "surprise"] and pd.isna(rows["label"].iloc[2])
    assert rows["speaker"].tolist() == ["labels/s1", "labels/s2", "labels/s1"]
    assert rows["language"].tolist() == ["en", "fr", "en"]
    assert rows["gender"].tolist()[:2] == ["m", "f"]
    assert rows["official_split"].tolist() == ["train", "validation", "test"]
    assert rows["arousal"].tolist()[0] == 0.9 and rows["arousal"].tolist()[2] == 0.2
    assert rows["text"].tolist()[0] == "hello"
    assert rows["path"].tolist()[2] == str(absolute)


def test_table_parquet_and_corpus_option(audio_tree, isolated_cache):
    table = audio_tree / "meta.parquet"
    pd.DataFrame({"path": ["clips/a.wav", "clips/c.wav"], "label": ["sad", "neutral"]}).to_parquet(table)
    manifest, failures = prepare("table", table, corpus_name="mydata", show_progress=False)
    assert failures.empty and manifest["corpus"].tolist() == ["mydata", "mydata"]
    assert manifest["speaker"].tolist() == ["mydata/unknown-1", "mydata/unknown-2"]
    assert manifest["content_hash"].nunique() == 2


def test_table_missing_required_columns(audio_tree):
    with pytest.raises(RecipeError, match=r"missing required column\(s\) \['path'\]"):
        scan("table", write(audio_tree, "file,label\nclips/a.wav,angry\n"))
    with pytest.raises(RecipeError, match=r"label \(or arousal/valence/dominance\)"):
        scan("table", write(audio_tree, "path,speaker\nclips/a.wav,s1\n"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("clips/missing.wav,angry", r"row 2 \(.*clips/missing.wav\): audio file not found"),
        ("broken.wav,angry", r"row 2 \(.*broken.wav\): unreadable audio"),
        ("clips/b.flac,confused", r"row 2 \(.*clips/b.flac\): unknown emotion label 'confused'"),
        ("clips/a.wav,sad", r"row 2 \(.*clips/a.wav\): the same file as row 1"),
        (",sad", r"row 2: empty path"),
    ],
)
def test_table_bad_rows_name_row_and_path(audio_tree, line, message):
    table = write(audio_tree, f"path,label\nclips/a.wav,angry\n{line}\n")
    with pytest.raises(RecipeError, match=message):
        scan("table", table)


def test_table_reports_every_bad_row(audio_tree):
    table = write(audio_tree, "path,label,gender,split\nclips/a.wav,,m,train\nclips/b.flac,sad,x,train\nclips/c.wav,sad,f,later\n")
    with pytest.raises(RecipeError) as error:
        scan("table", table)
    text = str(error.value)
    assert "3 bad row(s)" in text
    assert "row 1" in text and "no label and no arousal" in text
    assert "row 2" in text and "unknown gender 'x'" in text
    assert "row 3" in text and "unknown split 'later'" in text
