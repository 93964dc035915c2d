"""The ASR stage: packaged Whisper on real speech, the transcript store, any model by path, WER."""

from __future__ import annotations

import pandas as pd
import pytest

from polyemo.encoders.asr import (
    Transcriber,
    TranscribeError,
    TranscriptStore,
    edit_distance,
    normalise_words,
    transcribe_manifest,
    word_error_rate,
)

from .conftest import HELLO, HELLO_TEXT, manifest_of


def test_word_error_rate_counts_edits():
    assert normalise_words("Hello, World!  It's me.") == ["hello", "world", "it's", "me"]
    assert edit_distance("a b c d".split(), "a x c".split()) == 2  # one substitution, one deletion
    wer, errors, words = word_error_rate(["Kids are talking by the door.", "Der Lappen liegt"],
                                         ["kids are talking by a door", "der lappen liegt auf"])
    assert (errors, words) == (2, 9) and wer == pytest.approx(2 / 9)
    with pytest.raises(ValueError):
        word_error_rate(["a"], [])


def test_whisper_transcribes_the_example_clip(whisper_transcriber):
    from polyemo.audio import load_audio

    [detected] = whisper_transcriber.transcribe([load_audio(HELLO)], [None])
    assert detected.language == "en"
    wer, _, _ = word_error_rate([HELLO_TEXT], [detected.text])
    # whisper-base hears "Palimov" for "polyemo" and spells "recognizing": 2 of 12 words
    assert wer <= 0.25, detected.text
    assert {"hello", "toolkit", "emotions", "speech"} <= set(normalise_words(detected.text))


def test_manifest_text_filled_cached_and_resumable(whisper_transcriber, shared_corpora, tmp_path):
    emodb = sorted((shared_corpora / "emodb" / "audio").glob("03a01*.flac"))[0]  # "Der Lappen liegt auf dem Eisschrank."
    manifest = manifest_of([HELLO, emodb, HELLO], [None, None, "kept as it is"], ["en", "de", "en"])
    store = TranscriptStore(tmp_path / "t.sqlite")

    calls = []
    real = whisper_transcriber.transcribe

    def failing(waves, languages):
        calls.append(len(waves))
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real(waves, languages)

    whisper_transcriber.transcribe = failing
    try:
        with pytest.raises(RuntimeError):
            transcribe_manifest(manifest, whisper_transcriber, rows="all", batch_size=1, store=store, progress=False)
    finally:
        whisper_transcriber.transcribe = real
    # the first batch was committed before the interruption: the rerun decodes only the rest
    result = transcribe_manifest(manifest, whisper_transcriber, rows="all", batch_size=1, store=store, progress=False)
    # rows 0 and 2 are the same audio: decoded once, in the first batch
    assert (result.n_rows, result.n_cached, result.n_computed) == (3, 2, 1)
    out = result.manifest
    assert word_error_rate(["Der Lappen liegt auf dem Eisschrank."], [out.at[1, "transcript"]])[0] <= 0.2
    assert out.at[0, "text"] == out.at[0, "transcript"]  # missing text filled
    assert out.at[2, "text"] == "kept as it is"  # existing text kept, transcript still written
    assert out.at[2, "transcript"] == out.at[0, "transcript"]  # same audio, same transcript
    again = transcribe_manifest(manifest, whisper_transcriber, rows="all", store=store, progress=False)
    assert (again.n_cached, again.n_computed) == (3, 0)
    assert again.manifest["transcript"].tolist() == out["transcript"].tolist()
    # rows="missing" only touches rows without text
    missing = transcribe_manifest(manifest, whisper_transcriber, rows="missing", store=store, progress=False)
    assert missing.n_rows == 2 and pd.isna(missing.manifest.at[2, "transcript"])


def test_language_modes(whisper_transcriber):
    assert whisper_transcriber.language_for("de") == "de"
    assert whisper_transcriber.language_for("am") == "am"
    assert whisper_transcriber.language_for(None) is None  # detected
    assert whisper_transcriber.language_for("xx") is None  # unknown to Whisper: detected
    with pytest.raises(ValueError, match="does not know"):
        Transcriber("whisper-base", language="klingon")


def test_any_ctc_model_by_path(tiny_ctc, shared_corpora, tmp_path):
    from polyemo.audio import load_audio

    model = Transcriber(str(tiny_ctc))
    assert model.kind == "ctc" and model.language_for("de") is None
    clip = sorted((shared_corpora / "ravdess" / "audio").glob("*.flac"))[0]
    [a, b] = model.transcribe([load_audio(clip), load_audio(HELLO)])
    assert isinstance(a.text, str) and a.language is None
    assert set(a.text) <= set("abcdefghijklmnopqrstuvwxyz' ")  # the model's vocabulary
    manifest = manifest_of([clip], [None], ["en"])
    first = transcribe_manifest(manifest, model, store=tmp_path / "s.sqlite", progress=False)
    assert first.n_computed == 1 and first.manifest.at[0, "transcript"] == a.text
    with pytest.raises(TranscribeError, match="content_hash"):
        transcribe_manifest(manifest.assign(content_hash=pd.NA), model, store=tmp_path / "s.sqlite", progress=False)


def test_cli_transcribes_a_manifest(tiny_ctc, shared_corpora, tmp_path):
    from typer.testing import CliRunner

    from polyemo import manifest as mf
    from polyemo.cli import app

    clip = sorted((shared_corpora / "savee" / "audio").glob("*.flac"))[0]
    source = mf.save(manifest_of([clip, HELLO], [None, "given"], ["en", "en"]), tmp_path / "m.parquet")[0]
    result = CliRunner().invoke(app, ["transcribe", str(source), "-o", str(tmp_path / "out.parquet"), "-m", str(tiny_ctc),
                                      "--store", str(tmp_path / "s.sqlite"), "--no-progress"])
    assert result.exit_code == 0, result.output
    out = mf.load(tmp_path / "out.parquet")
    assert out.at[1, "text"] == "given" and pd.isna(out.at[1, "transcript"])
    assert isinstance(out.at[0, "transcript"], str) and out.at[0, "text"] == out.at[0, "transcript"]
    bad = CliRunner().invoke(app, ["transcribe", str(source), "-m", str(tmp_path / "nowhere"), "--no-progress"])
    assert bad.exit_code == 1 and "nowhere" in bad.output
