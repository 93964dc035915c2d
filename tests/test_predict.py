"""Prediction on files, folders and lists: failures recorded, outputs, resume, speaker groups, VAD."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from polyemo.audio import load_audio
from polyemo.predict import (
    collect_inputs,
    duration_weighted_mean,
    partial_path,
    plot_timeline,
    predict_files,
    read_output,
)

sys.path.insert(0, str(Path(__file__).resolve().parent / "serve"))
import polyemo_tiny_bundle as tiny  # noqa: E402


@pytest.fixture(scope="module")
def recogniser(tmp_path_factory, shared_corpora):
    return tiny.recogniser(tiny.shared_bundle(tmp_path_factory.getbasetemp(), shared_corpora))


@pytest.fixture(scope="module")
def clips(shared_corpora) -> pd.DataFrame:
    """Six EmoDB clips of two speakers (not all of them training clips)."""
    manifest = pd.read_csv(shared_corpora / "emodb" / "manifest.csv", dtype={"speaker": str})
    picked = manifest[manifest["speaker"].isin(["08", "09"])].groupby("speaker").head(3)
    return picked.assign(path=[str(shared_corpora / "emodb" / p) for p in picked["path"]]).reset_index(drop=True)


@pytest.fixture
def folder(clips, tmp_path) -> Path:
    """speaker folders with real clips, plus one corrupt file and one non-audio file."""
    root = tmp_path / "audio"
    for row in clips.itertuples():
        target = root / f"spk{row.speaker}" / Path(row.path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(row.path, target)
    (root / "spk08" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    (root / "notes.txt").write_text("not audio")
    return root


class CountingRecogniser:
    """The real recogniser, counting the recordings it is asked to predict."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []
        self.classes, self.name = inner.classes, inner.name

    def run(self, items, **kwargs):
        self.seen += [item.source for item in items]
        return self.inner.run(items, **kwargs)


def test_folder_with_a_corrupt_file_gives_one_failure_row(recogniser, folder, tmp_path):
    out = tmp_path / "out.jsonl"
    summary = predict_files(recogniser, folder, out, show_progress=False)
    rows = read_output(out)
    assert len(rows) == summary.inputs == 7 and summary.failed == 1 and summary.predicted == 6
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and failed[0]["path"].endswith("broken.wav")
    assert "broken.wav" in failed[0]["error"] and "cannot decode" in failed[0]["error"]
    assert failed[0]["label"] is None
    for row in rows:
        if not row["error"]:
            assert row["label"] in tiny.EMOTIONS
            assert set(row["probabilities"]) == set(tiny.EMOTIONS)
            assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
            assert row["duration"] > 0.5 and row["segments"] is None
            assert row["norm_source"].startswith("training statistics (recording")
    assert not partial_path(out).exists()


def test_per_folder_groups_and_csv_output(recogniser, folder, tmp_path):
    out = tmp_path / "out.csv"
    summary = predict_files(recogniser, folder, out, speaker_norm="per-folder", show_progress=False)
    table = pd.read_csv(out)
    assert summary.speaker_norm == "per-folder" and len(table) == 7
    assert [c for c in table.columns if c.startswith("prob_")] == [f"prob_{c}" for c in tiny.EMOTIONS]
    good = table[table["error"].isna()]
    # spk08 has 3 good clips + the broken one (which never reaches the statistics), spk09 has 3.
    assert set(good["norm_source"]) == {f"folder:{folder / 'spk08'} (3 units)", f"folder:{folder / 'spk09'} (3 units)"}
    np.testing.assert_allclose(good[[f"prob_{c}" for c in tiny.EMOTIONS]].sum(axis=1), 1.0, atol=1e-4)


