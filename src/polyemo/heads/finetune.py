"""The head of a fine-tuned encoder: dropout + linear on the encoder's pooled hidden states.

A head named ``finetune`` takes raw audio (``features: audio``): the estimator that trains
it (:mod:`polyemo.train.finetune`) owns a trainable speech encoder, pools the chosen
layer (or a learned weighted sum of all layers) over valid frames and feeds this module.
Its params are the fine-tuning settings (:class:`polyemo.train.finetuning.settings.FinetuneSettings`);
only ``dropout`` concerns the head itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from polyemo.heads import HEADS
from polyemo.heads.base import Output
from polyemo.heads.linear import LinearHead


@HEADS.register("finetune")
class FinetuneHead(LinearHead):
    """Dropout then a linear layer on (B, D) pooled hidden states of a trainable encoder."""

    input_kind: ClassVar[str] = "audio"  # type: ignore[assignment]
    estimator: ClassVar[str] = "finetune"

    def __init__(self, input_dim: int, num_classes: int, outputs: Sequence[Output] | None = None,
                 dropout: float = 0.1, **settings: Any) -> None:
        # the other params configure the encoder and its training (the estimator reads them)
        super().__init__(input_dim, num_classes, outputs, dropout=dropout)
