"""Nested selection: choices are made on training rows only, then the model is refitted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyemo.experiment import run_experiment
from polyemo.experiment.config import ConfigError, ExperimentConfig
from polyemo.experiment.run import FoldInputs
from polyemo.experiment.selection import SelectSpec, fit_on_training, rows_digest
from polyemo.splits import Split, make_split

CLASSES = ["anger", "happiness", "sadness"]


def _synthetic(seed: int = 0):
    """Three languages; layer 0 carries the class only in language "aa", layer 1 only in the others.

    A selection that peeks at the "aa" test fold would pick layer 0; one made on the
    training languages (bb, cc) must pick layer 1.
    """
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    for language in ("aa", "bb", "cc"):
        for s in range(4):
            for i in range(24):
                label = CLASSES[i % 3]
                k = CLASSES.index(label)
                signal = np.eye(3)[k] * 3.0
                noise = rng.standard_normal((2, 3))
                layer0 = noise[0] + (signal if language == "aa" else 0)
                layer1 = noise[1] + (signal if language != "aa" else 0)
                feats.append(np.stack([layer0, layer1]))
                rows.append({"utt_id": f"{language}/s{s}/{i}", "corpus": language, "language": language,
                             "speaker": f"{language}_s{s}", "gender": "f", "target": label, "label": label,
                             "content_hash": f"{language}{s}{i}"})
    return pd.DataFrame(rows), np.asarray(feats, dtype=np.float32)


def _config(**select) -> ExperimentConfig:
    return ExperimentConfig(
        corpora=["emodb"], protocol="leave_one_language_out", encoder={"name": "egemaps", "layers": [0, 1]},
        head={"name": "logreg", "params": {"C": [0.1, 1.0]}}, normalisation="global",
        select={"candidates": [{"layers": [0]}, {"layers": [1]}], **select}, seed=0,
    )


def test_inner_protocol_chooses_on_training_languages_only():
    manifest, features = _synthetic()
    inputs = FoldInputs(manifest, features, [0, 1])
    split = make_split(manifest, "leave_one_language_out", label_column="target", seed=0)
    fold = next(f for f in split.folds if "aa" in json.dumps(f.info) or f.name.endswith("aa"))
    parts = split.frames(manifest, fold.name)
    assert set(parts["test"]["language"]) == {"aa"}
    config = _config(by="leave_one_language_out")
    fitted = fit_on_training(config, parts["train"], parts["validation"], inputs, CLASSES,
                             config.train_config(show_progress=False))
    record = fitted.selection
    assert record is not None and record.by == "leave_one_language_out"
    assert sorted(g for groups in record.inner_test_groups for g in groups) == ["bb", "cc"]
    assert record.choice == {"layers": [1]}, record.scores  # layer 0 only helps on the test language
    assert fitted.encoder_layers == [1]
    seen = pd.concat([parts["train"], parts["validation"]])
    assert record.rows_sha256 == rows_digest(seen["utt_id"]) and record.n_rows == len(seen)
    # refit: the scored model was trained on train + validation with the chosen C
    assert fitted.refit["n_rows"] == len(seen) and fitted.refit["C"] in (0.1, 1.0)


def test_validation_choice_and_no_refit():
    manifest, features = _synthetic(1)
    inputs = FoldInputs(manifest, features, [0, 1])
    split = make_split(manifest, "leave_one_language_out", label_column="target", seed=0)
    fold = next(f for f in split.folds if f.name.endswith("aa"))
    parts = split.frames(manifest, fold.name)
    config = _config(by="validation")
    fitted = fit_on_training(config, parts["train"], parts["validation"], inputs, CLASSES,
                             config.train_config(show_progress=False, refit=False))
    assert fitted.selection.choice == {"layers": [1]}
    assert fitted.refit is None


@pytest.mark.parametrize("select, message", [
    ({"candidates": [{"layers": [0]}]}, "at least two"),
    ({"candidates": [{"seed": 1}, {"seed": 2}]}, "may set"),
    ({"by": "no_such_protocol", "candidates": [{"layers": [0]}, {"layers": [1]}]}, "split protocol"),
])
def test_select_spec_refuses_bad_input(select, message):
    with pytest.raises(ValueError, match=message):
        SelectSpec(**select)


def test_grid_expands_in_order():
    spec = SelectSpec(candidates=[{"normalisation": "none"}],
                      grid={"normalisation": ["global", "utterance"], "layers": [[2], [3]]})
    assert spec.expanded()[0] == {"normalisation": "none"}
    assert len(spec.expanded()) == 5


def test_run_with_select_never_fits_on_test_rows(shared_corpora, feature_cache, tmp_path, fitted_rows):
    """Every fit inside a nested-selection run -- inner folds, candidates, refit -- sees only
    the outer fold's training and validation rows; fold.json records the choice."""
    seen = fitted_rows
    config = {
        "name": "nested", "corpora": ["emodb"], "corpora_root": str(shared_corpora), "labels": "big4",
        "protocol": {"name": "speaker_kfold", "params": {"k": 3}},
        "encoder": {"name": "test-band-layers", "layers": [1, 2], "cache_dir": str(feature_cache)},
        "head": {"name": "logreg", "params": {"C": [0.1, 1.0]}},
        "select": {"by": "speaker_kfold", "params": {"k": 2},
                   "grid": {"layers": [[1], [2]], "normalisation": ["global", "none"]}},
        "limit": {"per_corpus": 60}, "metrics": {"n_boot": 20},
    }
    result = run_experiment(config, tmp_path / "nested", progress=False)
    out = Path(result.out_dir)
    split = Split.load(out / "split")
    # per fold: 4 candidates x 2 inner folds x (fit + refit), then the chosen setting (fit + refit)
    per_fold = 4 * 2 * 2 + 2
    assert len(seen) == 3 * per_fold
    for index, fold in enumerate(split.folds):
        for fitted in seen[per_fold * index: per_fold * (index + 1)]:
            assert not fitted & set(fold.test)
        summary = json.loads((out / "folds" / fold.name / "fold.json").read_text())
        record = summary["selection"]
        assert record["rows_sha256"] == rows_digest(fold.train + fold.validation)
        assert record["chosen"] == int(np.argmax(record["scores"]))
        assert summary["layers"] == record["candidates"][record["chosen"]]["layers"]
        assert summary["n_fit"] == len(fold.train) + len(fold.validation)


def test_candidate_layers_must_be_extracted(shared_corpora, feature_cache, tmp_path):
    from polyemo.experiment.run import ExperimentError

    config = {
        "name": "missing", "corpora": ["emodb"], "corpora_root": str(shared_corpora), "labels": "big4",
        "protocol": {"name": "speaker_kfold", "params": {"k": 3}},
        "encoder": {"name": "test-band-layers", "layers": [1], "cache_dir": str(feature_cache)},
        "head": "logreg", "select": {"candidates": [{"layers": [1]}, {"layers": [2]}]},
        "limit": {"per_corpus": 40}, "metrics": {"n_boot": 0},
    }
    with pytest.raises((ExperimentError, ConfigError), match="not extracted"):
        run_experiment(config, tmp_path / "missing", progress=False)
