"""recipes/abhinaya.yaml shrunk (cheap encoders, a few utterances, one epoch), run as a user
runs it: ``polyemo ensemble recipes/abhinaya.yaml``; the LM members read a tiny random LM and the
manifests' text. Its members and ensembles must all finish."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from polyemo.cli import app

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "abhinaya.yaml"


def tiny_lm(folder: Path) -> Path:
    """A random two-block GPT-2 with a byte-level tokenizer trained on two sentences (offline)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer, core.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    core.train_from_iterator(["Der Lappen liegt auf dem Eisschrank.", "Kids are talking by the door."] * 4,
                             trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>", "<unk>"],
                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=16, n_layer=2, n_head=2)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_the_abhinaya_recipe_runs_shrunk(shared_corpora, tmp_path):
    recipe = yaml.safe_load(RECIPE.read_text())
    cache = str(tmp_path / "features")
    lm = tiny_lm(tmp_path / "lm")
    for part in recipe["parts"]:  # frames members read eGeMAPS LLDs, pooled ones eGeMAPS functionals
        frames = part["set"].get("features") == "frames"
        part["set"]["encoder"] = {"name": "egemaps-lld" if frames else "egemaps", "cache_dir": cache}
        if part["set"].get("features") == "lm":  # LM members: a tiny random LM, the manifests' own text
            part["set"]["head"]["params"]["lm"] = str(lm)
            part["set"]["text"]["source"] = "text"
    recipe["base"]["metrics"]["n_boot"] = 20
    shrunk = tmp_path / "abhinaya.yaml"
    shrunk.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["ensemble", str(shrunk), "-o", str(out), "--limit", "10", "--epochs", "1",
                                      "--corpora-root", str(shared_corpora), "--no-progress"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "ensembles.csv")
    assert {"S1", "S2", "T", "ST", "vote", "mean", "weighted"} <= set(table["system"])
    assert sum(s.startswith("trio.") for s in table["system"]) == 4  # every 3 of 4 members
    assert table[table["system"] == "vote"]["paired"].iloc[0] in ("includes 0", "excludes 0")
    assert (out / "ensembles" / "vote" / "report.md").is_file()
