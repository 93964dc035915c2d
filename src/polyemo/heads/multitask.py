"""Multi-task wrapper: emotion categories plus auxiliary gender and arousal/valence/dominance.

The wrapper builds any registered torch head with extra outputs on the same body:
``gender`` (2 logits, cross-entropy weighted by ``gender_weight``, the alpha of the
emotion + gender recipe) and ``avd`` (3 regression values, 1 - concordance correlation
weighted by ``avd_weight``), both from :mod:`polyemo.losses`. Rows with unknown gender
(-1) or dimension (NaN) are ignored by that task only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from polyemo.heads import HEADS
from polyemo.heads.base import EmotionLoss, Head, Output, Targets
from polyemo.losses import build_loss

AVD_DIMS = ("arousal", "valence", "dominance")


@HEADS.register("multitask", "multi_task")
class MultiTaskHead(Head):
    """``base`` head (any registered torch head) with auxiliary gender and/or AVD outputs."""

    def __init__(self, input_dim: int, num_classes: int, outputs: Sequence[Output] | None = None,
                 base: str = "linear", gender_weight: float = 0.0, avd_weight: float = 0.0,
                 **base_params) -> None:
        if outputs is not None:
            raise ValueError("multitask head builds its own outputs; do not pass 'outputs'")
        if gender_weight < 0 or avd_weight < 0:
            raise ValueError("multitask head: task weights must be >= 0")
        if gender_weight == 0 and avd_weight == 0:
            raise ValueError("multitask head without auxiliary tasks: set gender_weight and/or avd_weight > 0")
        outputs = [Output("emotion", num_classes, "class")]
        if gender_weight > 0:
            outputs.append(Output("gender", 2, "class"))
        if avd_weight > 0:
            outputs.append(Output("avd", len(AVD_DIMS), "regression"))
        super().__init__(input_dim, num_classes, outputs)
        base_cls = HEADS.get(base)
        if base_cls is MultiTaskHead or not (isinstance(base_cls, type) and issubclass(base_cls, Head)):
            raise ValueError(f"multitask base must be a torch head, got {base!r}")
        self.base = base_cls(input_dim, num_classes, outputs=outputs, **base_params)
        self.input_kind = self.base.input_kind  # type: ignore[misc]  # follows the wrapped head
        self.gender_weight = float(gender_weight)
        self.avd_weight = float(avd_weight)
        self.gender_loss = build_loss("ce")  # ignores rows with gender -1
        self.avd_loss = build_loss("ccc")  # ignores NaN targets per dimension

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.base(x, lengths)

    def compute_loss(
        self, outputs: dict[str, torch.Tensor], targets: Targets, emotion_loss: EmotionLoss
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total, parts = super().compute_loss(outputs, targets, emotion_loss)
        if self.gender_weight > 0:
            if targets.gender is None:
                raise ValueError("multitask head with gender_weight > 0 needs gender targets (SplitData.gender)")
            g = self.gender_loss(outputs["gender"], targets.gender)
            total = total + self.gender_weight * g
            parts["gender"] = float(g.detach())
        if self.avd_weight > 0:
            if targets.avd is None:
                raise ValueError("multitask head with avd_weight > 0 needs arousal/valence/dominance targets (SplitData.avd)")
            r = self.avd_loss(outputs["avd"], targets.avd)
            total = total + self.avd_weight * r
            parts["avd"] = float(r.detach())
        return total, parts
