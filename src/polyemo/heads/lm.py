"""Heads of the language-model branches (issue 14: Abhinaya's T2 and ST1 members).

``lm_classifier``: attentive statistics pooling over a causal LM's last-layer token states,
then an MLP and the softmax layer. The estimator that trains it (:mod:`polyemo.train.lm`)
owns the LM (LoRA adapters via peft), feeds this head the (B, T, H) states with their
lengths and, for the speech-text model, puts :class:`SpeechQueryAdapter`'s tokens in front of
the transcript's token embeddings. The head reads ``features: lm`` rows
(:mod:`polyemo.experiment.lm_inputs`); as a module it takes frame-like input (B, T, D) (a
(B, D) input is one token).

``zero_shot_lm``: the class log-likelihoods of a prompted LM (:mod:`polyemo.text_lm.zero_shot`)
as the input of a linear layer. With ``calibrate: false`` (the default) the estimator
(:mod:`polyemo.train.zero_shot_lm`) uses the softmax of the log-likelihoods as they are
(zero-shot: nothing is trained); with ``calibrate: true`` it trains this layer on the
training rows' log-likelihoods (the epoch chosen on validation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from polyemo.heads import HEADS
from polyemo.heads.attentive_stats import AttentiveStatsPooling
from polyemo.heads.base import Head, Output, mlp
from polyemo.heads.linear import LinearHead


@HEADS.register("lm_classifier", "lm")
class LMStatsHead(Head):
    """(B, T, H) LM states + lengths -> attentive mean and std -> MLP -> outputs."""

    input_kind = "frames"
    estimator: ClassVar[str] = "lm"
    #: the experiment rows it reads (``features: lm``), not the tensor layout of ``forward``
    features: ClassVar[str] = "lm"

    def __init__(self, input_dim: int, num_classes: int, outputs: Sequence[Output] | None = None,
                 attention_dim: int = 128, hidden_dim: int = 256, num_layers: int = 1, dropout: float = 0.1,
                 **settings: Any) -> None:
        # the other params configure the LM, LoRA, the speech adapter and training (the estimator reads them)
        super().__init__(input_dim, num_classes, outputs)
        self.pool = AttentiveStatsPooling(input_dim, attention_dim)
        self.body, size = mlp(2 * input_dim, hidden_dim, num_layers, dropout)
        self.out = nn.Linear(size, self.total_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.dim() == 2:
            x = x[:, None, :]
        if x.dim() != 3:
            raise ValueError(f"lm_classifier expects token states (batch, tokens, dim), got {tuple(x.shape)}")
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        return self.split(self.out(self.body(self.pool(x.float(), lengths))))


class SpeechQueryAdapter(nn.Module):
    """Speech tokens (B, S, D) -> ``queries`` vectors (B, Q, H) in the LM's embedding space.

    A few learned queries attend over the speech tokens (the encoder's frames, or its pooled
    layer states as a short sequence), each with a learned position embedding, in the spirit
    of SALMONN's window-level Q-former; a linear layer maps the result to the LM's input
    width and scales it to the LM's token-embedding norm so neither part drowns the other.
    ``queries: 0`` projects every speech token (no attention).
    """

    def __init__(self, speech_dim: int, lm_dim: int, queries: int = 4, positions: int = 1500,
                 heads: int = 4, embedding_norm: float = 1.0) -> None:
        super().__init__()
        width = speech_dim if speech_dim % heads == 0 else heads * math.ceil(speech_dim / heads)
        self.inp = nn.Linear(speech_dim, width)
        self.norm = nn.LayerNorm(width)
        self.position = nn.Parameter(torch.zeros(positions, width))
        self.queries = nn.Parameter(torch.randn(queries, width) * 0.02) if queries else None
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True) if queries else None
        self.out = nn.Linear(width, lm_dim)
        self.register_buffer("scale", torch.tensor(float(embedding_norm)))
        # speech-token standardisation, fitted on training rows (:meth:`fit_standardiser`);
        # (1, D): one for every token, (S, D): one per token position (pooled layer states)
        self.register_buffer("mean", torch.zeros(1, speech_dim))
        self.register_buffer("std", torch.ones(1, speech_dim))

    def fit_standardiser(self, tokens: Sequence[torch.Tensor]) -> None:
        """Per-dimension mean and std of the training rows' speech tokens (per position when
        every row has the same number of tokens, e.g. one per encoder layer)."""
        lengths = {int(t.shape[0]) for t in tokens}
        if len(lengths) == 1 and max(lengths) <= 64:
            stacked = torch.stack(list(tokens))  # (rows, S, D): per position
            mean, std = stacked.mean(0), stacked.std(0, unbiased=False)
        else:
            stacked = torch.cat(list(tokens))  # (all tokens, D): one for every position
            mean, std = stacked.mean(0, keepdim=True), stacked.std(0, unbiased=False, keepdim=True)
        std = std.clamp_min(1e-5)
        self.mean, self.std = mean.to(self.mean), std.to(self.std)

    def forward(self, speech: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n = speech.shape[1]
        if n > self.position.shape[0]:
            raise ValueError(f"{n} speech tokens but the adapter has {self.position.shape[0]} positions "
                             "(raise the head's speech_positions)")
        mean, std = (self.mean, self.std) if self.mean.shape[0] == 1 else (self.mean[:n], self.std[:n])
        x = self.norm(self.inp((speech - mean) / std) + self.position[:n])
        if self.attention is not None:
            pad = torch.arange(n, device=speech.device)[None, :] >= lengths[:, None]
            q = self.queries[None].expand(speech.shape[0], -1, -1)
            x, _ = self.attention(q, x, x, key_padding_mask=pad, need_weights=False)
        y = self.out(x)
        return self.scale * y / y.norm(dim=-1, keepdim=True).clamp_min(1e-6)


@HEADS.register("zero_shot_lm")
class ZeroShotLMHead(LinearHead):
    """A linear layer on the C class log-likelihoods (see the module docstring)."""

    input_kind = "pooled"
    estimator: ClassVar[str] = "zero-shot-lm"
    features: ClassVar[str] = "lm"

    def __init__(self, input_dim: int, num_classes: int, outputs: Sequence[Output] | None = None,
                 dropout: float = 0.0, **settings: Any) -> None:
        super().__init__(input_dim, num_classes, outputs, dropout=dropout)
        if input_dim == num_classes:  # start at the zero-shot decision: logits = log-likelihoods
            with torch.no_grad():
                self.linear.weight.copy_(torch.eye(num_classes, self.total_outputs).T)
                self.linear.bias.zero_()
