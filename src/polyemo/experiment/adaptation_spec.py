"""The ``adaptation:`` block of an experiment: test-time adapters scored beside the plain model.

::

    adaptation:
      adapters: [tent, uniform-prior]      # polyemo.train.adaptation names (prior = prior-em)
      choose_by: inner-lolo                # leave one TRAINING language out (or any split protocol;
                                           # none: the adapters' defaults, strength 1.0)
      strengths: [0.0, 0.5, 1.0]           # candidates; 0 (the plain prediction) first, so ties keep it
      params: {tent: {steps: 10, lr: 0.05}}

Each fold's model predicts its test rows once (the plain score, reported first); then every
adapter, with the settings its inner protocol chose on the fold's TRAINING rows, re-makes those
predictions from the unlabelled test batch (:mod:`polyemo.experiment.adaptation`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

_BY = {"inner-lolo": "leave_one_language_out", "lolo": "leave_one_language_out"}


class AdaptationRunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adapters: list[str] = Field(min_length=1)
    choose_by: str = "inner-lolo"
    strengths: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0], min_length=1)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: options of the inner split protocol
    by_params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("adapters")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        from polyemo.train.adaptation import ADAPTERS

        out = []
        for name in names:
            if str(name).lower() in ("enrolled", "enrolled-speaker", "test-speaker"):
                raise ValueError(f"adaptation: {name!r} is a normalisation (normalisation: enrolled-speaker, "
                                 "or an axis over it), not a batch adapter")
            try:
                out.append(ADAPTERS.get(str(name)).name)
            except KeyError:
                raise ValueError(f"adaptation: unknown adapter {name!r}; use {', '.join(ADAPTERS.names())}") from None
        if len(set(out)) != len(out):
            raise ValueError(f"adaptation: adapters listed twice: {names}")
        return out

    @field_validator("strengths")
    @classmethod
    def _strengths(cls, values: list[float]) -> list[float]:
        if any(not 0.0 <= float(v) <= 1.0 for v in values):
            raise ValueError(f"adaptation.strengths must be in [0, 1], got {values}")
        return [float(v) for v in values]

    @property
    def by(self) -> str | None:
        """The inner split protocol (None: no choice, strength 1.0)."""
        if self.choose_by == "none":
            return None
        return _BY.get(self.choose_by, self.choose_by)

    def options(self) -> dict[str, list[dict[str, Any]]]:
        """Adapter -> candidate settings (strengths in the order given; fixed params merged)."""
        from polyemo.train.adaptation import ADAPTERS

        fixed = {ADAPTERS.get(k).name: dict(v) for k, v in self.params.items()}
        strengths = self.strengths if self.by is not None else [1.0]
        return {name: [{**fixed.get(name, {}), "strength": s} for s in strengths] for name in self.adapters}
