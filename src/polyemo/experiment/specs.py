"""Two fields of an experiment file that their own stages read: ``select`` and ``final_model``.

They live here, beside nothing but pydantic, so the configuration can hold them without
importing the stages that act on them (:mod:`polyemo.experiment.selection`,
:mod:`polyemo.experiment.final`).
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: experiment fields a candidate may set (``layers`` is short for ``encoder.layers``,
#: ``augment`` for ``encoder.augment``: null trains without the augmented copies)
CANDIDATE_FIELDS = ("normalisation", "head", "loss", "training", "layers", "augment")


class SelectSpec(BaseModel):
    """``select`` of an experiment file: candidates and how to choose among them.

    ``candidates``: a list of partial settings, e.g. ``[{normalisation: global},
    {normalisation: utterance}]``; ``grid``: every combination of value lists, e.g.
    ``{layers: [[2], [3]], normalisation: [global, utterance]}`` (both may be given; grid
    combinations follow the listed candidates). ``by``: ``validation`` or a split protocol
    run over the fold's training rows, with ``params``. ``metric``: default the training
    selection metric.
    """

    model_config = ConfigDict(extra="forbid")

    by: str = "validation"
    params: dict[str, Any] = Field(default_factory=dict)
    metric: Literal["ua", "wa", "macro_f1"] | None = None
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("by")
    @classmethod
    def _by(cls, value: str) -> str:
        if value == "validation":
            return value
        from polyemo.splits import PROTOCOLS

        if value not in PROTOCOLS:
            raise ValueError(f"select.by must be 'validation' or a split protocol ({', '.join(PROTOCOLS.names())}), "
                             f"got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> SelectSpec:
        for candidate in [*self.candidates, *({k: None} for k in self.grid)]:
            unknown = sorted(set(candidate) - set(CANDIDATE_FIELDS))
            if unknown:
                raise ValueError(f"a candidate may set {', '.join(CANDIDATE_FIELDS)}; not {unknown}")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"select.grid.{key} must be a non-empty list of values")
        if len(self.expanded()) < 2:
            raise ValueError("select needs at least two candidates to choose between")
        return self

    def expanded(self) -> list[dict[str, Any]]:
        """Every candidate: the listed ones, then the grid's combinations."""
        out = [dict(c) for c in self.candidates]
        if self.grid:
            keys = list(self.grid)
            out += [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]
        return out


class FinalModelSpec(BaseModel):
    """``final_model`` of an experiment file: the text of the model card, and the validation share."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="model name (default: the experiment's name)")
    description: str = ""
    license: str = Field("", description="licence of the model and of its training data")
    limitations: str = ""
    validation_fraction: float = Field(0.2, gt=0, lt=1, description="share of speakers held out for selection")

    @classmethod
    def check(cls, value: bool | dict[str, Any]) -> bool | dict[str, Any]:
        """Validate the config field: ``False``, ``True`` or a mapping of this spec's fields."""
        if isinstance(value, bool):
            return value
        try:
            return cls(**value).model_dump()
        except ValidationError as error:
            raise ValueError("; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in error.errors()
            )) from None

    @classmethod
    def of(cls, config: Any) -> FinalModelSpec | None:
        """The spec of an experiment (an :class:`~polyemo.experiment.config.ExperimentConfig`;
        None when it trains no final model)."""
        value = config.final_model
        if value is False:
            return None
        return cls() if value is True else cls(**value)
