"""Dimensional targets: the config block, the values per source, the head + estimator, a real BAVED run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from polyemo.experiment.config import ConfigError, experiment_from_dict
from polyemo.experiment.dimensions import DimensionsSpec, dimension_targets

BAVED = {"name": "baved-dims", "corpora": ["baved"], "target": "dimensions",
         "dimensions": {"attributes": ["arousal"], "source": "arousal_level"}}
PROXY = {"attributes": ["arousal", "valence"], "source": "proxy", "proxy_source": "test table (not published norms)",
         "proxy": {"anger": {"arousal": 0.9, "valence": 0.1}, "sadness": {"arousal": 0.2, "valence": 0.1},
                   "happiness": {"arousal": 0.7, "valence": 0.9}, "neutral": {"arousal": 0.3, "valence": 0.5}}}


def test_target_dimensions_expands_to_classes_and_head():
    config = experiment_from_dict({**BAVED, "head": "dimensional"})
    assert config.target == "arousal_level" and config.dimensions.source == "arousal_level"
    assert config.head.params == {"attributes": ["arousal"], "scale": [1.0, 3.0]}
    proxy = experiment_from_dict({"corpora": ["emodb"], "target": "dimensions", "dimensions": PROXY,
                                  "head": {"name": "dimensional", "params": {"gender_weight": 1.0}}})
    assert proxy.target == "label" and proxy.head.params["scale"] == [0.1, 0.9]
    assert proxy.head.params["gender_weight"] == 1.0
    for bad, message in [({"corpora": ["emodb"], "head": "dimensional"}, "needs target: dimensions"),
                         ({**BAVED, "dimensions": {"attributes": ["valence"], "source": "arousal_level"}}, "arousal only"),
                         ({**BAVED, "dimensions": {**PROXY, "proxy_source": None}}, "proxy_source"),
                         ({**BAVED, "dimensions": None}, "needs a 'dimensions' block"),
                         ({"corpora": ["emodb"], "dimensions": PROXY}, "applies to target: dimensions")]:
        with pytest.raises(ConfigError, match=message):
            experiment_from_dict(bad)


def test_dimension_targets_per_source():
    rows = pd.DataFrame({"arousal_level": ["low", "high", None, "neutral"], "target": ["anger", "joy", "neutral", None],
                         "arousal": [1.5, np.nan, 3.0, 4.0], "valence": [2.0, 2.0, 2.0, 2.0]})
    ordinal = dimension_targets(rows, DimensionsSpec(attributes=["arousal"], source="arousal_level"))
    np.testing.assert_array_equal(ordinal[:, 0], [1, 3, np.nan, 2])
    assert np.isnan(ordinal[:, 1:]).all()
    proxy = dimension_targets(rows, DimensionsSpec(**PROXY))
    np.testing.assert_array_equal(proxy[:, 1], [0.1, np.nan, 0.5, np.nan])  # joy is not in the table
    columns = dimension_targets(rows, DimensionsSpec(attributes=["arousal", "valence"]))
    np.testing.assert_array_equal(columns[:, 0], [1.5, np.nan, 3.0, 4.0])
    assert np.isnan(columns[:, 2]).all()  # dominance is not trained


def _synthetic(n: int, seed: int):
    from polyemo.train import SplitData

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, 12)).astype(np.float32)
    arousal = 1 + 2 / (1 + np.exp(-(x[:, 1, 0] + 0.5 * x[:, 1, 1])))  # in (1, 3)
    avd = np.full((n, 3), np.nan)
    avd[:, 0] = arousal
    labels = (arousal > 2).astype(np.int64)
    gender = (x[:, 1, 3] > 0).astype(np.int64)
    return SplitData(features=x, labels=labels, gender=gender, avd=avd,
                     utt_ids=np.array([f"s{seed}/{i}" for i in range(n)]), speakers=np.array([f"s{i % 7}" for i in range(n)]))


@pytest.mark.parametrize("loss", ["ccc", "mse"])
def test_dimensional_head_learns_on_synthetic_data(loss):
    from polyemo.heads.model import HeadConfig
    from polyemo.metrics import concordance_cc
    from polyemo.train import SealedSplit, TrainConfig, build_estimator
    from polyemo.train.dimensional import DimensionalTrainer

    head = HeadConfig(name="dimensional", params={"attributes": ["arousal"], "scale": [1, 3], "dim_loss": loss,
                                                  "projection_dim": 32, "hidden_dim": 16, "dropout": 0.0,
                                                  "gender_weight": 1.0})
    estimator = build_estimator(head, TrainConfig(epochs=25, lr=0.01, batch_size=32, show_progress=False, patience=None,
                                                  sampling="undersample"), 2, ["low", "high"])
    assert isinstance(estimator, DimensionalTrainer)
    train, val, test = _synthetic(400, 0), _synthetic(120, 1), _synthetic(150, 2)
    report = estimator.fit(train, val)
    assert "val_ccc" in report.history[0] and "val_ccc_arousal" in report.history[0]
    best = max(report.history, key=lambda r: r["val_ccc"])
    assert report.best_epoch == best["epoch"]  # the epoch is chosen by validation CCC
    out = estimator.predict(SealedSplit(test).open(report.receipt))
    arousal = out.outputs["avd"][:, 0]
    assert ((arousal > 1) & (arousal < 3)).all()  # sigmoid + min-max: on the corpus scale
    np.testing.assert_allclose(out.outputs["avd"][:, 1:], 2.0)  # untrained attributes: the midpoint
    assert concordance_cc(test.avd[:, 0], arousal) > 0.8
    assert out.outputs["gender"].shape == (150, 2)
    assert ((out.outputs["gender"].argmax(1) == test.gender).mean()) > 0.8  # the auxiliary head learns too


def test_dimensions_run_on_baved_arousal_levels(tmp_path, shared_corpora, fitted_rows):
    from polyemo.experiment import run_experiment

    config = {**BAVED, "corpora_root": str(shared_corpora), "protocol": {"name": "speaker_kfold", "params": {"k": 2}},
              "encoder": {"name": "whisper-base", "layers": [3, 4]}, "normalisation": "global",
              "head": {"name": "dimensional", "params": {"projection_dim": 32, "hidden_dim": 16}},
              "training": {"epochs": 4, "lr": 0.003, "show_progress": False}, "limit": {"per_corpus": 120},
              "metrics": {"n_boot": 100}}
    result = run_experiment(config, tmp_path / "run", progress=False)
    assert result.headline.startswith("CCC pooled arousal ") and "ordinal arousal" in result.headline
    low, high = result.pooled_ci["ccc_arousal"]
    assert low <= result.pooled["ccc_arousal"] <= high
    assert {"ccc_arousal", "pearson_arousal", "mae_arousal", "mean_ccc"} <= set(result.mean_of_folds)
    table = (tmp_path / "run" / "dimensions.md").read_text()
    assert "| arousal |" in table and "ccc_arousal" in table and "PROXY" not in table
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    expected = predictions["true"].map({"low": 1.0, "neutral": 2.0, "high": 3.0})
    np.testing.assert_array_equal(predictions["true_arousal"], expected)
    assert predictions["pred_arousal"].between(1, 3).all()
    assert "pred_gender" not in predictions.columns  # no gender head in this run
    # sealed test split: every fit (fold fit and refit) is disjoint from its fold's test rows
    test_sets = [set(rows["utt_id"]) for _, rows in predictions.groupby("fold")]
    assert len(test_sets) == 2 and len(fitted_rows) >= 2
    assert all(any(not (seen & test) for test in test_sets) for seen in fitted_rows)


def test_proxy_multitask_model_bundles_and_predicts_dimensions(tmp_path, shared_corpora):
    import json

    from typer.testing import CliRunner

    from polyemo.cli import app

    table = {"anger": (0.9, 0.2, 0.7), "boredom": (0.2, 0.3, 0.4), "disgust": (0.6, 0.1, 0.5), "fear": (0.8, 0.1, 0.2),
             "happiness": (0.7, 0.9, 0.7), "neutral": (0.3, 0.5, 0.5), "sadness": (0.2, 0.1, 0.2)}
    config = {"name": "emodb-proxy", "corpora": ["emodb"], "corpora_root": str(shared_corpora), "target": "dimensions",
              "dimensions": {"source": "proxy", "proxy_source": "illustrative test table (NOT published norms)",
                             "proxy": {c: dict(zip(("arousal", "valence", "dominance"), v)) for c, v in table.items()}},
              "protocol": {"name": "speaker_kfold", "params": {"k": 2}}, "encoder": {"name": "whisper-base", "layers": [3, 4]},
              "head": {"name": "dimensional", "params": {"projection_dim": 32, "hidden_dim": 16, "class_weight": 1.0,
                                                         "gender_weight": 1.0}},
              "normalisation": "global", "training": {"epochs": 3, "lr": 0.003, "show_progress": False},
              "limit": {"per_corpus": 70}, "metrics": {"n_boot": 50}, "final_model": True}
    import yaml

    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    runner = CliRunner()
    ran = runner.invoke(app, ["run", str(tmp_path / "exp.yaml"), "-o", str(tmp_path / "run"), "--no-progress"])
    assert ran.exit_code == 0, ran.output
    assert "PROXY dimensions" in ran.output and "gender (auxiliary) accuracy" in ran.output
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert {"ccc_arousal", "ccc_valence", "ccc_dominance"} <= set(result["pooled_ci"]) and "mean_ccc" in result["pooled"]
    exported = runner.invoke(app, ["export", str(tmp_path / "run"), str(tmp_path / "bundle")])
    assert exported.exit_code == 0, exported.output
    from .conftest import HELLO

    predicted = runner.invoke(app, ["predict", str(HELLO), "-m", str(tmp_path / "bundle"), "--format", "jsonl",
                                    "--no-progress"])
    assert predicted.exit_code == 0, predicted.output
    row = json.loads(next(line for line in predicted.output.splitlines() if line.startswith("{")))
    for dim in ("arousal", "valence", "dominance"):
        assert 0.1 <= row[dim] <= 0.9  # sigmoid + min-max onto the table's range


_SMALL_DIMENSIONAL = {"protocol": {"name": "speaker_kfold", "params": {"k": 2}}, "encoder": {"name": "egemaps"},
                      "normalisation": "global",
                      "head": {"name": "dimensional", "params": {"projection_dim": 16, "hidden_dim": 8}},
                      "training": {"epochs": 2, "lr": 0.003, "show_progress": False}, "limit": {"per_corpus": 40},
                      "metrics": {"n_boot": 20}, "final_model": True}


def _run_export_predict(config: dict, tmp_path):
    """``polyemo run`` -> ``export`` -> ``predict`` of the example clip: the bundle and the clip's JSON row."""
    import json

    import yaml
    from typer.testing import CliRunner

    from polyemo.bundle import read_bundle
    from polyemo.cli import app

    from .conftest import HELLO

    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    runner = CliRunner()
    ran = runner.invoke(app, ["run", str(tmp_path / "exp.yaml"), "-o", str(tmp_path / "run"), "--no-progress"])
    assert ran.exit_code == 0, ran.output
    exported = runner.invoke(app, ["export", str(tmp_path / "run"), str(tmp_path / "bundle")])
    assert exported.exit_code == 0, exported.output
    predicted = runner.invoke(app, ["predict", str(HELLO), "-m", str(tmp_path / "bundle"), "--format", "jsonl",
                                    "--no-progress"])
    assert predicted.exit_code == 0, predicted.output
    row = json.loads(next(line for line in predicted.output.splitlines() if line.startswith("{")))
    return read_bundle(tmp_path / "bundle"), row


