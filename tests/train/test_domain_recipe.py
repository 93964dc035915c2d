"""The zero-shot recipe trains on every categorical corpus, ASED (Amharic) included, and
leaves each of the five languages out in turn; its choices go through the inner protocol."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from polyemo.experiment.grid import load_bench
from polyemo.labels import label_set

REPO = Path(__file__).resolve().parents[2]


def test_recipe_names_all_categorical_corpora_and_chooses_by_the_inner_protocol():
    bench, cells = load_bench(REPO / "recipes" / "zero-shot.yaml")
    base = bench.base
    assert set(base["corpora"]) == {"emodb", "ravdess", "savee", "emovo", "urdu", "ased"}
    assert base["protocol"] == "leave_one_language_out" and base["labels"] == "poleval6"
    assert base["select"]["by"] == "leave_one_language_out"
    tta = yaml.safe_load((REPO / "recipes" / "zero-shot-tta.yaml").read_text())
    assert tta["domain_generalisation"][0] == {"normalisation": "global"}  # the plain baseline, first
    for options in tta["adaptation"].values():
        assert options[0] == {"strength": 0.0}  # ties keep the plain prediction
    assert [c.config.normalisation for c in cells] == ["global", "enrolled-speaker"]
    assert all(c.config.select is not None and len(c.config.select.expanded()) >= 3 for c in cells)


def test_five_language_folds_on_the_real_manifests(prepared_manifest):
    from polyemo.splits import make_split

    corpora = ["emodb", "ravdess", "savee", "emovo", "urdu", "ased"]
    manifest = pd.concat([prepared_manifest(c) for c in corpora], ignore_index=True)
    poleval = label_set("poleval6")
    manifest["target"] = poleval.map_series(manifest["label"])
    manifest = manifest[manifest["target"].notna()]
    split = make_split(manifest, "leave_one_language_out", label_column="target", seed=0)
    assert sorted(f.info["target"] for f in split.folds) == ["am", "de", "en", "it", "ur"]
    am = next(f for f in split.folds if f.info["target"] == "am")
    parts = split.frames(manifest, am.name)
    assert set(parts["test"]["corpus"]) == {"ased"} and len(parts["test"]) == 2474
    assert "ased" not in set(parts["train"]["corpus"]) | set(parts["validation"]["corpus"])
    assert sorted(parts["test"]["target"].unique()) == ["anger", "fear", "happiness", "neutral", "sadness"]


def test_frame_recipe_adapters_need_only_probabilities():
    """recipes/zero-shot-frames-tta.yaml lists adapters that re-weight probabilities (a frame
    head has no pooled normalisation for tent or adabn to move): each adapts with no estimator
    and no features, strength 0 first (ties keep the plain prediction)."""
    import numpy as np

    from polyemo.train.adaptation import make_adapter

    tta = yaml.safe_load((REPO / "recipes" / "zero-shot-frames-tta.yaml").read_text())
    assert set(tta) == {"adaptation"} and sorted(tta["adaptation"]) == ["prior-em", "uniform-prior"]
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(6) * 0.5, size=40) * np.array([4, 1, 1, 1, 1, 1])
    probabilities /= probabilities.sum(1, keepdims=True)  # a batch leaning to class 0
    for name, options in tta["adaptation"].items():
        assert options[0] == {"strength": 0.0}
        for option in options:
            adapter = make_adapter(name, **option)
            adapter.source_prior = np.full(6, 1 / 6)
            adapted = adapter.adapt(None, None, probabilities)
            assert adapted.shape == probabilities.shape and np.allclose(adapted.sum(1), 1.0)
            if option["strength"] == 0.0:
                assert np.allclose(adapted, probabilities)
    uniform = make_adapter("uniform-prior", strength=1.0).adapt(None, None, probabilities)
    assert np.abs(uniform.mean(0) - 1 / 6).max() < 1e-3 < np.abs(probabilities.mean(0) - 1 / 6).max()
