"""Corpus-adversarial training (issue 12): a gradient-reversal head on the corpus id.

``training.adversarial: w`` (w > 0) trains a torch head through this estimator
(``domain-adversarial``, chosen by :func:`polyemo.train.estimator.build_estimator`). The
pooled input (after the head's layer reduction) goes through a learned linear map ``P`` (the
identity plus a learned correction, low-rank above 512 dimensions, starting at the identity), the emotion head reads ``P z``, and a corpus classifier reads
``P z`` through a gradient-reversal layer (Ganin & Lempitsky 2015): P learns to keep what tells
emotions apart and to lose what tells the TRAINING corpora apart, weighted by w. The corpus of
a row is its utt_id's ``corpus/`` prefix; at prediction time no corpus is needed (the corpus
classifier is not used). With frozen features and a linear head, P is what gives the
adversary something to change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from polyemo.io import write_json
from polyemo.train.data import DataError, SplitData
from polyemo.train.registry import ESTIMATORS
from polyemo.train.trainer import Trainer


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def reverse_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; the gradient multiplied by ``-weight`` backward."""
    return _Reverse.apply(x, weight)


class AdversarialModel(nn.Module):
    """A :class:`~polyemo.heads.model.HeadModel` with a learned map before its head and a
    corpus classifier behind a gradient reversal. The input's last feature channel carries
    each row's corpus code (-1: unknown; it never reaches the heads)."""

    def __init__(self, inner, num_domains: int, weight: float) -> None:
        super().__init__()
        feature_dim = int(inner.head.input_dim)  # after layer reduction (concat: layers x dim)
        if inner.input_kind != "pooled":
            raise DataError("corpus-adversarial training takes pooled features")
        self.inner = inner
        self.head = inner.head  # the trainer reads head.outputs
        self.input_kind = inner.input_kind
        # The identity at the start: a full matrix for one layer; for concatenations (> 512
        # dimensions) the identity plus a rank-64 correction (>> the number of corpora, enough
        # to cancel their directions, and a fraction of a full 1536 x 1536 map's cost).
        self.full = feature_dim <= 512
        if self.full:
            self.map = nn.Linear(feature_dim, feature_dim)
            with torch.no_grad():
                self.map.weight.copy_(torch.eye(feature_dim))
                self.map.bias.zero_()
        else:
            self.down = nn.Linear(feature_dim, 64, bias=False)
            self.up = nn.Linear(64, feature_dim)
            with torch.no_grad():
                self.up.weight.zero_()
                self.up.bias.zero_()
        self.domain = nn.Linear(feature_dim, max(num_domains, 2))
        self.weight = float(weight)
        self._domain_logits: torch.Tensor | None = None
        self._codes: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        codes, x = x[:, 0, -1].round().long(), x[..., :-1]
        h = self.project(self.inner.layers(x))
        self._codes = codes
        self._domain_logits = self.domain(reverse_gradient(h, self.weight)) if self.training else None
        return self.head(h, lengths)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """The learned map (the identity at the start)."""
        return self.map(z) if self.full else z + self.up(self.down(z))

    def compute_loss(self, outputs, targets, emotion_loss):
        loss, parts = self.inner.compute_loss(outputs, targets, emotion_loss)
        if self._domain_logits is not None:
            known = self._codes >= 0
            if bool(known.any()):
                domain = nn.functional.cross_entropy(self._domain_logits[known], self._codes[known])
                loss = loss + domain  # reversed (times the weight) on its way into the map
                parts = {**parts, "corpus": float(domain.detach())}
        return loss, parts

    def layer_weights(self):
        return self.inner.layer_weights()


@ESTIMATORS.register("domain-adversarial")
class DomainAdversarialTrainer(Trainer):
    """The torch trainer with a gradient-reversal corpus head (see the module)."""

    kind = "domain-adversarial"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.domains: list[str] = []

    def _with_codes(self, data: SplitData, known: bool) -> SplitData:
        if data.is_frames:
            raise DataError("corpus-adversarial training takes pooled features")
        x = np.asarray(data.features, dtype=np.float32)
        codes = np.full(len(data), -1.0, dtype=np.float32)
        if known and data.utt_ids is not None:
            index = {d: i for i, d in enumerate(self.domains)}
            codes = np.array([index.get(str(u).split("/", 1)[0], -1) for u in data.utt_ids], dtype=np.float32)
        channel = np.broadcast_to(codes[:, None, None], (len(data), x.shape[1], 1))
        return data.with_features(np.concatenate([x, channel], axis=2))

    def _build_model(self):
        inner = super()._build_model()
        return AdversarialModel(inner, len(self.domains), self.train_config.adversarial)

    def _fit(self, train: SplitData, val: SplitData):
        if train.utt_ids is None:
            raise DataError("corpus-adversarial training needs utt_ids ('corpus/...') to know each row's corpus")
        self.domains = sorted({str(u).split("/", 1)[0] for u in train.utt_ids})
        return super()._fit(self._with_codes(train, True), self._with_codes(val, False))

    def _predict(self, data: SplitData):
        return super()._predict(self._with_codes(data, False))

    def _save_head(self, directory: Path) -> None:
        super()._save_head(directory)
        write_json(directory / "domains.json", {"domains": self.domains})

    def _load_head(self, directory: Path) -> None:
        self.domains = json.loads((directory / "domains.json").read_text(encoding="utf-8"))["domains"]
        super()._load_head(directory)
