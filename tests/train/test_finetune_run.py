"""Fine-tuning through the whole pipeline: experiment (plan, split, sealed test, metrics),
final model, bundle (changed tensors with their hashes), predict / polyemo.load offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    from transformers import AutoModel, WhisperConfig

    config = WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=64,
                           num_mel_bins=80, max_source_positions=1500, max_target_positions=32,
                           pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_whisper_run") / "whisper"
    AutoModel.from_config(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def finetuned_run(shared_corpora, tiny_whisper, tmp_path_factory):
    from polyemo.experiment import run_experiment

    out = tmp_path_factory.mktemp("ft_run")
    config = {
        "name": "ft-tiny", "corpora": ["emodb", "emovo"], "corpora_root": str(shared_corpora), "labels": "poleval6",
        "protocol": "leave_one_language_out", "features": "audio",
        "encoder": {"name": str(tiny_whisper), "cache_dir": str(out / "cache")},
        "head": {"name": "finetune", "params": {"method": "lora", "lora": {"rank": 2, "alpha": 4}, "standardise": True,
                                                "crop": {"train": "random", "eval": "fixed", "seconds": 1.0}}},
        "training": {"epochs": 2, "batch_size": 8, "lr": 1e-3, "refit": False, "patience": None},
        "limit": {"per_corpus": 16}, "final_model": {"name": "ft-tiny"},
    }
    result = run_experiment(config, out / "run", progress=False)
    return result, out


def test_finetuning_runs_through_the_experiment_stages(finetuned_run):
    result, out = finetuned_run
    run = out / "run"
    plan = json.loads((run / "plan.json").read_text())
    assert plan["features"]["kind"] == "audio" and plan["split"]["protocol"] == "leave_one_language_out"
    predictions = pd.read_csv(run / "predictions.csv")
    assert set(predictions["fold"]) == {"holdout_de", "holdout_it"}
    for fold in ("holdout_de", "holdout_it"):
        info = json.loads((run / "folds" / fold / "fold.json").read_text())
        held_out = fold.split("_")[1]
        # the checkpoint epoch was chosen on validation speakers of the TRAINING language
        assert info["best_epoch"] in (1, 2) and len(info["history"]) == 2 and info["refit"] is None
        assert set(predictions[predictions["fold"] == fold]["language"]) == {held_out}
        assert (run / "folds" / fold / "training_log.state" / "state.pt").is_file()
    assert 0.0 <= result.primary <= 1.0 and "macro_f1" in result.pooled
    assert (run / "final" / "estimator" / "finetune.safetensors").is_file()


def test_bundle_of_a_finetuned_model_predicts_offline(finetuned_run, shared_corpora, monkeypatch):
    import polyemo
    from polyemo.audio import load_audio
    from polyemo.bundle import read_bundle, verify_bundle
    from polyemo.experiment.export import export_run
    from polyemo.experiment.final import load_final_model
    from polyemo.train import SplitData

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, out = finetuned_run
    bundle_path = export_run(out / "run", out / "bundle")
    hashes = verify_bundle(bundle_path)
    assert "encoder.safetensors" in hashes  # the changed encoder tensors, with their SHA-256
    bundle = read_bundle(bundle_path)
    spec = bundle.config.features.finetune
    assert spec["tensors"] and all("lora_" in t or t.startswith("pool_") for t in spec["tensors"])
    assert {"pool_shift", "pool_scale"} <= set(spec["tensors"])  # the standardisation travels with the encoder

    files = sorted((shared_corpora / "emodb" / "audio").glob("*.flac"))[:3]
    recogniser = polyemo.load(bundle_path)
    got = np.array([[p.probabilities[c] for c in recogniser.classes] for p in recogniser.predict([str(f) for f in files])])
    estimator, _ = load_final_model(out / "run")
    waves = [load_audio(f)[None, :, None] for f in files]
    expected = estimator.predict(SplitData(waves)).probabilities
    np.testing.assert_allclose(got, expected, atol=1e-5)

    # a changed tensor file is refused by name
    weights = bundle_path / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(polyemo.bundle.BundleError, match="encoder.safetensors"):
        polyemo.load(bundle_path)