def test_csv_list_with_speaker_column(recogniser, clips, tmp_path):
    listing = tmp_path / "list.csv"
    shutil.copy(clips["path"][0], tmp_path / "local.flac")
    speaker = clips["speaker"][0]
    pd.DataFrame({"path": ["local.flac", *clips["path"][1:3], "missing.wav"],
                  "speaker": [speaker] * 3 + ["x"]}).to_csv(listing, index=False)
    inputs, mode = collect_inputs(listing)
    assert mode == "column" and inputs[0].group == f"speaker:{speaker}"
    assert inputs[0].path == str(tmp_path / "local.flac")  # relative to the list
    summary = predict_files(recogniser, listing, tmp_path / "out.jsonl", show_progress=False)
    rows = {r["path"]: r for r in summary.records}
    assert len(rows) == 4 and summary.failed == 1
    assert rows[str(tmp_path / "missing.wav")]["error"].endswith("file not found")
    assert rows[str(tmp_path / "local.flac")]["norm_source"] == f"speaker:{speaker} (3 units)"
    assert rows[str(tmp_path / "local.flac")]["group"] == f"speaker:{speaker}"
    bad = tmp_path / "bad.csv"
    bad.write_text("file,speaker\na.wav,1\n")
    with pytest.raises(ValueError, match="'path' column"):
        collect_inputs(bad)


def test_resume_skips_done_inputs_and_retries_failures(recogniser, folder, tmp_path):
    out = tmp_path / "out.jsonl"
    first = predict_files(recogniser, folder, out, show_progress=False)
    counting = CountingRecogniser(recogniser)
    again = predict_files(counting, folder, out, show_progress=False)
    # Only the failed recording is tried again; the output keeps one row per input.
    assert again.skipped == 6 and [Path(p).name for p in counting.seen] == ["broken.wav"]
    assert read_output(out) == first.records

    # A killed run: the output does not exist yet, the partial file holds 3 rows and a torn line.
    killed = tmp_path / "killed.csv"
    lines = [json.dumps(r) for r in first.records if not r["error"]][:3]
    partial_path(killed).write_text("\n".join(lines) + '\n{"path": "/torn', encoding="utf-8")
    counting = CountingRecogniser(recogniser)
    resumed = predict_files(counting, folder, killed, show_progress=False)
    assert resumed.skipped == 3 and len(counting.seen) == 4
    table = pd.read_csv(killed)
    assert len(table) == 7 and table["path"].is_unique and not partial_path(killed).exists()


def test_long_recording_is_segmented_and_summarised(recogniser, clips, tmp_path):
    waves = [load_audio(p) for p in clips["path"][:3]]
    gap = np.zeros(int(1.5 * 16000), dtype=np.float32)
    starts, parts, t = [], [], 0.0
    for wave in waves:
        starts.append(t)
        parts += [wave, gap]
        t += (wave.size + gap.size) / 16000
    recording = np.concatenate(parts)
    path = tmp_path / "long.flac"
    sf.write(path, recording, 16000)

    prediction = recogniser.predict(str(path), segment=True)[0]
    segments = prediction.segments
    assert len(segments) == 3
    for segment, start, wave in zip(segments, starts, waves):
        end = start + wave.size / 16000
        # Inside its clip (give or take VAD padding), covering most of it (clips have quiet edges).
        assert start - 0.2 <= segment.start < segment.end <= end + 0.2
        assert segment.end - segment.start > 0.5 * (end - start)
        assert segment.label in tiny.EMOTIONS
    # The recording is its own group: its 3 segments share statistics (>= min_utterances).
    assert prediction.norm_source == "recording (3 units)"
    probs = np.array([[s.probabilities[c] for c in tiny.EMOTIONS] for s in segments])
    expected = duration_weighted_mean(probs, np.array([s.end - s.start for s in segments]))
    np.testing.assert_allclose([prediction.probabilities[c] for c in tiny.EMOTIONS], expected, atol=1e-5)
    assert prediction.label == tiny.EMOTIONS[int(np.argmax(expected))]

    png = tmp_path / "timeline.png"
    plot_timeline(prediction, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Silence only: no speech is an error naming the input, not a made-up emotion.
    quiet = np.random.default_rng(0).normal(0, 1e-3, 16000 * 3).astype(np.float32)
    failed = recogniser.predict(quiet, segment=True, on_error="record")[0]
    assert "no speech" in failed.error and failed.label is None


def test_cli_predict(folder, tmp_path, tmp_path_factory, shared_corpora, monkeypatch):
    from typer.testing import CliRunner

    import polyemo.predict
    from polyemo.cli import app

    bundle = tiny.shared_bundle(tmp_path_factory.getbasetemp(), shared_corpora)
    # Reuse this process' encoder: the CLI path is what is tested here, not encoder loading.
    real_load = polyemo.predict.load_model
    monkeypatch.setattr(polyemo.predict, "load_model",
                        lambda path, **kw: real_load(path, encoder=tiny.encoder(), **kw))
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["predict", str(folder), "--model", str(bundle), "-o", str(out),
                                      "--segment", "--timeline", str(tmp_path / "t.png"), "--no-progress"])
    assert result.exit_code == 1, result.output  # one input failed
    assert "6 predicted, 1 failed" in result.output and "broken.wav" in result.output
    table = pd.read_csv(out)
    assert len(table) == 7 and (table["n_segments"].dropna() >= 1).all()
    assert len(list(tmp_path.glob("t-*.png"))) == 6

    result = CliRunner().invoke(app, ["predict", str(tmp_path / "nothing"), "--model", str(bundle)])
    assert result.exit_code == 2 and "no such file or folder" in result.output
    result = CliRunner().invoke(app, ["predict", str(folder), "--model", str(tmp_path / "no-bundle")])
    assert result.exit_code == 2 and "no such directory" in result.output


