"""Majority vote: each member votes for its most probable class; ties broken by a rule.

``tiebreak`` (a parameter):

* ``best-on-validation`` (Abhinaya's): the member with the best validation UA (ties: the
  first listed) breaks ties; chosen in ``fit`` from validation predictions only;
* a member's name (or ``member:<name>``): that member breaks ties;
* ``confidence``: the tied class with the most confident vote (the highest probability any
  member voting for it gave it).

A tie-break member decides among the TIED classes only (its most probable tied class), so
a 2-2-1 vote never goes to the single vote. The output probabilities are the vote shares
with the decided class nudged by 1e-6, so their argmax is the decision.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyemo.ensemble import RULES
from polyemo.ensemble.base import Combined, Rule, balanced_accuracy, normalised

BEST = "best-on-validation"


@RULES.register("vote", "majority", "majority_vote")
class MajorityVote(Rule):
    name = "vote"

    def __init__(self, members, tiebreak: str = BEST, **params: Any) -> None:
        super().__init__(members, tiebreak=tiebreak, **params)
        if params:
            raise ValueError(f"ensemble rule 'vote': unknown parameters {sorted(params)} (it takes tiebreak)")
        tiebreak = str(tiebreak)
        if tiebreak.startswith("member:"):
            tiebreak = tiebreak.split(":", 1)[1]
        if tiebreak not in (BEST, "confidence") and tiebreak not in self.members:
            raise ValueError(f"ensemble rule 'vote': tiebreak {tiebreak!r} is none of {BEST!r}, 'confidence' "
                             f"or a member ({', '.join(self.members)})")
        self.tiebreak = tiebreak
        self.fitted_on_validation = tiebreak == BEST

    def _fit(self, probabilities: list[np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        if self.tiebreak != BEST:
            return {"tiebreak_member": self.tiebreak if self.tiebreak != "confidence" else None}
        scores = [balanced_accuracy(labels, p.argmax(axis=1), p.shape[1]) for p in probabilities]
        ranked = [s if np.isfinite(s) else -np.inf for s in scores]
        best = int(np.argmax(ranked))  # first of the best
        return {"tiebreak_member": self.members[best], "n_validation": int(len(labels)),
                "validation_ua": dict(zip(self.members, map(float, scores)))}

    def _combine(self, probabilities: list[np.ndarray]) -> Combined:
        stacked = np.stack(probabilities)  # (M, N, C)
        members, rows, classes = stacked.shape
        votes = stacked.argmax(axis=2)  # (M, N)
        counts = np.zeros((rows, classes))
        for m in range(members):
            counts[np.arange(rows), votes[m]] += 1
        tied = counts == counts.max(axis=1, keepdims=True)
        member = self.learned.get("tiebreak_member")
        if member is not None:
            scores = stacked[self.members.index(member)]
        else:  # confidence: the highest probability a member voting for the class gave it
            voted = np.zeros_like(stacked, dtype=bool)
            for m in range(members):
                voted[m, np.arange(rows), votes[m]] = True
            scores = np.where(voted, stacked, -np.inf).max(axis=0)
        decision = np.where(tied, scores, -np.inf).argmax(axis=1)
        share = counts / members
        share[np.arange(rows), decision] += 1e-6
        return Combined(normalised(share), decision)
