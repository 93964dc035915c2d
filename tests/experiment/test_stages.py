"""The experiment's stages: the plan a run saves, and any InputProvider feeding the fit stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from polyemo.experiment.config import ExperimentConfig
from polyemo.experiment.inputs import CachedFeatures, InputProvider
from polyemo.experiment.selection import fit_on_training
from polyemo.splits import make_split

CLASSES = ["anger", "happiness", "sadness"]


def _synthetic():
    """Three languages of four speakers; layer 1 carries the class, layer 0 is noise."""
    rng = np.random.default_rng(0)
    rows, feats = [], []
    for language in ("aa", "bb", "cc"):
        for s in range(4):
            for i in range(24):
                label = CLASSES[i % 3]
                noise = rng.standard_normal((2, 3))
                feats.append(np.stack([noise[0], noise[1] + 3.0 * np.eye(3)[CLASSES.index(label)]]))
                rows.append({"utt_id": f"{language}/s{s}/{i}", "corpus": language, "language": language,
                             "speaker": f"{language}_s{s}", "gender": "f", "target": label, "label": label,
                             "content_hash": f"{language}{s}{i}"})
    return pd.DataFrame(rows), np.asarray(feats, dtype=np.float32)


def _config() -> ExperimentConfig:
    return ExperimentConfig(
        corpora=["emodb"], protocol="leave_one_language_out", encoder={"name": "egemaps", "layers": [0, 1]},
        head={"name": "logreg", "params": {"C": [0.1, 1.0]}}, normalisation="global",
        select={"candidates": [{"layers": [0]}, {"layers": [1]}], "by": "validation"}, seed=0,
    )


class PerRowInputs(InputProvider):
    """A test-only provider: inputs computed per row on request (as raw audio or text would be)."""

    def __init__(self, manifest: pd.DataFrame, lookup: dict[str, np.ndarray], layers: list[int]) -> None:
        self.manifest, self.lookup, self.layers, self.identity = manifest, lookup, layers, {"key": "per-row"}

    def split_data(self, rows, classes, masks):
        features = np.stack([self.lookup[u] for u in rows["utt_id"].astype(str)]) if len(rows) else np.zeros((0, 2, 3))
        return self._split_data(rows, features.astype(np.float32), classes, masks)


def test_a_new_input_provider_feeds_the_fit_stage_unchanged():
    manifest, features = _synthetic()
    cached = CachedFeatures(manifest, features, [0, 1])
    per_row = PerRowInputs(manifest, dict(zip(manifest["utt_id"], features)), [0, 1])
    split = make_split(manifest, "leave_one_language_out", label_column="target", seed=0)
    parts = split.frames(manifest, split.folds[0].name)
    config = _config()
    fitted = [fit_on_training(config, parts["train"], parts["validation"], inputs, CLASSES,
                              config.train_config(show_progress=False)) for inputs in (cached, per_row)]
    assert fitted[0].selection.choice == fitted[1].selection.choice == {"layers": [1]}
    test = [f.prepare(i.split_data(parts["test"], CLASSES, {}), i.layers) for f, i in zip(fitted, (cached, per_row))]
    np.testing.assert_allclose(fitted[0].estimator.predict(test[0]).probabilities,
                               fitted[1].estimator.predict(test[1]).probabilities)


def test_a_run_saves_its_plan(tiny_run):
    out = Path(tiny_run.out_dir)
    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    split = json.loads((out / "split" / "split.json").read_text(encoding="utf-8"))
    manifest = pd.read_csv(out / "manifest.csv")
    assert plan["fingerprint"] == tiny_run.fingerprint and plan["classes"] == tiny_run.classes
    assert plan["split"]["sha256"] == split["sha256"] and plan["n_rows"] == len(manifest)
    assert plan["split"]["folds"] == [f.name for f in tiny_run.folds]
    assert plan["features"]["encoder"] == tiny_run.encoder
    assert "plan.json" in tiny_run.files
