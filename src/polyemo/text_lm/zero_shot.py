"""Zero-shot emotion classification with a causal language model, by class-name likelihood.

For each text the prompt (``ZeroShotConfig.prompt``, with ``{text}`` and ``{classes}``) is
followed by each class's answer (``answer``, with ``{label}``: the class's name, or its
``label_names`` entry); the class score is the log-likelihood the LM gives the answer's
tokens after the prompt (summed, or averaged over its tokens with ``length_norm: mean``, so
multi-token names are not penalised). Probabilities are the softmax of the scores. Nothing
is generated, so there is nothing to parse and every text gets a class.

Prompt and answer are tokenised separately and concatenated (the answer's tokens are the
same for every prompt). Any ``AutoModelForCausalLM`` works (GPT-2, LLaMA, ...):
``ZeroShotLM(ZeroShotConfig(model="/models/llama-3.2-1b"), classes)``; hub ids need
``local_files_only: false`` (the default is offline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PROMPT = ("Classify the emotion of the speaker of this utterance as one of: {classes}.\n"
                  "Utterance: \"{text}\"\nEmotion:")


class ZeroShotConfig(BaseModel):
    """The LM, its prompt and how answers are scored."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a local folder or hub id of a transformers causal LM")
    prompt: str = DEFAULT_PROMPT
    answer: str = " {label}"
    label_names: dict[str, str] = Field(default_factory=dict, description="class -> the words the prompt uses")
    length_norm: Literal["sum", "mean"] = "mean"
    batch_size: int = Field(8, ge=1)
    max_prompt_tokens: int = Field(512, ge=8, description="longer prompts keep their last tokens")
    local_files_only: bool = True
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class ZeroShotLM:
    """Scores ``classes`` for texts with a causal LM (see the module)."""

    def __init__(self, config: ZeroShotConfig, classes: Sequence[str], *, model: Any = None, tokenizer: Any = None) -> None:
        import torch

        self.config = config
        self.classes = [str(c) for c in classes]
        if len(self.classes) < 2:
            raise ValueError(f"zero-shot scoring needs at least two classes, got {self.classes}")
        if tokenizer is None or model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(config.model, local_files_only=config.local_files_only)
                model = model or AutoModelForCausalLM.from_pretrained(
                    config.model, local_files_only=config.local_files_only, torch_dtype=getattr(torch, config.dtype))
            except OSError as error:
                raise ValueError(f"zero-shot LM {config.model!r}: cannot load it ({error}); give a local folder "
                                 "or set local_files_only: false to download") from None
        self.tokenizer = tokenizer
        self.model = model.to(config.device).eval()
        self._torch = torch
        names = [config.label_names.get(c, c) for c in self.classes]
        self.answers = [self._ids(config.answer.format(label=n)) for n in names]
        empty = [c for c, a in zip(self.classes, self.answers) if not a]
        if empty:
            raise ValueError(f"the answers of classes {empty} tokenise to nothing")
        self.class_list = ", ".join(names)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, text: str) -> list[int]:
        ids = self._ids(self.config.prompt.format(text=text, classes=self.class_list))
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids[-self.config.max_prompt_tokens:]

    def log_likelihoods(self, texts: Sequence[str]) -> np.ndarray:
        """(N, C) log-likelihood of each class's answer after each text's prompt (each
        distinct text is scored once)."""
        texts = [str(t) for t in texts]
        distinct = list(dict.fromkeys(texts))
        if len(distinct) < len(texts):
            scores = self._log_likelihoods(distinct)
            row = {t: i for i, t in enumerate(distinct)}
            return scores[[row[t] for t in texts]]
        return self._log_likelihoods(texts)

    def _log_likelihoods(self, texts: Sequence[str]) -> np.ndarray:
        torch = self._torch
        rows = [(i, c) for i in range(len(texts)) for c in range(len(self.classes))]
        prompts = [self.prompt_ids(str(t)) for t in texts]
        scores = np.zeros((len(texts), len(self.classes)))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        step = self.config.batch_size * len(self.classes)
        with torch.inference_mode():
            for start in range(0, len(rows), step):
                chunk = rows[start:start + step]
                sequences = [prompts[i] + self.answers[c] for i, c in chunk]
                width = max(len(s) for s in sequences)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for k, s in enumerate(sequences):  # right padding: positions stay 0..len-1
                    ids[k, :len(s)] = torch.tensor(s)
                    mask[k, :len(s)] = 1
                logits = self.model(input_ids=ids.to(self.config.device), attention_mask=mask.to(self.config.device)).logits
                logp = torch.log_softmax(logits.float(), dim=-1).cpu()
                for k, (i, c) in enumerate(chunk):
                    n_prompt, answer = len(prompts[i]), self.answers[c]
                    # token t of the answer is predicted at position n_prompt + t - 1
                    picked = logp[k, n_prompt - 1:n_prompt - 1 + len(answer)].gather(1, torch.tensor(answer)[:, None])
                    total = float(picked.sum())
                    scores[i, c] = total / len(answer) if self.config.length_norm == "mean" else total
        return scores

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        scores = self.log_likelihoods(texts)
        scores = scores - scores.max(axis=1, keepdims=True)
        probabilities = np.exp(scores)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(texts).argmax(axis=1)]
