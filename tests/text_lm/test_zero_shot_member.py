"""The zero-shot LM as a run member: its softmax of class log-likelihoods on the same folds, voted with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from polyemo.heads.model import HeadConfig
from polyemo.text_lm import ZeroShotConfig, ZeroShotLM
from polyemo.text_lm.rows import pack_row
from polyemo.train import SplitData, TrainConfig
from polyemo.train.estimator import build_estimator, load_estimator

PROMPT = "Emotion of {text} ({classes}):"


def rows(texts, labels):
    return SplitData([pack_row(t, "en") for t in texts], labels=np.asarray(labels))


def test_member_probabilities_are_the_softmax_of_the_scorer(tiny_lms, tmp_path):
    classes = ["negative", "positive"]
    head = HeadConfig(name="zero_shot_lm", params={"lm": str(tiny_lms["llama"]), "prompt": PROMPT})
    member = build_estimator(head, TrainConfig(show_progress=False, refit=False), 2, classes)
    texts = ["i am so happy today", "leave me alone", "what a lovely day"]
    report = member.fit(rows(texts, [1, 0, 1]), rows(texts, [1, 0, 1]))
    assert report.best_epoch is None and "ua" in report.val_metrics
    scorer = ZeroShotLM(ZeroShotConfig(model=str(tiny_lms["llama"]), prompt=PROMPT), classes)
    np.testing.assert_allclose(member.predict(rows(texts, [1, 0, 1])).probabilities, scorer.predict_proba(texts), atol=1e-6)
    again = load_estimator(member.save(tmp_path / "zs"))
    np.testing.assert_allclose(again.predict(rows(texts, [1, 0, 1])).probabilities, scorer.predict_proba(texts), atol=1e-6)


def test_calibrated_member_trains_a_linear_layer_on_the_scores(tiny_lms):
    head = HeadConfig(name="zero_shot_lm", params={"lm": str(tiny_lms["gpt2"]), "prompt": PROMPT, "calibrate": True})
    member = build_estimator(head, TrainConfig(show_progress=False, epochs=3, patience=None), 2, ["a", "b"])
    report = member.fit(rows(["i am angry", "so happy"] * 4, [0, 1] * 4), rows(["i am angry", "so happy"], [0, 1]))
    assert report.best_epoch is not None and len(report.history) == 3


def test_zero_shot_member_votes_in_an_ensemble(shared_corpora, tiny_lms, tmp_path):
    from polyemo.experiment import run_experiment
    from polyemo.experiment.ensemble import ensemble_runs

    base = {"corpora": ["emodb"], "corpora_root": str(shared_corpora), "labels": "big4",
            "protocol": {"name": "speaker_kfold", "params": {"k": 2}}, "features": "lm",
            "text": {"source": "text", "fusion": "text"}, "limit": {"per_corpus": 30}, "metrics": {"n_boot": 20},
            "training": {"refit": False, "show_progress": False, "epochs": 1, "batch_size": 8}}
    zero = {**base, "name": "zero", "head": {"name": "zero_shot_lm", "params": {"lm": str(tiny_lms["gpt2"]), "max_prompt_tokens": 100}}}
    tuned = {**base, "name": "tuned", "loss": "vs",
             "head": {"name": "lm_classifier", "params": {"lm": str(tiny_lms["gpt2"]), "hidden_dim": 8, "attention_dim": 8}}}
    speech = {**base, "name": "speech", "features": "pooled", "text": None, "encoder": {"name": "whisper-base", "layers": [4]},
              "head": {"name": "logreg", "params": {"C": 1.0}}, "normalisation": "global", "training": {"refit": False}}
    runs = []
    for config in (zero, tuned, speech):
        run_experiment(config, tmp_path / config["name"], progress=False)
        runs.append(tmp_path / config["name"])
    fold = sorted(p for p in (runs[0] / "folds").iterdir() if p.is_dir())[0]
    assert (fold / "validation_predictions.csv").exists()
    predictions = pd.read_csv(fold / "predictions.csv")
    probabilities = predictions.filter(like="p_").to_numpy()
    assert np.allclose(probabilities.sum(1), 1.0)
    result = ensemble_runs(runs, tmp_path / "vote", rule="vote", params={"tiebreak": "best-on-validation"})
    assert {"zero", "tuned", "speech"} <= set(result.members["member"])
    assert 0 <= result.result.primary <= 1