def test_non_finite_features_fail_that_recording_only(recogniser, clips, monkeypatch):
    """An encoder that returns NaN for one input: that input fails, the others are predicted."""
    real = recogniser._features
    poison = load_audio(clips["path"][1])

    def features(waves):
        out = real(waves)
        return [np.full_like(f, np.nan) if w.size == poison.size and np.array_equal(w, poison) else f
                for f, w in zip(out, waves)]

    monkeypatch.setattr(recogniser, "_features", features)
    predictions = recogniser.predict(list(clips["path"][:3]), on_error="record")
    assert [p.error is None for p in predictions] == [True, False, True]
    assert "NaN/inf features" in predictions[1].error and predictions[1].label is None


def test_parquet_list_with_group_column(clips, tmp_path):
    listing = tmp_path / "list.parquet"
    pd.DataFrame({"path": list(clips["path"][:3]) + ["rel.wav"], "group": ["a", "a", None, "b"]}).to_parquet(listing)
    inputs, mode = collect_inputs(listing)
    assert mode == "column"
    assert [i.group for i in inputs] == ["group:a", "group:a", None, "group:b"]
    assert inputs[3].path == str(tmp_path / "rel.wav")
    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"path": list(clips["path"][:2])}).to_parquet(plain)
    assert collect_inputs(plain)[1] == "per-recording"
    with pytest.raises(ValueError, match="plain.parquet: --speaker-norm column needs"):
        collect_inputs(plain, "column")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="broken.parquet: cannot read the list"):
        collect_inputs(broken)


def test_uploaded_bytes_are_decoded_or_refused_by_name(clips):
    from polyemo.predict import UnusableUpload, decode_upload

    wave = load_audio(clips["path"][0])
    decoded = decode_upload(tiny.wav_bytes(wave), "clip.wav", 600.0)
    assert decoded.dtype == np.float32 and decoded.shape == wave.shape
    np.testing.assert_allclose(decoded, wave, atol=1 / 16384)
    for data, seconds, code in [(b"", 600.0, "empty"), (b"garbage", 600.0, "undecodable"),
                                (tiny.wav_bytes(wave), 0.5, "too_long"),
                                (tiny.wav_bytes(np.zeros(16000, dtype=np.float32)), 600.0, "silent")]:
        with pytest.raises(UnusableUpload, match="^up.wav: ") as caught:
            decode_upload(data, "up.wav", seconds)
        assert caught.value.code == code
