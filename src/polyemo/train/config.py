"""Typed training configuration (pydantic; loads from YAML)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class TrainConfig(BaseModel):
    """How a head is trained and how its checkpoint is chosen.

    The checkpoint is the epoch with the best ``selection_metric`` on the VALIDATION split
    (ties keep the earlier epoch); ``patience`` epochs without an improvement of more than
    ``min_delta`` stop training (None: run all ``epochs``). Learning rate: linear warm-up over
    ``warmup_ratio`` of the optimiser steps, then linear decay to zero.

    ``sampling``: "none" (shuffle), "class_balanced" (draw rows with probability inversely
    proportional to their class frequency, with replacement) or "undersample" (every epoch a
    fresh random subset with as many rows of each class as the rarest class has); both
    leave out rows without an emotion label (-1).
    ``normalisation``: see :mod:`polyemo.train.normalise`.

    ``refit`` (default): once validation has chosen ``C`` or the epoch, the model is trained
    again on training + validation rows with those settings fixed, as scikit-learn's
    ``GridSearchCV(refit=True)`` does (torch heads: for the chosen number of epochs); the
    validation speakers are not wasted. ``refit: false`` keeps the model fitted on the
    training part only. ``checkpoint``: ``best`` (the epoch best on validation) or ``last``
    (the final epoch; what a refit uses, since it has no held-out rows left).
    """

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int | None = Field(None, ge=1)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    patience: int | None = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)
    selection_metric: Literal["macro_f1", "ua"] = "macro_f1"
    refit: bool = True
    checkpoint: Literal["best", "last"] = "best"
    seed: int = 0
    deterministic: bool = True
    #: corpus_balanced / corpus_class_balanced (issue 12): rows drawn with probability inversely
    #: proportional to their corpus' (corpus and class's) row count, corpus from the utt_id prefix
    sampling: Literal["none", "class_balanced", "undersample", "corpus_balanced", "corpus_class_balanced"] = "none"
    loss: str = "ce"
    loss_params: dict[str, Any] = Field(default_factory=dict)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    #: weight of a gradient-reversal corpus head (0: none); torch heads, polyemo.train.domain
    adversarial: float = Field(0.0, ge=0)
    normalisation: Literal["none", "global", "utterance", "test-speaker", "enrolled-speaker",
                           "corpus-standardised", "speaker-standardised"] = "none"
    utterance_axis: Literal["frames", "features"] = "frames"
    speaker_min_utterances: int = Field(5, ge=1)
    #: enrolment clips per speaker of ``enrolled-speaker`` normalisation (chosen with ``seed``)
    enrol_clips: int = Field(5, ge=1)
    device: str = "cpu"
    #: torch CPU threads while training (None: leave torch's setting). Small heads run far
    #: faster on one thread, and a fixed count keeps float reductions identical across runs.
    num_threads: int | None = Field(1, ge=1)
    show_progress: bool = True
    log_path: Path | None = None
    checkpoint_path: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if "label_smoothing" in self.loss_params:
            raise ValueError("set label_smoothing on the training config, not in loss_params")
        return self

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> TrainConfig:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        try:
            return cls(**data)
        except Exception as error:
            raise ValueError(f"{path}: invalid training config: {error}") from error

    @field_validator("normalisation", mode="before")
    @classmethod
    def _normalisation_alias(cls, value: Any) -> Any:
        # "speaker" was the name of test-speaker normalisation
        return "test-speaker" if value == "speaker" else value

    def normaliser_options(self) -> dict[str, Any]:
        if self.normalisation in ("test-speaker", "corpus-standardised", "speaker-standardised"):
            return {"min_utterances": self.speaker_min_utterances}
        if self.normalisation == "enrolled-speaker":
            return {"enrol": self.enrol_clips, "seed": self.seed}
        if self.normalisation == "utterance":
            return {"axis": self.utterance_axis}
        return {}
