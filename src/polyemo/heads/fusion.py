"""Cross-attention fusion: speech frames attend over a transcript's text tokens.

Input layout (what :mod:`polyemo.experiment.text_inputs` serves with ``text.fusion:
cross_attention``): each row is a frame sequence ``(T_speech + K, speech_dim + text_dim)``:
the speech frames first (text part zero), then exactly ``K`` text-token slots (speech part
zero; slots past the transcript's length are all zero and masked). ``lengths`` count both,
so the text slots of row b are frames ``[lengths[b] - K, lengths[b])``.

The head projects speech frames to queries and text tokens to keys/values (``dim``),
adds multi-head attention over the (unmasked) tokens to each frame (residual + layer norm),
mean-pools the speech frames, appends the mean of the projected tokens and classifies with
an MLP. A row without any token gets no attention (its frames pass through unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from polyemo.heads import HEADS
from polyemo.heads.base import Head, Output, frame_mask, masked_mean, mlp


@HEADS.register("cross_attention", "fusion_cross_attention")
class CrossAttentionFusionHead(Head):
    input_kind = "frames"

    def __init__(self, input_dim: int, num_classes: int, outputs: Sequence[Output] | None = None, *,
                 speech_dim: int, text_tokens: int = 32, dim: int = 128, heads: int = 4, hidden_dim: int = 128,
                 num_layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__(input_dim, num_classes, outputs)
        if not 0 < speech_dim < input_dim:
            raise ValueError(f"cross_attention: speech_dim must be in (0, {input_dim}), got {speech_dim}")
        if text_tokens < 1 or dim % heads:
            raise ValueError("cross_attention: text_tokens >= 1 and dim divisible by heads")
        self.speech_dim, self.text_tokens = int(speech_dim), int(text_tokens)
        self.speech = nn.Linear(speech_dim, dim)
        self.text = nn.Linear(input_dim - speech_dim, dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        body, size = mlp(2 * dim, hidden_dim, num_layers, dropout)
        self.body = body
        self.out = nn.Linear(size, self.total_outputs)

    def split_inputs(self, x: torch.Tensor, lengths: torch.Tensor):
        """(speech frames, their lengths, text tokens (B, K, text_dim), token mask (B, K) True = real)."""
        k = self.text_tokens
        speech_lengths = lengths - k
        if bool((speech_lengths < 1).any()):
            raise ValueError(f"cross_attention: a row has no speech frames before its {k} text slots")
        index = speech_lengths[:, None] + torch.arange(k, device=x.device)[None, :]  # (B, K)
        tokens = torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))[..., self.speech_dim:]
        real = tokens.abs().sum(-1) > 0
        return x[..., : self.speech_dim], speech_lengths, tokens, real

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
        speech, speech_lengths, tokens, real = self.split_inputs(x, lengths)
        frames = self.speech(speech)
        keys = self.text(tokens)
        has_text = real.any(1)
        mask = ~real
        mask[~has_text] = False  # no token at all: attend to the zero slots, then drop the result
        attended, _ = self.attention(frames, keys, keys, key_padding_mask=mask, need_weights=False)
        attended = attended * has_text[:, None, None].to(attended.dtype)
        fused = self.norm(frames + attended)
        pooled = masked_mean(fused, frame_mask(speech_lengths, x.shape[1]))
        text_mean = masked_mean(keys, real)
        return self.split(self.out(self.body(torch.cat([pooled, text_mean], dim=-1))))
