"""Speech + text inputs in experiments: transcripts -> text features -> fusion, end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from polyemo.experiment.text_spec import TextSpec

from .conftest import HELLO, manifest_of


def _config(shared_corpora, tmp_path, text):
    return {"name": "speech-text", "corpora": ["emodb"], "corpora_root": str(shared_corpora), "labels": "ekman7",
            "protocol": {"name": "speaker_kfold", "params": {"k": 2}}, "encoder": {"name": "whisper-base", "layers": [4]},
            "head": {"name": "logreg", "params": {"C": 1.0}}, "normalisation": "global", "limit": {"per_corpus": 70},
            "metrics": {"n_boot": 50}, "text": {**text, "cache_dir": str(tmp_path / "text-cache")}}


def test_concat_and_text_only_fusion_on_emodb(shared_corpora, tmp_path, fitted_rows):
    from polyemo.experiment import load_experiment, run_experiment
    from polyemo.experiment.inputs import load_inputs

    concat = _config(shared_corpora, tmp_path, {"source": "text", "encoder": "whisper-decoder", "fusion": "concat"})
    inputs = load_inputs(load_experiment(concat))
    assert inputs.array.shape == (70, 1, 1024 + 512)  # whisper-base layer 4 mean+std, decoder's last layer
    assert inputs.identity["text"]["name"] == "whisper-decoder:whisper-base"
    # the text part: identical sentences get identical vectors, different sentences differ
    text_part = inputs.array[:, 0, 1024:]
    sentence = inputs.manifest["text"].astype(str).to_numpy()
    same = np.flatnonzero(sentence == sentence[0])
    other = np.flatnonzero(sentence != sentence[0])
    assert len(same) > 1 and len(other)
    np.testing.assert_allclose(text_part[same], np.repeat(text_part[same[:1]], len(same), 0), atol=1e-6)
    assert not np.allclose(text_part[same[0]], text_part[other[0]])
    result = run_experiment(concat, tmp_path / "concat", progress=False)
    assert 0 <= result.primary <= 1 and result.n_utterances == 70

    text_only = _config(shared_corpora, tmp_path, {"source": "text", "encoder": "whisper-decoder", "fusion": "text"})
    alone = load_inputs(load_experiment(text_only))
    assert alone.array.shape == (70, 1, 512)
    np.testing.assert_allclose(alone.array[:, 0], text_part, atol=1e-6)
    assert alone.identity["key"] != inputs.identity["key"]


def test_transcript_source_uses_the_asr_stage(whisper_transcriber, shared_corpora, tmp_path, monkeypatch):
    from polyemo.experiment import text_inputs

    emodb = sorted((shared_corpora / "emodb" / "audio").glob("03a01*.flac"))[0]
    manifest = manifest_of([HELLO, emodb], [None, "a01: Der Lappen liegt auf dem Eisschrank."], ["en", "de"])
    # reuse the session's loaded Whisper instead of loading a second one
    monkeypatch.setitem(text_inputs._TEXT, '["asr", {"beams": 1, "language": "manifest", "model": "whisper-base"}]',
                        whisper_transcriber)
    spec = TextSpec(source="transcript", asr={"store": tmp_path / "t.sqlite"})
    texts, rows = text_inputs.row_texts(manifest, spec, progress=False)
    assert "hello" in texts[0].lower() and "lappen" in texts[1].lower()
    assert rows["transcript"].tolist() == texts
    assert rows.at[1, "text"].startswith("a01:")  # the reference text is kept; the transcript is the ASR's
    reference, _ = text_inputs.row_texts(manifest, TextSpec(source="text"), progress=False)
    assert reference[1].startswith("a01:") and reference[0] == ""


def test_pick_layer():
    from polyemo.experiment.errors import ExperimentError
    from polyemo.experiment.text_inputs import pick_layer

    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(pick_layer(x, "last"), x[:, 2])
    np.testing.assert_array_equal(pick_layer(x, "mean"), x.mean(1))
    np.testing.assert_array_equal(pick_layer(x, 0), x[:, 0])
    with pytest.raises(ExperimentError, match="out of range"):
        pick_layer(x, 3)


def test_cross_attention_head_reads_its_text_slots():
    import torch

    from polyemo.heads.fusion import CrossAttentionFusionHead
    from polyemo.experiment.text_inputs import frames_with_tokens

    torch.manual_seed(0)
    speech = [np.random.default_rng(i).normal(size=(2, n, 6)).astype(np.float32) for i, n in enumerate((9, 5))]
    tokens = [np.random.default_rng(10 + i).normal(size=(3, n, 4)).astype(np.float16) for i, n in enumerate((2, 7))]
    rows = frames_with_tokens(speech, tokens, "last", slots=4)
    assert [r.shape for r in rows] == [(2, 13, 10), (2, 9, 10)]
    np.testing.assert_array_equal(rows[0][:, :9, :6], speech[0])
    np.testing.assert_array_equal(rows[0][0, 9:11, 6:], tokens[0][-1].astype(np.float32))
    assert not rows[0][:, 11:].any()  # unused slots are zero (masked by the head)
    np.testing.assert_array_equal(rows[1][1, 5:9, 6:], tokens[1][-1][:4].astype(np.float32))  # cut to 4 slots

    head = CrossAttentionFusionHead(10, 3, speech_dim=6, text_tokens=4, dim=8, heads=2, hidden_dim=8, dropout=0.0).eval()
    x = torch.zeros(2, 13, 10)
    for b, r in enumerate(rows):
        x[b, : r.shape[1]] = torch.from_numpy(r[0])
    lengths = torch.tensor([13, 9])
    speech_part, speech_lengths, text, real = head.split_inputs(x, lengths)
    assert speech_lengths.tolist() == [9, 5] and real.tolist() == [[True, True, False, False], [True] * 4]
    out = head(x, lengths)["emotion"]
    assert out.shape == (2, 3)
    changed = x.clone()
    changed[0, 9, 6:] += 1.0  # another token: a different prediction
    assert not torch.allclose(head(changed, lengths)["emotion"][0], out[0])
    padded = torch.cat([x, torch.full((2, 3, 10), 7.0)], dim=1)  # batch padding beyond the lengths changes nothing
    torch.testing.assert_close(head(padded, lengths)["emotion"], out)


def test_cross_attention_fusion_run(shared_corpora, tmp_path):
    from polyemo.experiment import run_experiment

    config = _config(shared_corpora, tmp_path, {"source": "text", "encoder": "whisper-decoder", "fusion": "cross_attention",
                                                "tokens": 24})
    config.update({"encoder": {"name": "egemaps-lld", "cache_dir": str(tmp_path / "features")}, "features": "frames",
                   "normalisation": "none", "limit": {"per_corpus": 40},
                   "head": {"name": "cross_attention", "params": {"speech_dim": 25, "text_tokens": 24, "dim": 32}},
                   "training": {"epochs": 2, "show_progress": False}})
    result = run_experiment(config, tmp_path / "xattn", progress=False)
    assert result.n_utterances == 40 and 0 <= result.primary <= 1
