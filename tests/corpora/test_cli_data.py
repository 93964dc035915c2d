"""The corpus commands are thin wrappers: they run, write what they say, fail clearly."""

import numpy as np
import pytest
from typer.testing import CliRunner

from polyemo import manifest as mf
from polyemo.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", ["prepare", "prepare-all", "stats", "corpora"])
def test_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_corpora_lists_recipes():
    result = runner.invoke(app, ["corpora"])
    assert result.exit_code == 0
    for name in ("emodb", "ravdess", "baved", "ased", "iemocap", "msppodcast", "folder", "table"):
        assert name in result.output


def test_prepare_stats_and_prepare_all(make_tree, isolated_cache, tmp_path):
    root = make_tree({"emodb/03a01Fa.wav": None, "emodb/08b02Wc.wav": None, "urdu/Sad/SF10_F1_S01.wav": None}, root_name="corpora")
    target = tmp_path / "out" / "emodb.parquet"
    result = runner.invoke(app, ["prepare", "emodb", str(root / "emodb"), "-o", str(target), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "2 files" in result.output
    assert len(mf.load(target)) == 2 and target.with_suffix(".csv").exists()

    result = runner.invoke(app, ["prepare-all", str(root), "-o", str(tmp_path / "all"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(mf.load(tmp_path / "all" / "all.parquet")) == 3

    png = tmp_path / "labels.png"
    result = runner.invoke(app, ["stats", str(tmp_path / "all" / "all.parquet"), "--png", str(png)])
    assert result.exit_code == 0, result.output
    assert "emodb" in result.output and "urdu" in result.output and "happiness 1" in result.output
    assert png.exists()


def test_prepare_with_recipe_options(make_tree, isolated_cache, tmp_path):
    root = make_tree({"angry/s1_a.wav": None, "sad/s2_b.wav": None})
    target = tmp_path / "mine.parquet"
    result = runner.invoke(app, [
        "prepare", "folder", str(root), "-o", str(target), "--no-progress",
        "--option", "speaker_pattern=^(s\\d)_", "--option", "language=de", "--option", "corpus_name=mine",
    ])
    assert result.exit_code == 0, result.output
    manifest = mf.load(target)
    assert manifest["speaker"].tolist() == ["mine/s1", "mine/s2"] and (manifest["language"] == "de").all()


def test_prepare_errors_are_clear(make_tree, tmp_path):
    root = make_tree({"a.wav": None})
    result = runner.invoke(app, ["prepare", "nosuchcorpus", str(root), "-o", str(tmp_path / "x.parquet")])
    assert result.exit_code == 1 and "unknown corpus recipe 'nosuchcorpus'" in result.output
    table = root / "labels.csv"
    table.write_text("path,label\nmissing.wav,angry\n")
    result = runner.invoke(app, ["prepare", "table", str(table), "-o", str(tmp_path / "x.parquet")])
    assert result.exit_code == 1 and "row 1" in result.output and "audio file not found" in result.output
    assert not (tmp_path / "x.parquet").exists()


def test_prepare_all_finds_ased_ogg_opus(shared_corpora, isolated_cache, tmp_path):
    """ASED is stored as Ogg Opus: prepare-all picks its folder up and the loader decodes it."""
    import soundfile as sf

    from polyemo.audio import SAMPLE_RATE, load_audio

    names = ["a5-01-01-01-01.ogg", "S4-04-02-01-29.ogg", "f2-01-01-02-15.ogg", "n1-07-01-02-53.ogg"]
    folder = tmp_path / "corpora" / "ased" / "audio"
    folder.mkdir(parents=True)
    for name in names:
        source = shared_corpora / "ased" / "audio" / name
        assert sf.info(str(source)).subtype == "OPUS"
        (folder / name).symlink_to(source)
        wave = load_audio(source)
        assert wave.dtype == np.float32 and 2.0 * SAMPLE_RATE <= len(wave) <= 4.0 * SAMPLE_RATE
        assert 0.01 < float(np.abs(wave).max()) <= 1.0
    result = runner.invoke(app, ["prepare-all", str(tmp_path / "corpora"), "-o", str(tmp_path / "all"), "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = mf.load(tmp_path / "all" / "ased.parquet")
    assert len(manifest) == 4 and (manifest["language"] == "am").all()
    assert manifest["label"].tolist() == ["sadness", "anger", "fear", "neutral"]  # sorted file names
    assert manifest["text"].isna().all()