def test_a_model_trained_on_some_attributes_predicts_only_those(tmp_path, shared_corpora):
    config = {"name": "emodb-av", "corpora": ["emodb"], "corpora_root": str(shared_corpora), "target": "dimensions",
              "dimensions": PROXY, **_SMALL_DIMENSIONAL}
    bundle, row = _run_export_predict(config, tmp_path)
    assert bundle.dimensions == ["arousal", "valence"] and bundle.dimension_columns == [0, 1]
    assert 0.1 <= row["arousal"] <= 0.9 and 0.1 <= row["valence"] <= 0.9  # the proxy table's range
    assert "dominance" not in row  # never trained: not predicted (was the scale's midpoint)


def test_a_baved_arousal_model_bundles_and_predicts_its_level_and_arousal(tmp_path, shared_corpora):
    config = {**BAVED, "name": "baved-arousal", "corpora_root": str(shared_corpora), **_SMALL_DIMENSIONAL}
    bundle, row = _run_export_predict(config, tmp_path)
    assert bundle.labels.classes == ["low", "neutral", "high"]
    assert bundle.dimensions == ["arousal"] and bundle.dimension_columns == [0]
    assert row["label"] in ("low", "neutral", "high") and 1.0 <= row["arousal"] <= 3.0  # BAVED's level scale
    assert "valence" not in row and "dominance" not in row
