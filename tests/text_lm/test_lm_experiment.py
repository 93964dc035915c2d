"""LM members through the experiment run path (plan, split, sealed test) on EmoDB rows."""

from __future__ import annotations

import pandas as pd
import pytest


def _config(shared_corpora, tmp_path, lm, text, head="lm_classifier", params=None, loss="vs"):
    return {"name": "lm", "corpora": ["emodb"], "corpora_root": str(shared_corpora), "labels": "big4",
            "protocol": {"name": "speaker_kfold", "params": {"k": 2}}, "encoder": {"name": "whisper-base", "layers": "all" if text.get("fusion") == "text" else [3, 5]},
            "features": "lm", "text": text, "limit": {"per_corpus": 40}, "metrics": {"n_boot": 50},
            "head": {"name": head, "params": {"lm": str(lm), "hidden_dim": 16, "attention_dim": 8, **(params or {})}},
            "loss": loss, "training": {"epochs": 2, "batch_size": 8, "show_progress": False, "selection_metric": "ua"}}


def _test_ids(run) -> list[set[str]]:
    folds = sorted(p for p in (run / "folds").iterdir() if p.is_dir())
    return [set(pd.read_csv(f / "predictions.csv")["utt_id"].astype(str)) for f in folds]


@pytest.mark.parametrize("fusion", ["text", "concat"])
def test_lm_member_runs_with_sealed_test_rows(shared_corpora, tmp_path, tiny_lms, fitted_rows, fusion):
    from polyemo.experiment import load_experiment, run_experiment
    from polyemo.experiment.inputs import load_inputs
    from polyemo.text_lm.rows import unpack_row

    config = _config(shared_corpora, tmp_path, tiny_lms["gpt2"], {"source": "text", "fusion": fusion})
    inputs = load_inputs(load_experiment(config))
    text, language, speech = unpack_row(inputs.array[0])
    assert text == inputs.manifest["text"].iloc[0] and language == "de"
    assert (speech is None) == (fusion == "text")
    if speech is not None:
        assert speech.shape == (2, 1024)  # whisper-base layers 3 and 5, mean + std
    result = run_experiment(config, tmp_path / fusion, progress=False)
    assert result.n_utterances == 40 and 0 <= result.primary <= 1
    tests = _test_ids(tmp_path / fusion)
    assert len(tests) == 2 and len(fitted_rows) == 4  # a selection fit and a refit per fold
    for i, fit in enumerate(fitted_rows):
        assert not fit & tests[i // 2], "a fit saw its fold's test rows"


def test_lm_refuses_a_normaliser(shared_corpora, tmp_path, tiny_lms):
    from polyemo.experiment import run_experiment
    from polyemo.experiment.errors import ExperimentError

    config = {**_config(shared_corpora, tmp_path, tiny_lms["gpt2"], {"source": "text", "fusion": "text"}),
              "normalisation": "global"}
    with pytest.raises((ValueError, ExperimentError), match="normalisation must be none"):
        run_experiment(config, tmp_path / "bad", progress=False)


def test_speech_text_member_on_frames(shared_corpora, tmp_path, tiny_lms):
    """fusion: cross_attention: the adapter's queries attend over one layer's frames (eGeMAPS LLDs here)."""
    from polyemo.experiment import run_experiment
    from polyemo.experiment.inputs import load_inputs
    from polyemo.experiment import load_experiment
    from polyemo.text_lm.rows import unpack_row

    config = _config(shared_corpora, tmp_path, tiny_lms["llama"], {"source": "text", "fusion": "cross_attention"},
                     params={"queries": 2})
    config["encoder"] = {"name": "egemaps-lld", "layers": [0], "cache_dir": str(tmp_path / "features")}
    config["limit"] = {"per_corpus": 24}
    inputs = load_inputs(load_experiment(config))
    _, _, speech = unpack_row(inputs.array[0])
    assert speech.shape[1] == 25 and speech.shape[0] > 50  # frames of the clip, 25 LLDs each
    result = run_experiment(config, tmp_path / "frames", progress=False)
    assert result.n_utterances == 24 and 0 <= result.primary <= 1
