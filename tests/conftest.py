"""Shared fixtures: the real corpora in ../shared/corpora and their prepared manifests."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPORA = Path(os.environ.get("POLYEMO_SHARED_CORPORA", REPO.parent / "shared" / "corpora"))
SHARED_NAMES = ("emodb", "ravdess", "savee", "emovo", "urdu", "baved")


@pytest.fixture(scope="session")
def shared_corpora() -> Path:
    if not (SHARED_CORPORA / "emodb" / "manifest.csv").exists():
        pytest.fail(f"the shared corpora are missing: {SHARED_CORPORA} (set POLYEMO_SHARED_CORPORA)")
    return SHARED_CORPORA


@pytest.fixture(scope="session")
def prepared_manifest(shared_corpora):
    """``prepared_manifest("emodb")``: the recipe's manifest of a shared corpus (hashed, cached)."""
    from polyemo.corpora import prepare

    cache: dict[str, pd.DataFrame] = {}

    def get(corpus: str) -> pd.DataFrame:
        if corpus not in cache:
            manifest, failures = prepare(corpus, shared_corpora / corpus, workers=2, show_progress=False)
            assert failures.empty, failures
            cache[corpus] = manifest
        return cache[corpus].copy()

    return get


@pytest.fixture
def fitted_rows(monkeypatch) -> list[set[str]]:
    """The utt_ids (training | validation) of every estimator fit during the test, in order."""
    from polyemo.train import estimator as estimator_module

    seen: list[set[str]] = []
    real_fit = estimator_module.Estimator.fit

    def recording_fit(self, train, val):
        seen.append(set(train.utt_ids) | set(val.utt_ids))
        return real_fit(self, train, val)

    monkeypatch.setattr(estimator_module.Estimator, "fit", recording_fit)
    return seen
