"""Every recipe, shrunk: a few utterances per corpus, one epoch, a cheap encoder.

The recipe-test pattern of SpeechBrain: each recipe runs as a user would run it
(``polyemo bench recipes/<name>.yaml``), only with ``--limit``, ``--epochs 1`` and a cheap
encoder, and the run folders must hold every output. Pooled recipes use eGeMAPS
functionals; frame-level recipes use eGeMAPS low-level descriptors (frames).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from polyemo.cli import app

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
CELL_FILES = ("config.yaml", "config.json", "manifest.csv", "split/split.json", "predictions.csv", "metrics.json",
              "metrics.md", "metrics_confusion.png", "report.md", "result.json")

# recipe -> (cheap encoder, utterances per corpus): enough for EmoBox's speaker-fold rule
# (every class spoken by two speakers; the limit spreads rows over classes and speakers).
SHRUNK = {
    "emobox": ("egemaps", 16),
    "zero-shot": ("egemaps", 12),
    "cross-corpus": ("egemaps", 12),
    "ser-evals": ("egemaps-lld", 12),
    "attentive-speaker-norm": ("egemaps-lld", 8),
    "default-model": ("egemaps", 16),  # issue 12: six corpora, adaptation in the bundle
    "is25-mmwavlm": ("egemaps", 30),  # issue 13: 5 speaker folds of BAVED need 30 clips
    "zero-shot-augment": ("egemaps", 12),  # issue 12: augmented copies of the training clips
    "zero-shot-frames": ("egemaps-lld", 12),  # issue 12: frame-level heads, chosen by the inner protocol
    "zero-shot-frames-full": ("egemaps-lld", 12),  # issue 12: the frame MLP alone, every utterance
}


# Extra options per recipe: a cheap encoder has one layer, so layer candidates go (the
# normalisation candidates, and so the nested selection itself, stay).
EXTRA = {
    # layer-input candidates for a one-layer encoder (the recipe's are whisper-base layers)
    "zero-shot": ["--set", 'select.candidates=[{"layers": [0]}, {"layers": [0], "head": {"name": "linear", "layers": "weighted"}}]'],
    # sampling and head candidates for a one-layer encoder (the recipe's cross them with layers); the
    # grid (also the emobox part's) adds plain global and utterance normalisation
    "default-model": ["--set", 'select.candidates=[{"layers": [0], "training": {"sampling": "class_balanced"}}, '
                               '{"layers": [0], "normalisation": "utterance", "head": {"name": "logreg", "params": '
                               '{"C": [0.1, 1.0]}}}]',
                      "--set", 'select.grid={"normalisation": ["global", "utterance"]}'],
    "emobox": ["--set", 'select.grid={"head": [{"name": "logreg", "params": {"C": [0.1, 1.0]}}], '
                        '"normalisation": ["global", "utterance"]}'],
    # the reference word instead of ASR transcripts (the ASR stage is tested in tests/text)
    "is25-mmwavlm": ["--set", "text.source=text"],
    # the inner protocol chooses between training with and without the augmented copies
    # (--encoder replaces the encoder section, so the recipe's augmentation is set again)
    "zero-shot-augment": ["--set", 'encoder.augment={"copies": 1, "p": 1.0, "reverb_rt60": [0.2, 0.6]}',
                          "--set", 'select.candidates=[{"augment": null}, {"layers": [0]}]'],
}


# recipes with their own shrunk test (a fine-tuning bench, an ensemble of bench runs)
# (zero-shot-tta is not a bench but what benchmarks/zero_shot.py adds to zero-shot: read by its test)
OWN_SMOKE_TEST = {"poleval-finetune": "test_finetune_recipe.py", "abhinaya": "test_abhinaya_smoke.py",
                  "zero-shot-tta": "../train/test_domain_recipe.py",
                  "zero-shot-augment-tta": "../experiment/test_augment_run.py"}


def test_every_recipe_is_covered():
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted([*SHRUNK, *OWN_SMOKE_TEST])
    here = Path(__file__).resolve().parent
    for recipe, test in OWN_SMOKE_TEST.items():
        assert f"{recipe}.yaml" in (here / test).read_text(), (recipe, test)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("recipe-features")


def run_recipe(name: str, out: Path, corpora: Path, cache: Path) -> Path:
    encoder, limit = SHRUNK[name]
    result = CliRunner().invoke(app, [
        "bench", str(RECIPES / f"{name}.yaml"), "-o", str(out), "--limit", str(limit), "--epochs", "1",
        "--encoder", encoder, "--corpora-root", str(corpora), "--set", f"encoder.cache_dir={cache}",
        "--set", "metrics.n_boot=20", "--no-progress", *EXTRA.get(name, []),
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def check_bench(out: Path, recipe: dict) -> pd.DataFrame:
    board = pd.read_csv(out / "leaderboard.csv")
    assert (board["status"] == "ok").all(), board[["cell", "status"]]
    assert (out / "leaderboard.md").is_file() and (out / "bench.json").is_file()
    primary = recipe["primary"]
    assert list(board[f"{primary}_mean"]) == sorted(board[f"{primary}_mean"], reverse=True)
    for cell in board["cell"]:
        for name in CELL_FILES:
            assert (out / "cells" / cell / name).is_file(), f"{cell}/{name}"
    return board


@pytest.mark.parametrize("name", sorted(SHRUNK))
def test_recipe_runs_shrunk(name, shared_corpora, cache, tmp_path):
    recipe = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    out = run_recipe(name, tmp_path / name, shared_corpora, cache)
    board = check_bench(out, recipe)
    cells = {c: json.loads((out / "cells" / c / "result.json").read_text()) for c in board["cell"]}

    if name == "emobox":
        assert sorted(board["cell"]) == sorted(["emodb", "ravdess", "savee", "emovo", "urdu", "ased", "baved"])
        assert cells["baved"]["classes"] == ["low", "neutral", "high"]
        # EmoBox's published folds (a limited manifest is a subset of them); baved has none
        assert {c: cells[c]["protocol"] for c in cells} == {**{c: "emobox_official" for c in cells}, "baved": "emobox_coverage"}
        assert all(f["name"].startswith("emodb.fold_") for f in cells["emodb"]["folds"])
        assert "boredom" in cells["emodb"]["classes"] and "calm" in cells["ravdess"]["classes"]
    if name in ("zero-shot", "attentive-speaker-norm"):
        languages = ["am", "de", "en", "it", "ur"] if name == "zero-shot" else ["de", "en", "it", "ur"]  # zero-shot adds ASED
        for result in cells.values():
            assert [f["name"] for f in result["folds"]] == [f"holdout_{language}" for language in languages]
            assert result["primary_metric"] == "macro_f1"
    if name == "default-model":  # LOLO also trains the model to ship, with its adapter settings
        assert (out / "cells" / "lolo" / "final" / "final.json").is_file()
        assert (out / "cells" / "lolo" / "final" / "adaptation.json").is_file()
    if name == "is25-mmwavlm":  # dimensions + text + gender: CCC with its interval in the headline
        [result] = cells.values()
        assert result["headline"].startswith("CCC pooled arousal") and "gender (auxiliary) accuracy" in result["headline"]
        assert len(result["pooled_ci"]["ccc_arousal"]) == 2
    if name == "zero-shot-frames":  # the head is the inner protocol's choice between the two frame heads
        [result] = cells.values()
        assert [f["name"] for f in result["folds"]] == [f"holdout_{x}" for x in ["am", "de", "en", "it", "ur"]]
        resolved = json.loads((out / "cells" / board["cell"][0] / "config.json").read_text())["config"]
        assert resolved["features"] == "frames" and len(resolved["select"]["candidates"]) == 2
    if name == "zero-shot-augment":  # one store of augmented copies beside the plain features
        [result] = cells.values()
        assert len(result["folds"]) == 5
        assert len([p for p in cache.iterdir() if p.name.startswith("egemaps_augment-")]) == 1
    if name == "zero-shot":
        # test-speaker is a deployment benchmarks/zero_shot.py adds (recipes/zero-shot-tta.yaml)
        assert sorted(board["normalisation"]) == ["normalisation=enrolled-speaker", "normalisation=global"]
    if name == "attentive-speaker-norm":
        assert sorted(board["loss"]) == ["vs", "weighted_focal"]
    if name in ("ser-evals", "attentive-speaker-norm"):
        for cell in board["cell"]:
            resolved = json.loads((out / "cells" / cell / "config.json").read_text())["config"]
            assert resolved["features"] == "frames" and resolved["head"]["name"] in ("frame_mlp", "attentive_stats")
    if name in ("cross-corpus", "ser-evals"):
        assert (out / "cross_corpus.png").is_file()
        table = pd.read_csv(out / "cross_corpus.csv").set_index("train")
        corpora = ["emodb", "emovo", "ravdess", "savee", "urdu"]
        assert sorted(table.index) == corpora and sorted(table.columns) == corpora
        assert table.notna().all().all()  # every ordered pair, and in-domain on the diagonal
