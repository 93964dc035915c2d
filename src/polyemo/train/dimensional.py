"""The ``dimensional`` estimator: the torch Trainer, choosing its epoch by validation mean CCC.

Training, batching, sampling (``training.sampling: undersample`` draws as many rows of each
class as the rarest has, afresh every epoch: the seed system's undersampling), layer
weighting, refit and saving are the torch :class:`~polyemo.train.trainer.Trainer`'s; the
head (:class:`polyemo.heads.dimensional.DimensionalHead`) adds the dimensional loss. Only
the checkpoint choice differs: the epoch with the best mean concordance correlation of the
trained attributes on the VALIDATION rows (``val_ccc`` and ``val_ccc_<attribute>`` in the
training log), not a categorical score.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from polyemo.train.registry import ESTIMATORS
from polyemo.train.trainer import Trainer

DIMENSIONS = ("arousal", "valence", "dominance")


def mean_ccc(targets: np.ndarray, predictions: np.ndarray, columns: list[int]) -> tuple[float, dict[str, float]]:
    """Mean CCC over ``columns`` of (N, 3) arrays (rows with a NaN target left out per column)."""
    from polyemo.metrics import concordance_cc

    per: dict[str, float] = {}
    for c in columns:
        keep = np.isfinite(targets[:, c]) & np.isfinite(predictions[:, c])
        if keep.sum() >= 2:
            per[DIMENSIONS[c]] = float(concordance_cc(targets[keep, c], predictions[keep, c]))
    values = [v for v in per.values() if math.isfinite(v)]
    return (float(np.mean(values)) if values else -math.inf), per


@ESTIMATORS.register("dimensional")
class DimensionalTrainer(Trainer):
    kind = "dimensional"

    def _run_eval(self, model, batches, loss_fn=None):
        outputs, loss = super()._run_eval(model, batches, loss_fn)
        self._last_eval = (outputs, batches.data)  # read by _selection_score right after
        return outputs, loss

    def _selection_score(self, epoch: int, metrics: dict[str, Any]) -> float:
        outputs, data = self._last_eval
        if data.avd is None or "avd" not in outputs:
            raise ValueError("the dimensional estimator needs arousal/valence/dominance targets on validation")
        columns = list(getattr(self.model.head, "columns", range(len(DIMENSIONS))))
        score, per = mean_ccc(np.asarray(data.avd, np.float64), outputs["avd"], columns)
        metrics["ccc"] = score  # recorded in the history as val_ccc
        metrics.update({f"ccc_{k}": v for k, v in per.items()})
        return score
