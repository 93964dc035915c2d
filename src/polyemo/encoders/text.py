"""Text encoders: transcripts in, per-layer token and pooled features out.

Why a registry of its own (``TEXT_ENCODERS``) beside ``ENCODERS``: the speech
:class:`~polyemo.encoders.base.Encoder` takes 16 kHz waveforms and is addressed by audio
content; a text encoder takes strings (and, for Whisper's decoder, the language they are in),
so its input, its cache key (the text's hash, see :mod:`polyemo.cache.text_store`) and its
pooling differ. What they share is the identity (:class:`EncoderIdentity`: name, weights
hash, options) and the output layout: every layer (embedding output first), token features
``(layers, tokens, dim)`` and pooled features ``(layers, dim)`` (the mean over tokens).

- any transformers text model by local path or hub id (:class:`TransformersTextEncoder`:
  BERT, RoBERTa, XLM-R, ...; encoder-decoder models use their encoder), resolved like the
  speech encoders (local folder, Hugging Face cache, hub when online);
- ``whisper-decoder`` (:class:`WhisperDecoderText`): the offline default, no text model
  needed. Whisper's own decoder, teacher-forced on the transcript with its usual prompt
  (``<|startoftranscript|><|lang|><|transcribe|><|notimestamps|>`` text ``<|endoftext|>``),
  cross-attending to the encoder's output for 30 s of digital silence (so the features
  depend on the text and its language only); mean over the text tokens and the end token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from polyemo.encoders.base import EncoderIdentity
from polyemo.registry import Registry

TEXT_ENCODERS: Registry[Callable[..., TextEncoder]] = Registry("text encoder")
DEFAULT_TEXT_ENCODER = "whisper-decoder"


class TextEncoder(ABC):
    """Strings in; every layer's token features and their mean out."""

    #: hidden states returned (embedding output + every layer)
    num_layers: int
    #: feature size of one layer
    dim: int
    #: whether the language of a text changes its features (part of the cache key)
    uses_language: bool = False

    @property
    @abstractmethod
    def identity(self) -> EncoderIdentity:
        """Name, weights hash and output-changing options."""

    @abstractmethod
    def _batch(self, texts: list[str], languages: list[str | None]) -> list[np.ndarray]:
        """Token features (layers, tokens, dim) float32 of each text; the pooled tokens only."""

    def tokens(self, texts: list[str], languages: list[str | None] | None = None, batch_size: int = 16) -> list[np.ndarray]:
        """(layers, tokens, dim) per text (the tokens that are pooled)."""
        texts = [_text(t) for t in texts]
        languages = list(languages) if languages is not None else [None] * len(texts)
        if len(languages) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(languages)} languages")
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                out += self._batch(texts[start:start + batch_size], languages[start:start + batch_size])
        return out

    def pool(self, tokens: np.ndarray) -> np.ndarray:
        """(layers, tokens, dim) -> (layers, dim): the mean over tokens."""
        return tokens.astype(np.float32).mean(axis=1)

    def pooled(self, texts: list[str], languages: list[str | None] | None = None, batch_size: int = 16) -> np.ndarray:
        """(N, layers, dim) float32."""
        if not texts:
            return np.zeros((0, self.num_layers, self.dim), np.float32)
        return np.stack([self.pool(t) for t in self.tokens(texts, languages, batch_size)])


def _text(value: Any) -> str:
    """A text as encoded: white space collapsed; a missing text (None, NaN, NA) is empty."""
    if not isinstance(value, str):
        import pandas as pd

        if value is None or pd.isna(value):
            return ""
    return " ".join(str(value).split())


