"""What every torch head shares: named outputs, training targets, frame masks and pooling."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

#: ``loss(logits (N, C), targets (N,) with -1 = ignore, masks (N, C) bool or None) -> scalar``
EmotionLoss = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class Output:
    """One named output of a head: ``size`` units, a classification or a regression."""

    name: str
    size: int
    kind: Literal["class", "regression"] = "class"


@dataclass
class Targets:
    """Training targets of a batch.

    ``emotion`` (N,) class indices with -1 where a row has no usable label; ``masks`` (N, C)
    the classes each row's corpus can produce; ``gender`` (N,) 0 = female, 1 = male, -1
    unknown; ``avd`` (N, 3) arousal/valence/dominance with NaN where unknown.
    """

    emotion: torch.Tensor
    masks: torch.Tensor | None = None
    gender: torch.Tensor | None = None
    avd: torch.Tensor | None = None


def emotion_outputs(num_classes: int) -> list[Output]:
    return [Output("emotion", num_classes, "class")]


def frame_mask(lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """(batch, max_frames) bool, True on the valid (unpadded) frames."""
    return torch.arange(max_frames, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T, D) over the valid frames of ``mask`` (B, T) -> (B, D)."""
    # masked_fill, not multiplication: padded values (even inf/NaN) never leak into the mean
    total = x.masked_fill(~mask.unsqueeze(-1), 0.0).sum(1)
    return total / mask.sum(1, keepdim=True).clamp_min(1).to(x.dtype)


class Head(nn.Module):
    """Base class of the torch heads.

    Subclasses set ``input_kind`` ("pooled": input (B, D); "frames": input (B, T, D) plus
    ``lengths`` (B,)) and implement ``forward`` returning ``{output name: tensor}``. The
    final layer of a head produces all outputs at once (``total_outputs`` units) and
    :meth:`split` names the pieces, so one body can serve several tasks.
    """

    input_kind: ClassVar[Literal["pooled", "frames"]] = "pooled"
    #: the estimator that trains it (``polyemo.train.registry.ESTIMATORS``)
    estimator: ClassVar[str] = "torch"

    def __init__(self, input_dim: int, num_classes: int, outputs: Sequence[Output] | None = None) -> None:
        super().__init__()
        if input_dim < 1 or num_classes < 2:
            raise ValueError(f"{type(self).__name__}: need input_dim >= 1 and num_classes >= 2, "
                             f"got {input_dim} and {num_classes}")
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.outputs = list(outputs) if outputs is not None else emotion_outputs(num_classes)
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"{type(self).__name__}: repeated output names {names}")
        emotion = [o for o in self.outputs if o.name == "emotion"]
        if not emotion or emotion[0].size != num_classes or emotion[0].kind != "class":
            raise ValueError(f"{type(self).__name__}: outputs need an 'emotion' class output of size {num_classes}")

    @property
    def total_outputs(self) -> int:
        return sum(o.size for o in self.outputs)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cut the last dimension of ``flat`` into the named outputs."""
        pieces = torch.split(flat, [o.size for o in self.outputs], dim=-1)
        return {o.name: piece for o, piece in zip(self.outputs, pieces)}

    def compute_loss(
        self, outputs: dict[str, torch.Tensor], targets: Targets, emotion_loss: EmotionLoss
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of a batch and its parts (for logging)."""
        loss = emotion_loss(outputs["emotion"], targets.emotion, targets.masks)
        return loss, {"emotion": float(loss.detach())}


def mlp(input_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> tuple[nn.Sequential, int]:
    """``num_layers`` blocks of Linear -> ReLU -> Dropout; returns the stack and its output size."""
    layers: list[nn.Module] = []
    size = input_dim
    for _ in range(num_layers):
        layers += [nn.Linear(size, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
        size = hidden_dim
    return nn.Sequential(*layers), size
