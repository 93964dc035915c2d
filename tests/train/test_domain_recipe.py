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
