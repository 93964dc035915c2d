"""End-to-end runs on a few real EmoDB utterances: outputs, determinism, resume, honesty."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from polyemo.experiment import ExperimentError, RunResult, run_experiment
from polyemo.experiment import run as run_module
from polyemo.metrics import FoldAggregate
from polyemo.splits import Split, assert_no_leakage


class SimulatedCrash(Exception):
    pass


def test_run_folder_has_every_output(tiny_run):
    out = Path(tiny_run.out_dir)
    for name in ("config.yaml", "config.json", "manifest.csv", "feature_failures.csv", "split/split.json",
                 "predictions.csv", "metrics.json", "metrics.md", "metrics_confusion.png", "report.md", "result.json"):
        assert (out / name).is_file(), name
    assert (out / "metrics_confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 50 and set(manifest["corpus"]) == {"emodb"}
    assert manifest["speaker"].nunique() == 10  # the limit spreads over speakers
    split = Split.load(out / "split")
    assert split.protocol == "loso" and len(split.folds) == 10
    assert_no_leakage(manifest, split)
    for fold in split.folds:
        assert (out / "split" / f"{fold.name}.csv").is_file()
        fold_dir = out / "folds" / fold.name
        summary = json.loads((fold_dir / "fold.json").read_text())
        assert summary["n_test"] == len(fold.test) and summary["n_validation"] == len(fold.validation) > 0
        assert (fold_dir / "predictions.csv").is_file()

    predictions = pd.read_csv(out / "predictions.csv")
    classes = tiny_run.classes
    assert list(predictions.columns) == ["utt_id", "corpus", "language", "speaker", "fold", "true", "pred"] + [f"p_{c}" for c in classes]
    # LOSO: every utterance is tested exactly once, by the fold that holds out its speaker.
    assert sorted(predictions["utt_id"]) == sorted(manifest["utt_id"])
    held_out = {f.name: f.info["test_speakers"] for f in split.folds}
    assert all(speaker in held_out[fold] for speaker, fold in zip(predictions["speaker"], predictions["fold"]))
    probabilities = predictions[[f"p_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert (np.array(classes)[probabilities.argmax(axis=1)] == predictions["pred"]).all()

    metrics = FoldAggregate.from_json(out / "metrics.json")
    assert metrics.fold_names == [f.name for f in split.folds]
    assert set(metrics.mean_of_folds) == {"ua", "wa", "macro_f1"}
    assert set(metrics.pooled.ci) == {"ua", "wa", "macro_f1"}
    assert metrics.pooled.ci["ua"].unit == "group"  # speakers resampled
    ua = (predictions["true"] == predictions["pred"]).groupby(predictions["true"]).mean().mean()
    assert metrics.pooled.ua == pytest.approx(ua)
    assert tiny_run.pooled["ua"] == pytest.approx(ua)
    assert tiny_run.primary == pytest.approx(np.mean([f.ua for f in tiny_run.folds]))
    assert 0.0 <= tiny_run.pooled_ci["ua"][0] <= ua <= tiny_run.pooled_ci["ua"][1] <= 1.0

    report = (out / "report.md").read_text()
    assert "# tiny" in report and "mean_of_folds" in report and "pooled" in report and "metrics_confusion.png" in report
    assert RunResult.load(out) == tiny_run
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["encoder"]["name"] == "egemaps" and config["fingerprint"] == tiny_run.fingerprint


def test_same_seed_same_numbers(tiny_experiment, tiny_run, tmp_path):
    again = run_experiment(tiny_experiment, tmp_path / "again", progress=False)
    first, second = Path(tiny_run.out_dir), Path(again.out_dir)
    assert (first / "metrics.json").read_text() == (second / "metrics.json").read_text()
    assert (first / "predictions.csv").read_text() == (second / "predictions.csv").read_text()
    assert (first / "split" / "split.json").read_text() == (second / "split" / "split.json").read_text()


def test_interrupted_run_resumes_skipping_finished_folds(tiny_experiment, tiny_run, tmp_path, monkeypatch):
    out = tmp_path / "resumed"
    real_run_fold = run_module.run_fold
    calls: list[str] = []
    armed = [True]

    def crash_on_fourth(config, fold, *args, **kwargs):
        calls.append(fold.name)
        if armed[0] and len(calls) == 4:
            armed[0] = False
            raise SimulatedCrash("the machine went down")
        return real_run_fold(config, fold, *args, **kwargs)

    monkeypatch.setattr(run_module, "run_fold", crash_on_fourth)
    with pytest.raises(SimulatedCrash):
        run_experiment(tiny_experiment, out, progress=False)
    finished = sorted(p.parent.name for p in (out / "folds").glob("*/fold.json"))
    assert len(finished) == 3 and not (out / "result.json").exists()
    stamps = {name: os.stat(out / "folds" / name / "fold.json").st_mtime_ns for name in finished}

    calls.clear()
    result = run_experiment(tiny_experiment, out, progress=False)
    assert len(calls) == 7 and not set(calls) & set(finished)  # only the missing folds ran
    assert {name: os.stat(out / "folds" / name / "fold.json").st_mtime_ns for name in finished} == stamps
    # Resuming changes nothing: the numbers are those of the uninterrupted run.
    assert (out / "metrics.json").read_text() == (Path(tiny_run.out_dir) / "metrics.json").read_text()

    calls.clear()
    assert run_experiment(tiny_experiment, out, progress=False) == result  # finished: returned as it is
    assert calls == []


def test_refuses_to_mix_configurations(tiny_experiment, tiny_run):
    changed = {**tiny_experiment, "seed": 4}
    with pytest.raises(ExperimentError, match="different configuration"):
        run_experiment(changed, tiny_run.out_dir, progress=False)


def test_layer_choice_and_training_never_see_test_rows(shared_corpora, feature_cache, tmp_path, fitted_rows):
    seen = fitted_rows
    config = {
        "name": "layers", "corpora": ["emodb"], "corpora_root": str(shared_corpora),
        "protocol": {"name": "speaker_kfold", "params": {"k": 3}},
        "encoder": {"name": "test-band-layers", "layers": "best-on-validation", "cache_dir": str(feature_cache)},
        "head": {"name": "logreg"}, "limit": {"per_corpus": 60}, "metrics": {"n_boot": 20},
    }
    result = run_experiment(config, tmp_path / "layers", progress=False)
    out = Path(result.out_dir)
    split = Split.load(out / "split")
    # per fold: one fit per layer, then the chosen layer, then its refit on train + validation
    assert len(seen) == 3 * (3 + 2)
    for index, fold in enumerate(split.folds):
        fits = seen[5 * index: 5 * index + 5]
        for fitted in fits:
            assert not fitted & set(fold.test)
        assert fits[-1] == set(fold.train) | set(fold.validation)  # the refit uses every non-test row
        summary = json.loads((out / "folds" / fold.name / "fold.json").read_text())
        scores = {int(k): v for k, v in summary["layer_scores"].items()}
        assert set(scores) == {0, 1, 2}
        assert summary["selected_layer"] == max(scores, key=lambda k: (scores[k], -k))
    assert (out / "layer_selection.png").is_file()
    assert all(f.selected_layer in (0, 1, 2) for f in result.folds)


def test_learned_layer_weights_are_plotted(shared_corpora, feature_cache, tmp_path):
    config = {
        "name": "weights", "corpora": ["emodb"], "corpora_root": str(shared_corpora),
        "protocol": {"name": "speaker_kfold", "params": {"k": 2}},
        "encoder": {"name": "test-band-layers", "cache_dir": str(feature_cache)},
        "head": {"name": "linear", "layers": "weighted"}, "normalisation": "global",
        "training": {"epochs": 2, "batch_size": 16}, "limit": {"per_corpus": 60}, "metrics": {"n_boot": 20},
    }
    result = run_experiment(config, tmp_path / "weights", progress=False)
    out = Path(result.out_dir)
    assert (out / "layer_weights.png").is_file()
    for fold in result.folds:
        summary = json.loads((out / "folds" / fold.name / "fold.json").read_text())
        assert len(summary["layer_weights"]) == 3 and sum(summary["layer_weights"]) == pytest.approx(1.0)
        assert summary["best_epoch"] in (1, 2) and (out / "folds" / fold.name / "training_log.jsonl").is_file()
    assert "layer_weights.png" in (out / "report.md").read_text()


def test_arousal_target_and_class_masks_across_corpora(shared_corpora, feature_cache, tmp_path):
    config = {
        "name": "arousal", "corpora": ["baved"], "corpora_root": str(shared_corpora), "target": "arousal_level",
        "protocol": {"name": "speaker_kfold", "params": {"k": 2}},
        "encoder": {"name": "egemaps", "cache_dir": str(feature_cache)}, "head": "logreg",
        "limit": {"per_corpus": 40}, "metrics": {"n_boot": 20},
    }
    result = run_experiment(config, tmp_path / "arousal", progress=False)
    assert result.classes == ["low", "neutral", "high"]
    predictions = pd.read_csv(Path(result.out_dir) / "predictions.csv")
    assert set(predictions["true"]) <= {"low", "neutral", "high"}


def test_zero_shot_language_folds_and_unseen_classes(shared_corpora, feature_cache, tmp_path):
    config = {
        "name": "lolo", "corpora": ["emodb", "urdu", "emovo"], "corpora_root": str(shared_corpora),
        "labels": "poleval6", "protocol": "leave_one_language_out",
        "encoder": {"name": "egemaps", "cache_dir": str(feature_cache)},
        "head": {"name": "linear"}, "normalisation": "speaker", "training": {"epochs": 2},
        "limit": {"per_corpus": 36}, "metrics": {"n_boot": 20, "primary": "macro_f1"},
    }
    result = run_experiment(config, tmp_path / "lolo", progress=False)
    assert [f.name for f in result.folds] == ["holdout_de", "holdout_it", "holdout_ur"]
    assert result.primary_metric == "macro_f1" and set(result.by_corpus) == {"emodb", "emovo", "urdu"}
    out = Path(result.out_dir)
    manifest = pd.read_csv(out / "manifest.csv")
    language_of = dict(zip(manifest["utt_id"], manifest["language"]))
    split = Split.load(out / "split")
    predictions = pd.read_csv(out / "predictions.csv")
    for fold in split.folds:
        target = fold.info["target"]
        assert {language_of[u] for u in fold.train + fold.validation}.isdisjoint({target})
        assert set(predictions.loc[predictions["fold"] == fold.name, "language"]) == {target}
    # Neither German nor Urdu has surprise: the Italian fold cannot learn it, so its
    # surprise rows are not tested, and its model has no surprise class.
    fold_it = json.loads((out / "folds" / "holdout_it" / "fold.json").read_text())
    assert "surprise" not in fold_it["classes"]
    assert "surprise" not in set(predictions.loc[predictions["fold"] == "holdout_it", "true"])
    assert "surprise" in set(manifest.loc[manifest["language"] == "it", "target"])


def test_class_masks_come_from_each_corpus_training_rows():
    rows = pd.DataFrame({"corpus": ["urdu", "urdu", "emovo", "emovo"],
                         "target": ["anger", "sadness", "anger", "surprise"]})
    masks = run_module.fold_class_masks(rows, ["anger", "sadness", "surprise"])
    assert masks["urdu"].tolist() == [True, True, False]
    assert masks["emovo"].tolist() == [True, False, True]
