"""Final models and ``polyemo export``: a tiny EmoDB run to a bundle that predicts like the run's model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyemo.experiment import load_experiment, run_experiment
from polyemo.experiment.export import ExportError, export_run, logreg_as_linear
from polyemo.experiment.final import load_final_model, read_final_info
from polyemo.heads import HeadConfig
from polyemo.train import SplitData, TrainConfig, build_estimator

CARD = {"name": "tiny-emodb", "description": "A test model.", "license": "research use",
        "limitations": "Fifty utterances."}


@pytest.fixture(scope="module")
def final_run(tiny_experiment, tmp_path_factory):
    """The tiny experiment (eGeMAPS, logreg, LOSO) with global normalisation and a final model."""
    config = {**tiny_experiment, "name": "tiny-final", "normalisation": "global", "final_model": CARD}
    out = tmp_path_factory.mktemp("export") / "run"
    return config, out, run_experiment(config, out, progress=False)


def _run_features(run: Path, info) -> tuple[pd.DataFrame, np.ndarray]:
    """The run's rows and their cached features (the layers the final model reads)."""
    from polyemo.cache import features

    manifest = pd.read_csv(run / "manifest.csv", dtype={"utt_id": str, "speaker": str, "content_hash": str})
    config = load_experiment(json.loads((run / "config.json").read_text())["config"])
    extracted = features(manifest, info.encoder, kind="pooled", cache_dir=config.encoder.cache_dir, progress=False)
    assert extracted.ok.all()
    index = [list(extracted.layers).index(layer) for layer in info.encoder_layers]
    return manifest, extracted.array[:, index]


def test_final_model_is_trained_on_every_row_and_reused(final_run, tiny_experiment):
    config, out, result = final_run
    info = read_final_info(out)
    assert info is not None and (out / "final" / "estimator" / "estimator.json").is_file()
    assert info.n_train + info.n_validation == result.n_utterances == 50
    assert 0 < info.n_validation < info.n_train and info.validation_speakers
    assert info.classes == result.classes and info.label_set["classes"] == result.classes
    assert info.corpora == ["emodb"] and info.languages == ["de"] and info.card.name == "tiny-emodb"
    assert info.identity["name"] == "egemaps" and info.encoder_layers == [0]
    # The final model does not change what the folds measure: same fingerprint as without it.
    assert load_experiment(config).fingerprint() == load_experiment(tiny_experiment | {"normalisation": "global"}).fingerprint()

    stamp = (out / "final" / "final.json").stat().st_mtime_ns
    again = run_experiment(config, out, progress=False)  # finished: returned as is, final model reused
    assert again == result and (out / "final" / "final.json").stat().st_mtime_ns == stamp


def test_logreg_converts_to_an_equal_linear_head():
    """Probabilities of the torch linear head equal scikit-learn's, for several classes and layer
    modes, a normaliser in front, and the binary case (sigmoid)."""
    rng = np.random.default_rng(0)
    for classes, mode, normalisation in ((4, "concat", "speaker"), (2, "mean", "global"), (3, 1, "none")):
        centres = rng.normal(0, 2, (classes, 3, 6))
        labels = np.arange(120) % classes
        x = (centres[labels] + rng.normal(0, 1.5, (120, 3, 6)) + 5).astype(np.float32)
        speakers = np.array([f"s{i % 6}" for i in range(120)], dtype=object)
        data = SplitData(x, labels=labels, speakers=speakers)
        train, val = data.subset(np.arange(90)), data.subset(np.arange(90, 120))
        config = TrainConfig(normalisation=normalisation, show_progress=False, speaker_min_utterances=3)
        estimator = build_estimator(HeadConfig(name="logreg", params={"C": [0.1, 1.0]}, layers=mode), config,
                                    classes, [f"c{i}" for i in range(classes)])
        estimator.fit(train, val)
        linear = logreg_as_linear(estimator)
        assert linear.model.head.linear.weight.shape[0] == classes
        expected, got = estimator.predict(val).probabilities, linear.predict(val).probabilities
        np.testing.assert_allclose(got, expected, atol=2e-6)
        assert (got.argmax(1) == expected.argmax(1)).all()


def test_svm_heads_are_refused():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 1, 4)).astype(np.float32), np.arange(40) % 2
    estimator = build_estimator(HeadConfig(name="svm_linear"), TrainConfig(show_progress=False), 2, ["a", "b"])
    estimator.fit(SplitData(x[:30], labels=y[:30]), SplitData(x[30:], labels=y[30:]))
    with pytest.raises(TypeError, match="no linear-softmax form"):
        logreg_as_linear(estimator)


def test_export_roundtrip_predicts_like_the_final_model(final_run, tmp_path):
    from polyemo.bundle import read_bundle
    from polyemo.encoders import get_encoder
    from polyemo.predict import Recogniser

    _, out, result = final_run
    bundle = export_run(out, tmp_path / "bundle")
    exported = read_bundle(bundle)  # verifies every hash
    assert exported.name == "tiny-emodb" and exported.labels.classes == result.classes
    assert exported.config.head.config["name"] == "linear" and exported.config.normalisation.mode == "global"
    assert exported.config.features.encoder == "egemaps" and exported.config.features.layers == [0]
    card = exported.card_markdown
    assert "A test model." in card and "research use" in card and "Fifty utterances." in card
    assert "Scores of run" in card
    assert "refitted on all 50 utterances" in card  # 50 rows = train + validation, refitted after the choice of C
    metrics = exported.metrics
    assert metrics["runs"]["run"]["mean_of_folds"]["ua"] == pytest.approx(result.mean_of_folds["ua"])
    assert metrics["final_model"]["n_train"] + metrics["final_model"]["n_validation"] == 50

    # The bundle on real audio gives the final model's probabilities on the cached features.
    estimator, info = load_final_model(out)
    manifest, features = _run_features(out, info)
    recogniser = Recogniser(exported, encoder=get_encoder("egemaps"))
    rows = [0, 17, 33]
    predictions = recogniser.predict([str(manifest.at[i, "path"]) for i in rows])
    expected = estimator.predict(SplitData(features[rows])).probabilities
    got = np.array([[p.probabilities[c] for c in result.classes] for p in predictions])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)

    with pytest.raises(FileExistsError):
        export_run(out, tmp_path / "bundle")
    export_run(out, tmp_path / "bundle", overwrite=True, name="renamed")
    assert read_bundle(tmp_path / "bundle").name == "renamed"


def test_export_errors_and_cli(final_run, tiny_run, tmp_path):
    from typer.testing import CliRunner

    from polyemo.cli import app

    with pytest.raises(ExportError, match="no final model.*final_model: true"):
        export_run(tiny_run.out_dir, tmp_path / "b")
    with pytest.raises(ExportError, match="no such run folder"):
        export_run(tmp_path / "missing", tmp_path / "b")

    _, out, _ = final_run
    result = CliRunner().invoke(app, ["export", str(out), str(tmp_path / "cli-bundle")])
    assert result.exit_code == 0, result.output
    assert "tiny-emodb" in result.output and (tmp_path / "cli-bundle" / "manifest.json").is_file()
    result = CliRunner().invoke(app, ["export", str(out), str(tmp_path / "cli-bundle")])
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = CliRunner().invoke(app, ["export", str(tiny_run.out_dir), str(tmp_path / "other")])
    assert result.exit_code == 2 and "no final model" in result.output
