"""What prediction gives back: one :class:`Prediction` per recording (segments inside).

The typed hand-off between the engine and everything after it (output files, plots, the
server's JSON): the engine fills these, the later stages only read them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SegmentPrediction:
    start: float
    end: float
    label: str
    probabilities: dict[str, float]
    dimensions: dict[str, float] = field(default_factory=dict)


@dataclass
class Prediction:
    """The result for one recording. ``error`` is set (and the rest empty) when it failed."""

    source: str
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    duration: float | None = None
    arousal: float | None = None
    valence: float | None = None
    dominance: float | None = None
    segments: list[SegmentPrediction] | None = None
    group: str | None = None
    norm_source: str | None = None
    error: str | None = None
    #: test-time adaptation applied (``--adapt``; None: plain, the field is left out of records)
    adaptation: str | None = None
    #: ``--adapt enrolled``: this recording fed its speaker's statistics (it is predicted too)
    enrolment: bool | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for dim in ("arousal", "valence", "dominance", "adaptation", "enrolment"):
            if data[dim] is None:
                del data[dim]
        return data


def prediction_record(prediction: Prediction) -> dict[str, Any]:
    """A JSON-lines record: the prediction with ``path`` first."""
    data = prediction.to_dict()
    return {"path": data.pop("source"), **data}
