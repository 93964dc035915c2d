"""Ensemble bundles: members' bundles + the fitted rule; predict / polyemo.load use them offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from polyemo.cli import app


@pytest.fixture(scope="module")
def torch_members(member_base, tmp_path_factory) -> dict[str, Path]:
    """Two torch heads on eGeMAPS (bundles need torch heads), each with its final model."""
    from polyemo.experiment import run_experiment

    root = tmp_path_factory.mktemp("torch-members")
    losses = {"wfl": {"name": "weighted_focal", "params": {"gamma": 2.0}}, "vs": {"name": "vs", "params": {"gamma": 0.2}}}
    runs = {}
    for name, loss in losses.items():
        config = {**member_base, "name": f"torch-{name}", "head": "linear", "loss": loss, "normalisation": "global",
                  "training": {"epochs": 6, "lr": 0.01, "refit": False}, "final_model": True}
        run_experiment(config, root / name, progress=False)
        runs[name] = root / name
    return runs


@pytest.fixture(scope="module")
def ensemble_bundle(torch_members, tmp_path_factory) -> Path:
    from polyemo.experiment.ensemble import ensemble_runs

    root = tmp_path_factory.mktemp("ensemble-bundle")
    ensemble_runs([torch_members["wfl"], torch_members["vs"]], root / "ens", rule="weighted", names=["wfl", "vs"],
                  name="tiny-ensemble")
    result = CliRunner().invoke(app, ["ensemble-export", str(root / "ens"), str(root / "bundle")])
    assert result.exit_code == 0, result.output
    return root / "bundle"


def emodb_files(shared_corpora: Path, n: int) -> list[str]:
    manifest = pd.read_csv(shared_corpora / "emodb" / "manifest.csv")
    column = "path" if "path" in manifest else manifest.columns[0]
    paths = [Path(p) if Path(p).is_absolute() else shared_corpora / "emodb" / p for p in manifest[column][:n]]
    return [str(p) for p in paths]


def test_the_bundle_holds_members_rule_and_card(ensemble_bundle):
    from polyemo.bundle import read_ensemble_bundle

    bundle = read_ensemble_bundle(ensemble_bundle)
    assert list(bundle.members) == ["wfl", "vs"] and bundle.rule["rule"] == "weighted"
    weights = bundle.rule["learned"]["weights"]
    assert sum(weights.values()) == pytest.approx(1.0)
    card = bundle.card_markdown
    assert "| wfl |" in card and "| vs |" in card and "`weighted`" in card and "ua" in card
    assert bundle.info["members"][0]["scores"]["ua"] > 0


def test_a_modified_file_is_refused(ensemble_bundle, tmp_path):
    import shutil

    from polyemo.bundle import BundleError
    from polyemo.predict import load_model

    copy = tmp_path / "copy"
    shutil.copytree(ensemble_bundle, copy)
    config = json.loads((copy / "ensemble.json").read_text())
    config["rule"]["learned"]["weights"] = {"wfl": 1.0, "vs": 0.0}
    (copy / "ensemble.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="ensemble.json: SHA-256 mismatch"):
        load_model(copy)


def test_load_predicts_the_rule_of_the_members_and_encodes_once(ensemble_bundle, shared_corpora):
    import polyemo
    from polyemo.ensemble import load_rule
    from polyemo.predict import load_model

    from polyemo.encoders import get_encoder

    files = emodb_files(shared_corpora, 5)
    egemaps = get_encoder("egemaps")  # egemaps takes no precision (the engine would pass one)
    model = polyemo.load(ensemble_bundle, encoder=egemaps)
    predictions = model.predict(files)
    assert all(p.ok for p in predictions)
    (encoder,) = model.encoders.values()  # both members read eGeMAPS: one shared encoder
    assert encoder.computed == len(files)
    rule = load_rule(model.bundle.rule)
    alone = [load_model(ensemble_bundle / "members" / name, encoder=egemaps).predict(files) for name in ("wfl", "vs")]
    for i, prediction in enumerate(predictions):
        vectors = [np.array([[p[i].probabilities[c] for c in model.classes]]) for p in alone]
        expected = rule.combine(vectors)
        assert prediction.label == model.classes[int(expected.predictions[0])]
        assert np.allclose([prediction.probabilities[c] for c in model.classes], expected.probabilities[0], atol=1e-5)
    description = model.describe()
    assert description["ensemble"] and len(description["members"]) == 2 and description["shared_encoders"] == 1


def test_polyemo_predict_uses_the_ensemble_bundle(ensemble_bundle, shared_corpora, tmp_path, monkeypatch):
    from polyemo.encoders import get_encoder
    from polyemo.predict import engine

    # egemaps takes no precision argument: load it without one (what a neural encoder gets is tested elsewhere)
    monkeypatch.setattr(engine, "_load_encoder", lambda bundle, precision=None: get_encoder(bundle.config.features.encoder))
    files = emodb_files(shared_corpora, 3)
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(files) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["predict", str(listing), "-m", str(ensemble_bundle), "-o", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["label"] in r["probabilities"] for r in rows)
