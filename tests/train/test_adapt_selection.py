"""Adaptation strength is chosen by the inner leave-one-language-out over the TRAINING
languages: no fit and no adapted batch ever holds a row of the held-out language, and the
choice follows what the training languages show."""

from __future__ import annotations

import numpy as np
import pandas as pd

from polyemo.experiment.config import ExperimentConfig
from polyemo.experiment.run import FoldInputs
from polyemo.experiment.selection import choose_adaptation, rows_digest
from polyemo.splits import make_split
from polyemo.train import estimator as estimator_module
from polyemo.train.adaptation.prior_em import PriorEM

CLASSES = ["anger", "happiness", "sadness"]


def _languages(shares: dict[str, list[float]], seed: int = 0, sep: float = 1.2):
    """One corpus per language, 4 speakers each; ``shares``: each language's class shares."""
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    for language, share in shares.items():
        counts = np.round(np.asarray(share) * 120).astype(int)
        labels = np.repeat(np.arange(3), counts)
        for i, k in enumerate(rng.permutation(labels)):
            x = rng.standard_normal(3) + sep * np.eye(3)[k]
            feats.append(x[None])
            s = i % 4
            rows.append({"utt_id": f"{language}/s{s}/{i}", "corpus": language, "language": language,
                         "speaker": f"{language}/s{s}", "gender": "f", "target": CLASSES[k], "label": CLASSES[k],
                         "content_hash": f"{language}{i}"})
    return pd.DataFrame(rows), np.asarray(feats, dtype=np.float32)


def _config() -> ExperimentConfig:
    return ExperimentConfig(corpora=["emodb"], protocol="leave_one_language_out",
                            encoder={"name": "egemaps", "layers": [0]}, head={"name": "logreg", "params": {"C": 1.0}},
                            normalisation="global", seed=0)


OPTIONS = {"prior-em": [{"strength": 0.0}, {"strength": 1.0, "floor": 0.0}]}


def _outer(shares):
    manifest, features = _languages(shares)
    inputs = FoldInputs(manifest, features, [0])
    split = make_split(manifest, "leave_one_language_out", label_column="target", seed=0)
    fold = next(f for f in split.folds if f.name.endswith("aa"))
    return inputs, split.frames(manifest, fold.name)


def test_no_fit_and_no_adapted_batch_sees_the_held_out_language(monkeypatch):
    inputs, parts = _outer({"aa": [1 / 3] * 3, "bb": [0.7, 0.2, 0.1], "cc": [0.1, 0.2, 0.7], "dd": [0.2, 0.7, 0.1]})
    fitted, adapted = [], []
    real_fit, real_adapt = estimator_module.Estimator.fit, PriorEM.adapt
    monkeypatch.setattr(estimator_module.Estimator, "fit",
                        lambda self, t, v: (fitted.append(set(t.utt_ids) | set(v.utt_ids)), real_fit(self, t, v))[1])
    monkeypatch.setattr(PriorEM, "adapt",
                        lambda self, e, b, p: (adapted.append(set(b.utt_ids)), real_adapt(self, e, b, p))[1])
    held_out = set(parts["test"]["utt_id"])
    records = choose_adaptation(_config(), parts["train"], parts["validation"], inputs, CLASSES, OPTIONS)
    assert fitted and adapted
    assert not any(rows & held_out for rows in fitted + adapted)
    record = records["prior-em"]
    assert sorted(g for groups in record.inner_test_groups for g in groups) == ["bb", "cc", "dd"]
    seen = pd.concat([parts["train"], parts["validation"]])
    assert record.rows_sha256 == rows_digest(seen["utt_id"]) and record.n_rows == len(seen)


def test_the_choice_follows_the_training_languages():
    # Training languages with shifted class priors: EM helps there, so strength 1 is chosen,
    # although the held-out language (balanced) would not need it.
    inputs, parts = _outer({"aa": [1 / 3] * 3, "bb": [0.8, 0.1, 0.1], "cc": [0.1, 0.1, 0.8], "dd": [0.1, 0.8, 0.1]})
    record = choose_adaptation(_config(), parts["train"], parts["validation"], inputs, CLASSES, OPTIONS)["prior-em"]
    assert record.chosen == 1 and record.scores[1] > record.scores[0], record.scores
