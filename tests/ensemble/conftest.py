"""Member runs for the ensemble tests: a few EmoDB speakers, eGeMAPS functionals, LOSO."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def member_base(shared_corpora, tmp_path_factory) -> dict:
    return {
        "corpora": ["emodb"],
        "corpora_root": str(shared_corpora),
        "labels": "ekman7",
        "protocol": {"name": "speaker_kfold", "params": {"k": 3}},
        "encoder": {"name": "egemaps", "cache_dir": str(tmp_path_factory.mktemp("ensemble-features"))},
        "normalisation": "speaker",
        "limit": {"per_corpus": 90},
        "metrics": {"n_boot": 50},
        "seed": 3,
    }


@pytest.fixture(scope="session")
def member_runs(member_base, tmp_path_factory) -> dict[str, Path]:
    """Three members on the same split: logreg (refit: validation recomputed), a linear torch
    head without refit (validation kept by the run) and a linear SVM."""
    from polyemo.experiment import run_experiment

    root = tmp_path_factory.mktemp("members")
    heads = {
        "logreg": {"head": {"name": "logreg", "params": {"C": [0.1, 1.0]}}},
        "linear": {"head": "linear", "training": {"epochs": 8, "refit": False, "lr": 0.01}},
        "svm": {"head": {"name": "svm_linear", "params": {"C": [0.1]}}},
    }
    runs = {}
    for name, settings in heads.items():
        config = {**member_base, **settings, "name": f"member-{name}"}
        run_experiment(config, root / name, progress=False)
        runs[name] = root / name
    return runs
