"""Manifests of the real shared corpora and their EmoBox-rule splits, made once per session."""

from __future__ import annotations

import pandas as pd
import pytest

from polyemo import manifest as mf
from polyemo.splits import Split, make_split

CATEGORICAL = ("emodb", "ravdess", "savee", "emovo", "urdu")
ALL = CATEGORICAL + ("baved",)


def label_column_of(corpus: str) -> str:
    return "arousal_level" if corpus == "baved" else "label"


@pytest.fixture(scope="session")
def manifests(prepared_manifest) -> dict[str, pd.DataFrame]:
    return {corpus: prepared_manifest(corpus) for corpus in ALL}


@pytest.fixture(scope="session")
def pooled(manifests) -> pd.DataFrame:
    """The five categorical corpora in one manifest (four languages)."""
    return mf.concat([manifests[c] for c in CATEGORICAL])


@pytest.fixture(scope="session")
def emobox_splits(manifests) -> dict[str, Split]:
    return {c: make_split(manifests[c], "emobox_coverage", label_column=label_column_of(c), seed=0) for c in ALL}
