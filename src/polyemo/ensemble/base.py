"""The :class:`Rule` interface and the helpers every rule shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyemo.ensemble import RULES


@dataclass
class Combined:
    """What a rule makes of N rows: class scores (rows sum to 1) and the decided class index."""

    probabilities: np.ndarray
    predictions: np.ndarray


def check_members(probabilities: Sequence[np.ndarray], num_classes: int | None = None) -> list[np.ndarray]:
    """The members' (N, C) arrays as float64, all of one shape; a clear error otherwise."""
    arrays = [np.asarray(p, dtype=np.float64) for p in probabilities]
    if len(arrays) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(arrays)}")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2:
        raise ValueError(f"members' probabilities must be (rows, classes) arrays of one shape, got {sorted(shapes)}")
    if num_classes is not None and arrays[0].shape[1] != num_classes:
        raise ValueError(f"members give {arrays[0].shape[1]} classes, the rule was fitted on {num_classes}")
    for i, a in enumerate(arrays):
        if not np.isfinite(a).all():
            raise ValueError(f"member {i}: probabilities hold NaN/inf")
    return arrays


def align_classes(probabilities: np.ndarray, classes: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """Columns of ``probabilities`` (over ``classes``) reordered to ``target``'s classes;
    a class the member never predicts gets probability 0. Refuses a member predicting a
    class the ensemble does not have."""
    classes, target = [str(c) for c in classes], [str(c) for c in target]
    extra = sorted(set(classes) - set(target))
    if extra:
        raise ValueError(f"member classes {extra} are not among the ensemble's classes {target}")
    out = np.zeros((len(probabilities), len(target)))
    for j, name in enumerate(classes):
        out[:, target.index(name)] = np.asarray(probabilities)[:, j]
    return out


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    """Unweighted accuracy (mean recall over the classes present in ``labels``): the
    validation score rules choose by, the same UA the runs report."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    present = [c for c in range(num_classes) if (labels == c).any()]
    if not present:
        return float("nan")
    return float(np.mean([(predictions[labels == c] == c).mean() for c in present]))


class Rule(ABC):
    """One way of combining members. ``params`` come from the config; what ``fit`` learns
    (weights, a stacker, the tie-break member) is in :meth:`state` (JSON-ready)."""

    name: str = ""
    #: whether ``fit`` learns anything from validation predictions
    fitted_on_validation: bool = False

    def __init__(self, members: Sequence[str], **params: Any) -> None:
        self.members = [str(m) for m in members]
        if len(self.members) < 2:
            raise ValueError(f"ensemble rule {self.name!r}: at least two members, got {self.members}")
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"ensemble rule {self.name!r}: member names repeat: {self.members}")
        self.params = dict(params)
        self.num_classes: int | None = None
        self.learned: dict[str, Any] = {}

    def fit(self, probabilities: Sequence[np.ndarray], labels: np.ndarray) -> Rule:
        """Learn from the members' validation probabilities and the true class indices (-1: unlabelled, left out)."""
        arrays = check_members(probabilities)
        if len(arrays) != len(self.members):
            raise ValueError(f"{len(arrays)} members' predictions for {len(self.members)} members")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (arrays[0].shape[0],):
            raise ValueError(f"{labels.shape[0] if labels.ndim else 0} labels for {arrays[0].shape[0]} rows")
        keep = labels >= 0
        self.num_classes = arrays[0].shape[1]
        if self.fitted_on_validation and not keep.any():
            raise ValueError(f"ensemble rule {self.name!r} is fitted on validation predictions, but none are labelled")
        self.learned = self._fit([a[keep] for a in arrays], labels[keep])
        return self

    def combine(self, probabilities: Sequence[np.ndarray]) -> Combined:
        if self.num_classes is None:
            raise RuntimeError(f"ensemble rule {self.name!r} is not fitted")
        arrays = check_members(probabilities, self.num_classes)
        if len(arrays) != len(self.members):
            raise ValueError(f"{len(arrays)} members' predictions for {len(self.members)} members")
        return self._combine(arrays)

    def state(self) -> dict[str, Any]:
        return {"rule": self.name, "members": self.members, "params": self.params,
                "num_classes": self.num_classes, "learned": self.learned}

    @abstractmethod
    def _fit(self, probabilities: list[np.ndarray], labels: np.ndarray) -> dict[str, Any]: ...

    @abstractmethod
    def _combine(self, probabilities: list[np.ndarray]) -> Combined: ...

    def _restore(self, learned: dict[str, Any]) -> None:
        self.learned = dict(learned)


def build_rule(name: str, members: Sequence[str], **params: Any) -> Rule:
    """The rule registered in :data:`polyemo.ensemble.RULES` as ``name``."""
    try:
        factory = RULES.get(name)
    except KeyError as error:
        raise ValueError(error.args[0]) from None
    return factory(members, **params)


def load_rule(state: dict[str, Any]) -> Rule:
    """A fitted rule from its :meth:`Rule.state`."""
    rule = build_rule(state["rule"], state["members"], **state.get("params", {}))
    rule.num_classes = int(state["num_classes"])
    rule._restore(state.get("learned", {}))
    return rule


def normalised(scores: np.ndarray) -> np.ndarray:
    total = scores.sum(axis=1, keepdims=True)
    return scores / np.where(total > 0, total, 1.0)
