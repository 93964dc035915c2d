"""Causal language models as trainable backbones: token embeddings in, last-layer states out.

:func:`load_lm` opens any transformers causal LM folder (GPT-2, LLaMA, Qwen, ...: its base
model, without the LM head, which a classifier never needs) or a Whisper model (the packaged
``whisper-base``, a folder or hub id: its decoder used as a text LM, without cross-attention,
prompted with ``<|startoftranscript|><|lang|><|transcribe|><|notimestamps|>``). The
:class:`LMBackbone` it returns embeds token ids (:meth:`LMBackbone.embed`) and runs the
transformer on input embeddings (:meth:`LMBackbone.forward`), so callers may put other
vectors (projected speech) in front of the text tokens. Nothing is downloaded unless
``local_files_only=False``.

This is an encoder file but registers nothing in ``ENCODERS``: a speech ``Encoder`` takes
waveforms, an LM backbone takes strings and is trained (LoRA) by
:mod:`polyemo.train.lm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

#: LoRA targets per model type (attention projections; peft's own defaults for the rest)
LORA_TARGETS = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"], "whisper": ["q_proj", "v_proj"],
                "qwen2": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "gemma": ["q_proj", "v_proj"],
                "opt": ["q_proj", "v_proj"], "gpt_neox": ["query_key_value"], "phi": ["q_proj", "v_proj"]}


class LMBackbone(nn.Module):
    """A causal LM's transformer (``model``) with its tokenizer; see the module docstring."""

    def __init__(self, model: nn.Module, tokenizer: Any, model_type: str, *, name: str = "",
                 weights: str = "", prefix: list[int] | None = None, suffix: list[int] | None = None,
                 languages: dict[str, int] | None = None, max_tokens: int = 128) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.model_type = model_type
        self.name, self.weights = name, weights
        self.prefix, self.suffix = list(prefix or []), list(suffix or [])
        self.languages = dict(languages or {})
        self.max_tokens = int(max_tokens)

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        return int(getattr(config, "hidden_size", None) or getattr(config, "d_model", None) or config.n_embd)

    @property
    def input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def lora_targets(self) -> list[str]:
        return LORA_TARGETS.get(self.model_type, ["q_proj", "v_proj"])

    def token_ids(self, text: str, language: str | None = None) -> list[int]:
        """The ids the LM reads for one text: prompt prefix (Whisper: with the language), the
        text (at most ``max_tokens``), the end token."""
        prefix = list(self.prefix)
        if language and language in self.languages:
            prefix.insert(1, self.languages[language])
        body = self.tokenizer.encode((" " + text) if self.model_type == "whisper" and text else text,
                                     add_special_tokens=False)[: self.max_tokens] if text else []
        ids = prefix + list(body) + self.suffix
        if not ids:  # an empty text of a model without BOS/EOS: one pad/unk token
            fallback = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
            ids = [int(fallback)]
        return ids

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.input_embeddings(ids)

    def forward(self, embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) last-layer states of right-padded input embeddings (mask (B, T), 1 = real)."""
        out = self.model(inputs_embeds=embeddings, attention_mask=attention_mask)
        return out.last_hidden_state


def _special(tokenizer: Any, name: str) -> list[int]:
    value = getattr(tokenizer, f"{name}_token_id", None)
    return [] if value is None else [int(value)]


def load_lm(name: str, *, local_files_only: bool = True, dtype: str = "float32", max_tokens: int = 128) -> LMBackbone:
    """The backbone of a causal LM folder, hub id (``local_files_only=False``) or packaged Whisper."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    import polyemo.encoders.whisper  # noqa: F401  (registers the packaged Whisper folders)
    from polyemo.encoders.hf import ModelNotFoundError, quiet_loading, resolve_model, weights_hash

    torch_dtype = getattr(torch, dtype)
    path = Path(name).expanduser()
    try:
        folder = resolve_model(name).path if (path.exists() or local_files_only) else name
    except ModelNotFoundError as error:
        raise ValueError(f"language model {name!r}: {error}") from None
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=local_files_only)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_files_only)
        with quiet_loading():
            if config.model_type == "whisper":
                from transformers import GenerationConfig, WhisperModel

                model = WhisperModel.from_pretrained(folder, local_files_only=local_files_only, dtype=torch_dtype).get_decoder()
            else:
                model = AutoModel.from_pretrained(folder, local_files_only=local_files_only, dtype=torch_dtype)
    except OSError as error:
        raise ValueError(f"language model {name!r}: cannot load it ({error}); give a local folder of a "
                         "transformers causal LM or set local_files_only: false to download") from None
    weights = weights_hash(Path(folder)) if Path(folder).exists() else str(name)
    if config.model_type == "whisper":
        generation = GenerationConfig.from_pretrained(folder, local_files_only=local_files_only)
        tasks = getattr(generation, "task_to_id", None) or {}
        prefix = [int(generation.decoder_start_token_id)]
        prefix += [int(t) for t in (tasks.get("transcribe"), getattr(generation, "no_timestamps_token_id", None))
                   if t is not None]
        languages = {k.strip("<|>"): int(v) for k, v in (getattr(generation, "lang_to_id", None) or {}).items()}
        return LMBackbone(model, tokenizer, "whisper", name=str(name), weights=weights, prefix=prefix,
                          suffix=[int(generation.eos_token_id)], languages=languages,
                          max_tokens=min(max_tokens, config.max_target_positions - 8))
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"language model {name!r}: {config.model_type!r} is not a causal LM")
    return LMBackbone(model, tokenizer, config.model_type, name=str(name), weights=weights,
                      prefix=_special(tokenizer, "bos"), suffix=_special(tokenizer, "eos"), max_tokens=max_tokens)
