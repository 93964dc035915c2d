"""recipes/poleval-finetune.yaml, shrunk: every part (seed, LoRA, frozen front-end, random
crops, CPU top block, frozen probe) runs as a user runs it, with a tiny random Whisper (four
blocks: cpu-top-block reads hidden state 3), two corpora, a few clips and one epoch; every run
folder holds every output."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
import yaml
from typer.testing import CliRunner

from polyemo.cli import app

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "poleval-finetune.yaml"
CELL_FILES = ("config.json", "plan.json", "split/split.json", "predictions.csv", "metrics.json", "report.md",
              "result.json")


def test_poleval_finetune_recipe_runs_shrunk(shared_corpora, tmp_path):
    from transformers import AutoModel, WhisperConfig

    torch.manual_seed(0)
    tiny = tmp_path / "whisper"
    AutoModel.from_config(WhisperConfig(
        d_model=16, encoder_layers=4, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=64, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=1, decoder_start_token_id=2,
    )).save_pretrained(tiny)
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, [
        "bench", str(RECIPE), "-o", str(out), "--limit", "10", "--epochs", "1", "--encoder", str(tiny),
        "--corpora-root", str(shared_corpora), "--set", 'corpora=["emodb", "emovo"]',
        "--set", f"encoder.cache_dir={tmp_path / 'cache'}", "--set", "metrics.n_boot=20",
        "--set", "training.batch_size=4", "--set", "training.grad_accum=1", "--no-progress",
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    board = pd.read_csv(out / "leaderboard.csv")
    recipe = yaml.safe_load(RECIPE.read_text())
    assert sorted(board["cell"]) == sorted(p["name"] for p in recipe["parts"])
    assert (board["status"] == "ok").all(), board[["cell", "status"]]
    for cell in board["cell"]:
        for name in CELL_FILES:
            assert (out / "cells" / cell / name).is_file(), f"{cell}/{name}"
        run = json.loads((out / "cells" / cell / "result.json").read_text())
        assert [f["name"] for f in run["folds"]] == ["holdout_de", "holdout_it"]
        config = json.loads((out / "cells" / cell / "config.json").read_text())["config"]
        assert config["features"] == ("pooled" if cell == "frozen-probe" else "audio")