class TransformersTextEncoder(TextEncoder):
    """Any transformers text model (AutoModel + AutoTokenizer): all hidden states, mean over
    the attended tokens (special tokens included, as sentence-embedding pooling does)."""

    def __init__(self, name: str, *, max_tokens: int = 128) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from polyemo.encoders.hf import quiet_loading, resolve_model, weights_hash

        self.resolved = resolve_model(name)
        folder = self.resolved.path
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        with quiet_loading():
            model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        if getattr(config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.model = model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.max_tokens = int(max_tokens)
        self.num_layers = int(getattr(config, "num_hidden_layers", getattr(config, "num_layers", 0))) + 1
        self.dim = int(getattr(config, "hidden_size", getattr(config, "d_model", 0)))
        self._weights = weights_hash(folder)

    @property
    def identity(self) -> EncoderIdentity:
        return EncoderIdentity(f"text:{self.resolved.name}", self._weights, "fp32",
                               {"max_tokens": self.max_tokens, "pooling": "mean"})

    def _batch(self, texts: list[str], languages: list[str | None]) -> list[np.ndarray]:
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        states = self.model(**encoded, output_hidden_states=True).hidden_states
        stacked = torch.stack(states, dim=1).float()  # (batch, layers, tokens, dim)
        lengths = encoded["attention_mask"].sum(1).tolist()
        starts = [0] * len(texts)
        if getattr(self.tokenizer, "padding_side", "right") == "left":
            starts = [encoded["attention_mask"].shape[1] - n for n in lengths]
        return [stacked[i, :, s:s + n].numpy() for i, (s, n) in enumerate(zip(starts, lengths))]


class WhisperDecoderText(TextEncoder):
    """Whisper's decoder states on a transcript (see the module docstring)."""

    uses_language = True

    def __init__(self, name: str = "whisper-base", *, max_tokens: int = 128) -> None:
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig, WhisperFeatureExtractor, WhisperModel

        import polyemo.encoders.whisper  # noqa: F401  (registers the packaged Whisper folders)
        from polyemo.encoders.hf import quiet_loading, resolve_model, weights_hash

        self.resolved = resolve_model(name)
        folder = self.resolved.path
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if config.model_type != "whisper":
            raise ValueError(f"{folder}: model type {config.model_type!r} is not whisper")
        with quiet_loading():
            model = WhisperModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
        self.decoder = model.get_decoder()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        generation = GenerationConfig.from_pretrained(folder, local_files_only=True)
        self.languages = {k.strip("<|>"): v for k, v in (getattr(generation, "lang_to_id", None) or {}).items()}
        self.start = int(generation.decoder_start_token_id)
        self.end = int(generation.eos_token_id)
        task_ids = getattr(generation, "task_to_id", None) or {}
        self.transcribe = task_ids.get("transcribe")
        self.no_timestamps = getattr(generation, "no_timestamps_token_id", None)
        self.max_tokens = min(int(max_tokens), config.max_target_positions - 8)
        # the cross-attention context: the encoder's output for 30 s of digital silence
        extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        mel = extractor(np.zeros(16_000, np.float32), sampling_rate=16_000, return_tensors="pt")["input_features"]
        with torch.inference_mode():
            self.context = model.get_encoder()(mel).last_hidden_state  # (1, frames, d_model)
        del model
        self.num_layers = config.decoder_layers + 1
        self.dim = config.d_model
        self._weights = weights_hash(folder)

    @property
    def identity(self) -> EncoderIdentity:
        return EncoderIdentity(f"whisper-decoder:{self.resolved.name}", self._weights, "fp32",
                               {"max_tokens": self.max_tokens, "context": "silence-30s", "pooling": "mean-text+eot"})

    def prompt(self, language: str | None) -> list[int]:
        ids = [self.start]
        if language is not None and language in self.languages:
            ids.append(self.languages[language])
        ids += [t for t in (self.transcribe, self.no_timestamps) if t is not None]
        return ids

    def _batch(self, texts: list[str], languages: list[str | None]) -> list[np.ndarray]:
        rows, spans = [], []
        for text, language in zip(texts, languages):
            prompt = self.prompt(language)
            body = self.tokenizer.encode(" " + text, add_special_tokens=False)[: self.max_tokens] if text else []
            rows.append(prompt + body + [self.end])
            spans.append((len(prompt), len(body) + 1))  # the text tokens and the end token
        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), self.end, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        # causal decoder: right padding never changes the states of the real tokens
        states = self.decoder(input_ids=ids, encoder_hidden_states=self.context.expand(len(rows), -1, -1),
                              output_hidden_states=True).hidden_states
        stacked = torch.stack(states, dim=1).float()
        return [stacked[i, :, s:s + n].numpy() for i, (s, n) in enumerate(spans)]


@TEXT_ENCODERS.register("whisper-decoder")
def _whisper_decoder(model: str = "whisper-base", **options) -> WhisperDecoderText:
    """Whisper's decoder states on the transcript (packaged whisper-base by default)."""
    return WhisperDecoderText(model, **options)


def get_text_encoder(name: str = DEFAULT_TEXT_ENCODER, **options) -> TextEncoder:
    """A registered text encoder, else any transformers text model by local path or hub id."""
    if name in TEXT_ENCODERS:
        return TEXT_ENCODERS.get(name)(**options)
    return TransformersTextEncoder(name, **options)
