"""The training normaliser applied at prediction time, per normalisation group.

Modes (the bundle's ``normalisation.mode``): none, global and utterance statistics apply to
every unit alike; test-speaker uses a group's own statistics when it has at least
``min_utterances`` units (else the training statistics); enrolled-speaker enrols
``min(enrol, n - 1)`` units of each group. Each unit gets a ``norm_source`` saying which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from polyemo.bundle import NORMALISATION as NORMALISATION_FILE
from polyemo.bundle import BundleError

if TYPE_CHECKING:
    from polyemo.bundle import Bundle

#: Prefix of the group of a recording predicted without a group (its segments share statistics).
OWN_RECORDING = "\x00recording#"


def own_group(item: int) -> str:
    """The normalisation group of recording ``item`` when it has none: the recording alone."""
    return f"{OWN_RECORDING}{item}"


class GroupNormaliser:
    """Applies a bundle's normalisation statelessly: a speaker normaliser is rebuilt for every
    call from the training statistics only, so predictions never depend on what was predicted
    before (or on other server requests)."""

    def __init__(self, bundle: Bundle) -> None:
        from polyemo.bundle import normaliser_from_bundle

        self.spec = bundle.config.normalisation
        self.stats = bundle.normalisation_stats
        try:
            self.normaliser = normaliser_from_bundle(self.spec, self.stats)
        except (KeyError, ValueError, TypeError) as exc:
            raise BundleError(bundle.path, NORMALISATION_FILE,
                              f"{self.spec.mode} normalisation cannot be rebuilt ({type(exc).__name__}: {exc}); "
                              f"statistics found: {sorted(self.stats)}") from exc

    def __call__(self, features: list[np.ndarray], groups: list[str]) -> tuple[list[np.ndarray], list[str]]:
        """Normalised features and each unit's ``norm_source``, for units of the given groups."""
        from polyemo.bundle import normaliser_from_bundle
        from polyemo.train.data import SplitData

        mode = self.spec.mode
        if self.normaliser is None:
            return features, ["none"] * len(features)
        pooled = features[0].ndim == 2
        data = SplitData(np.stack(features) if pooled else list(features), speakers=np.array(groups, dtype=object))
        if mode not in ("test-speaker", "enrolled-speaker"):
            out = self.normaliser.transform(data).features
            source = "utterance" if mode == "utterance" else "training statistics"
            return list(out), [source] * len(features)
        fresh = normaliser_from_bundle(self.spec, self.stats)
        out = fresh.transform(data).features
        counts: dict[str, int] = {}
        for group in groups:
            counts[group] = counts.get(group, 0) + 1
        names = {group: "recording" if group.startswith(OWN_RECORDING) else group for group in counts}
        if mode == "enrolled-speaker":  # statistics of min(enrol, n - 1) units of each group
            used = {group: min(fresh.enrol, counts[group] - 1) for group in counts}
            sources = [f"{names[group]} ({used[group]} enrolment units of {counts[group]})" if used[group] > 0
                       else f"training statistics ({names[group]}: 1 unit, none to enrol)" for group in groups]
            return list(out), sources
        minimum = fresh.min_utterances
        sources = [
            f"{names[group]} ({counts[group]} units)" if counts[group] >= minimum
            else f"training statistics ({names[group]}: {counts[group]} < {minimum} units)"
            for group in groups
        ]
        return list(out), sources
