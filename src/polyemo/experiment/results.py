"""What a finished run reports: :class:`RunResult` (``result.json``) and its :class:`FoldSummary` rows.

Models only; :mod:`polyemo.experiment.score` fills them, :mod:`polyemo.experiment.run` writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

RUN_FILE = "result.json"
FOLD_FILE = "fold.json"


class FoldSummary(BaseModel):
    name: str
    n_train: int
    n_validation: int
    n_test: int
    ua: float
    wa: float
    macro_f1: float
    classes: list[str]
    selected_layer: int | None = None
    best_epoch: int | None = None
    seconds: float = 0.0
    info: dict[str, Any] = Field(default_factory=dict)
    #: classes present in the fold's test references (UA and macro-F1 average over these)
    scored_classes: list[str] = Field(default_factory=list)
    n_test_speakers: int = 0


class RunResult(BaseModel):
    """What a finished run reports (``result.json``); the full metrics are in ``metrics.json``."""

    name: str
    out_dir: str
    fingerprint: str
    protocol: str
    encoder: str
    head: str
    classes: list[str]
    primary_metric: str
    #: the primary metric: mean over folds (EmoBox reports this), its std, and pooled with CI
    primary: float
    primary_std: float
    pooled: dict[str, float]
    pooled_ci: dict[str, list[float]]
    mean_of_folds: dict[str, float]
    n_utterances: int
    n_folds: int
    folds: list[FoldSummary]
    by_corpus: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: interval of the mean of folds of the primary metric, and of every metric
    primary_ci: list[float] = Field(default_factory=list)
    mean_of_folds_ci: dict[str, list[float]] = Field(default_factory=dict)
    #: how each kind of interval was drawn, e.g. {"mean_of_folds": "95 % speaker-cluster bootstrap within folds ..."}
    intervals: dict[str, str] = Field(default_factory=dict)
    #: classes present in the test references (the classes UA averages over) and the normalisation
    scored_classes: list[str] = Field(default_factory=list)
    normalisation: str = ""
    #: the primary metric in one line: mean of folds and pooled, intervals, classes, protocol, normalisation
    headline: str = ""
    seconds: dict[str, float] = Field(default_factory=dict)
    files: list[str] = Field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> RunResult:
        path = Path(path)
        if path.is_dir():
            path = path / RUN_FILE
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
