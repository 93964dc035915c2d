"""The ``text:`` block of an experiment: a transcript branch fused with the speech features.

Rows get a text (``source``): the ASR stage's ``transcript`` (:mod:`polyemo.encoders.asr`,
cached by audio content, decoded with ``asr``) or the manifest's own ``text``. A text encoder
(``encoder``: ``whisper-decoder``, the offline default, or any transformers text model by
path, see :mod:`polyemo.encoders.text`) turns it into per-layer pooled features; ``layer``
picks one of its layers (``last``, ``mean`` of all, or an index). ``fusion``:

- ``concat`` (the IS25-SER seed's): every speech layer's pooled vector gets the text vector
  appended, so the head's learned layer weights act on the speech part and the text part
  passes through unchanged (the weights sum to 1);
- ``text``: the text vector alone (one "layer"), to measure the text branch by itself;
- ``cross_attention`` (``features: frames``): each row's speech frames followed by ``tokens``
  text-token slots (the chosen layer's token states), for the ``cross_attention`` head
  (:mod:`polyemo.heads.fusion`: speech frames attend over the tokens; set its ``speech_dim``).

:mod:`polyemo.experiment.text_inputs` serves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ASRSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "whisper-base"
    language: str = "manifest"
    beams: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1)
    #: the transcript store (default: the user cache's transcripts.sqlite)
    store: Path | None = None


class TextSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    encoder: str = "whisper-decoder"
    options: dict[str, Any] = Field(default_factory=dict)
    source: Literal["transcript", "text"] = "transcript"
    asr: ASRSpec = Field(default_factory=ASRSpec)
    layer: int | Literal["last", "mean"] = "last"
    fusion: Literal["concat", "text", "cross_attention"] = "concat"
    #: cross_attention: text-token slots per row (longer transcripts are cut, shorter ones padded)
    tokens: int = Field(32, ge=1)
    cache_dir: Path | None = None
