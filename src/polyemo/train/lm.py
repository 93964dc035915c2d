"""The ``lm`` estimator: a causal LM fine-tuned with LoRA as an emotion classifier (issue 14).

Abhinaya's T2 (text LLM + LoRA, last layer -> attentive statistics pooling -> softmax head,
vector-scaling loss) and ST1 (speech + transcript into the LLM). Rows come from
``features: lm`` (:mod:`polyemo.experiment.lm_inputs`): each row's text, its language and,
for the speech-text model, its speech tokens (pooled layer states or frames).

Model: the LM backbone (:func:`polyemo.encoders.lm.load_lm`, any causal LM folder or the
packaged Whisper decoder) with LoRA adapters (peft) on its attention projections; speech
tokens pass :class:`~polyemo.heads.lm.SpeechQueryAdapter` (a few learned queries attending
over them, projected into the LM's input-embedding space) and are put in front of the text's
token embeddings; the LM's last-layer states of all positions go to the ``lm_classifier``
head (:class:`~polyemo.heads.lm.LMStatsHead`: attentive statistics pooling + MLP). Only the
adapters, the speech adapter and the head train; the LM's own weights stay frozen (tested).

The loss is the experiment's ``loss:`` (``vs``, ``weighted_focal``, ... with the training class
counts), so each member of an ensemble chooses its own. The epoch is chosen on the validation
rows (``training.selection_metric``); ``refit_settings`` fixes it for a refit on train +
validation. Saved: ``lm.pt`` holds only the trained tensors and ``lm.json`` the LM's name and
weights hash (checked on load).

Head params (besides the head's own ``attention_dim``, ``hidden_dim``, ``num_layers``,
``dropout``): ``lm`` (folder, hub id or ``whisper-base``), ``local_files_only``, ``dtype``,
``max_tokens``, ``lm_layers`` (keep only the LM's first k layers: cheaper, for small
machines), ``lora`` (``r``, ``alpha``, ``dropout``, ``targets``; ``r: 0`` freezes the LM),
``lora_lr``, ``queries`` (speech adapter; 0: project every speech token), ``speech_positions``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from polyemo.io import atomic_path, write_json, write_text
from polyemo.train.data import DataError, FitReceipt, SplitData
from polyemo.train.estimator import Estimator, FitReport, HeadOutput, epoch_refit_settings
from polyemo.train.registry import ESTIMATORS
from polyemo.train.trainer import EpochSampler, seeded

WEIGHTS_FILE = "lm.pt"
INFO_FILE = "lm.json"
HEAD_KEYS = ("attention_dim", "hidden_dim", "num_layers", "dropout")


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    targets: list[str] | None = None


class LMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lm: str = "whisper-base"
    local_files_only: bool = True
    dtype: str = "float32"
    max_tokens: int = Field(64, ge=1)
    lm_layers: int | None = Field(None, ge=1)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    lora_lr: float | None = Field(None, gt=0)
    queries: int = Field(4, ge=0)
    #: position embeddings of the speech adapter: the most speech tokens a row may have (1500: Whisper's 30 s of frames)
    speech_positions: int = Field(1500, ge=1)
    attention_dim: int = 128
    hidden_dim: int = 256
    num_layers: int = 1
    dropout: float = 0.1

    @classmethod
    def of(cls, params: dict[str, Any]) -> LMSettings:
        return cls(**params)


def _truncate(backbone, layers: int) -> None:
    """Keep the first ``layers`` transformer blocks of the LM (GPT-2 ``h``, LLaMA/Whisper ``layers``)."""
    model = backbone.model
    for attribute in ("layers", "h"):
        blocks = getattr(model, attribute, None)
        if isinstance(blocks, nn.ModuleList):
            if layers < len(blocks):
                setattr(model, attribute, blocks[:layers])
                for key in ("num_hidden_layers", "n_layer", "decoder_layers"):
                    if hasattr(model.config, key):
                        setattr(model.config, key, layers)
            return
    raise ValueError(f"lm_layers: cannot find the transformer blocks of a {backbone.model_type!r} model")


class LMClassifier(nn.Module):
    """Backbone (+ LoRA) and the speech adapter and head; ``forward(rows)`` -> head outputs."""

    def __init__(self, backbone, head: nn.Module, adapter: nn.Module | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.adapter = adapter

    def forward(self, ids: list[list[int]], speech: list[np.ndarray | None]) -> dict[str, torch.Tensor]:
        if self.adapter is None:
            # text alone: identical token sequences (one sentence read in many emotions) give
            # identical states, so each is run once and its outputs shared (gradients add up)
            unique: dict[tuple[int, ...], int] = {}
            where = [unique.setdefault(tuple(row), len(unique)) for row in ids]
            if len(unique) < len(ids):
                out = self._forward([list(u) for u in unique], [None] * len(unique))
                index = torch.tensor(where, device=self.head.out.weight.device)
                return {k: v[index] for k, v in out.items()}
        return self._forward(ids, speech)

    def _forward(self, ids: list[list[int]], speech: list[np.ndarray | None]) -> dict[str, torch.Tensor]:
        device = self.head.out.weight.device
        embed = self.backbone.embed
        pieces = []
        for row_ids, row_speech in zip(ids, speech):
            text = embed(torch.tensor(row_ids, dtype=torch.long, device=device))
            if self.adapter is not None:
                if row_speech is None:
                    raise DataError("the speech-text model got a row without speech tokens")
                s = torch.as_tensor(row_speech, dtype=torch.float32, device=device)[None]
                prefix = self.adapter(s, torch.tensor([s.shape[1]], device=device))[0].to(text.dtype)
                text = torch.cat([prefix, text], dim=0)
            pieces.append(text)
        lengths = torch.tensor([len(p) for p in pieces], device=device)
        width = int(lengths.max())
        hidden = pieces[0].shape[-1]
        batch = pieces[0].new_zeros((len(pieces), width, hidden))
        for k, p in enumerate(pieces):  # right padding: a causal LM's real positions never see it
            batch[k, :len(p)] = p
        mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()
        states = self.backbone(batch, mask)
        return self.head(states.float(), lengths)


@ESTIMATORS.register("lm")
class LMEstimator(Estimator):
    kind = "lm"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.settings = LMSettings.of(self.head_config.params)
        if self.train_config.normalisation != "none":
            raise ValueError(f"the lm estimator reads texts: normalisation must be none, not {self.train_config.normalisation!r}")
        self.model: LMClassifier | None = None
        self.speech_dim: int | None = None
        self.lm_weights: str | None = None

    @property
    def device(self) -> torch.device:
        return torch.device(self.train_config.device)

    # ------------------------------------------------------------------ rows
    def _rows(self, data: SplitData) -> tuple[list[list[int]], list[np.ndarray | None]]:
        from polyemo.text_lm.rows import unpack_row

        if not data.is_frames:
            raise DataError("the lm head reads 'features: lm' rows (texts), got pooled features")
        ids, speech = [], []
        for row in data.features:
            text, language, tokens = unpack_row(row)
            ids.append(self.model.backbone.token_ids(text, language))
            speech.append(tokens)
        return ids, speech

    def _build(self, speech_dim: int | None) -> LMClassifier:
        from polyemo.encoders.lm import load_lm
        from polyemo.heads.lm import LMStatsHead, SpeechQueryAdapter

        s = self.settings
        backbone = load_lm(s.lm, local_files_only=s.local_files_only, dtype=s.dtype, max_tokens=s.max_tokens)
        if s.lm_layers is not None:
            _truncate(backbone, s.lm_layers)
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)
        if s.lora.r > 0:
            from peft import LoraConfig, inject_adapter_in_model

            config = LoraConfig(r=s.lora.r, lora_alpha=s.lora.alpha, lora_dropout=s.lora.dropout,
                                target_modules=s.lora.targets or backbone.lora_targets(),
                                fan_in_fan_out=backbone.model_type == "gpt2")
            backbone.model = inject_adapter_in_model(config, backbone.model)
            for name, parameter in backbone.named_parameters():
                parameter.requires_grad_("lora_" in name)
        hidden = backbone.hidden_size
        head = LMStatsHead(hidden, self.num_classes, attention_dim=s.attention_dim, hidden_dim=s.hidden_dim,
                           num_layers=s.num_layers, dropout=s.dropout)
        adapter = None
        if speech_dim:
            norm = float(backbone.input_embeddings.weight.detach().float().norm(dim=-1).mean())
            adapter = SpeechQueryAdapter(speech_dim, hidden, queries=s.queries, positions=s.speech_positions,
                                         embedding_norm=norm)
        self.lm_weights = backbone.weights
        return LMClassifier(backbone, head, adapter).to(self.device)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The tensors training changes (LoRA, speech adapter, head), detached copies."""
        return {k: v.detach().clone() for k, v in self.model.named_parameters() if v.requires_grad} | \
            {k: v.detach().clone() for k, v in self.model.named_buffers() if not k.startswith("backbone.")}

    # ------------------------------------------------------------------ training
    def _outputs(self, ids, speech, order=None) -> np.ndarray:
        size = self.train_config.eval_batch_size or self.train_config.batch_size
        order = np.argsort([len(i) for i in ids], kind="stable") if order is None else order
        out = np.zeros((len(ids), self.num_classes))
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(ids), size):
                pick = order[start:start + size]
                logits = self.model([ids[i] for i in pick], [speech[i] for i in pick])["emotion"]
                out[pick] = torch.softmax(logits.double(), dim=-1).cpu().numpy()
        return out

    def _fit(self, train: SplitData, val: SplitData) -> FitReport:
        from transformers import get_linear_schedule_with_warmup

        from polyemo.progress import progress_bar
        from polyemo.train.adapters import build_emotion_loss, classification_scores

        cfg = self.train_config
        first = train.features[0]
        self.speech_dim = int(first.shape[2]) if first.shape[2] > 1 else None
        with seeded(cfg.seed, cfg.deterministic, self.device, cfg.num_threads):
            self.model = self._build(self.speech_dim)
            train_ids, train_speech = self._rows(train)
            val_ids, val_speech = self._rows(val)
            if self.model.adapter is not None:  # raw encoder statistics differ wildly in scale
                self.model.adapter.fit_standardiser([torch.as_tensor(t) for t in train_speech])
            counts = np.bincount(train.labels[train.labels >= 0], minlength=self.num_classes)
            loss_fn = build_emotion_loss(cfg.loss, counts, cfg.loss_params, cfg.label_smoothing)
            masks = None if train.masks is None else torch.as_tensor(train.masks, dtype=torch.bool)
            labels = torch.as_tensor(train.labels, dtype=torch.long)
            sampler = EpochSampler(train.labels, cfg.sampling, torch.Generator().manual_seed(cfg.seed))
            lora = [p for n, p in self.model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
            rest = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
            optimizer = torch.optim.AdamW([{"params": rest, "lr": cfg.lr},
                                           {"params": lora, "lr": self.settings.lora_lr or cfg.lr}],
                                          weight_decay=cfg.weight_decay)
            steps = cfg.epochs * math.ceil(math.ceil(len(sampler) / cfg.batch_size) / cfg.grad_accum)
            scheduler = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * steps), steps)
            trainable = lora + rest
            history: list[dict[str, Any]] = []
            best_score, best_epoch, best_state, best_metrics, stale = -math.inf, None, None, {}, 0
            with progress_bar("{task.fields[status]}", enabled=cfg.show_progress, transient=True) as progress:
                task = progress.add_task("lm epochs", total=cfg.epochs, status="")
                for epoch in range(1, cfg.epochs + 1):
                    started = time.perf_counter()
                    self.model.train()
                    order = sampler.epoch()
                    batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
                    total = 0.0
                    for b, index in enumerate(batches):
                        rows = index.tolist()
                        out = self.model([train_ids[i] for i in rows], [train_speech[i] for i in rows])
                        loss = loss_fn(out["emotion"], labels[rows].to(self.device),
                                       None if masks is None else masks[rows].to(self.device))
                        if not torch.isfinite(loss):
                            raise FloatingPointError(f"lm training loss became {float(loss)} in epoch {epoch}; lower the learning rate")
                        (loss / cfg.grad_accum).backward()
                        total += float(loss.detach())
                        if (b + 1) % cfg.grad_accum == 0 or b + 1 == len(batches):
                            if cfg.max_grad_norm is not None:
                                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                            optimizer.step()
                            scheduler.step()
                            optimizer.zero_grad(set_to_none=True)
                    probabilities = self._outputs(val_ids, val_speech)
                    scores = classification_scores(val.labels, probabilities.argmax(1), self.class_names)
                    metrics = {"ua": scores["ua"], "wa": scores["wa"], "macro_f1": scores["macro_f1"]}
                    score = float(metrics[cfg.selection_metric])
                    improved = best_state is None or score > best_score + cfg.min_delta or cfg.checkpoint == "last"
                    history.append({"epoch": epoch, "train_loss": total / max(len(batches), 1),
                                    **{f"val_{k}": v for k, v in metrics.items()},
                                    "seconds": round(time.perf_counter() - started, 3), "best": improved})
                    if improved:
                        best_score, best_epoch, best_metrics, stale = score, epoch, scores, 0
                        best_state = self.trained_state()
                    else:
                        stale += 1
                    if cfg.log_path is not None:
                        write_text(cfg.log_path, "".join(json.dumps(r) + "\n" for r in history))
                    progress.update(task, advance=1, status=f"lm val {cfg.selection_metric} {score:.3f} (best {best_score:.3f} @ {best_epoch})")
                    if cfg.patience is not None and stale >= cfg.patience and cfg.checkpoint == "best":
                        break
            self.model.load_state_dict(best_state, strict=False)
            self.model.eval()
        return FitReport(best_epoch, best_score, history, best_metrics, FitReceipt(finished_at=time.time(), best_epoch=best_epoch))

    def refit_settings(self, report: FitReport):
        return epoch_refit_settings(self, report)

    def _predict(self, data: SplitData) -> HeadOutput:
        if self.model is None:
            raise RuntimeError("the lm estimator has no model (fit or load it first)")
        if len(data) == 0:
            return HeadOutput(np.zeros((0, self.num_classes)))
        cfg = self.train_config
        with seeded(cfg.seed, cfg.deterministic, self.device, cfg.num_threads):
            ids, speech = self._rows(data)
            if (self.speech_dim is None) != all(s is None for s in speech):
                raise DataError("the rows' speech tokens do not match the model's (text-only vs speech-text)")
            return HeadOutput(self._outputs(ids, speech))

    # ------------------------------------------------------------------ persistence
    def _save_head(self, directory: Path) -> None:
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            torch.save(self.trained_state(), tmp)
        write_json(directory / INFO_FILE, {"lm": self.settings.lm, "lm_weights": self.lm_weights, "speech_dim": self.speech_dim})

    def _load_head(self, directory: Path) -> None:
        info = json.loads((directory / INFO_FILE).read_text(encoding="utf-8"))
        self.speech_dim = info["speech_dim"]
        self.model = self._build(self.speech_dim)
        if info.get("lm_weights") and self.lm_weights != info["lm_weights"]:
            raise ValueError(f"{directory}: trained on LM {info['lm']!r} with weights {info['lm_weights']}, "
                             f"but {self.settings.lm!r} now has weights {self.lm_weights}")
        state = torch.load(directory / WEIGHTS_FILE, map_location=self.device, weights_only=True)
        missing = set(self.trained_state()) - set(state)
        if missing:
            raise ValueError(f"{directory / WEIGHTS_FILE}: lacks trained tensors {sorted(missing)[:5]}")
        if self.model.adapter is not None:  # the standardiser's shape is the training rows' (per position or one)
            self.model.adapter.mean = torch.empty_like(state["adapter.mean"])
            self.model.adapter.std = torch.empty_like(state["adapter.std"])
        self.model.load_state_dict(state, strict=False)
        self.model.eval()

