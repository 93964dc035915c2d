"""The fine-tuning loop: one process or several (DDP), resumable from a checkpoint per epoch.

One optimiser step is ``grad_accum`` batches of ``batch_size`` clips (the GLOBAL batch: with
N processes each takes every N-th clip of it and the loss of each process is scaled so the
averaged gradient is the gradient of the whole batch's mean loss, the same as one process
computes). AdamW over the parameter groups of :meth:`FinetuneModel.parameter_groups`,
linear warm-up over ``warmup_ratio`` of the steps then linear decay, gradient clipping,
bf16 autocast only where the device computes it natively.

After every epoch the model is scored on the validation clips (speakers of the TRAINING
data) and the best epoch's trained tensors are kept; then ``state.pt`` is written
atomically: trained tensors, optimiser, scheduler, the torch RNG and the sampler's
generator, the history and the best so far. A run that finds a state of the same job
(``fingerprint``) resumes after its epoch and ends with the same numbers as one that was
never interrupted (crops and augmentation are functions of seed, epoch and position).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyemo.train.config import TrainConfig
from polyemo.train.finetuning.audio import (
    epoch_batches,
    eval_batches,
    eval_input,
    input_lengths,
    training_input,
)
from polyemo.train.finetuning.model import FinetuneModel, WhisperTrainable, load_trainable_encoder
from polyemo.train.finetuning.settings import FinetuneSettings

STATE_FILE = "state.pt"
#: bytes of frozen-prefix outputs kept in memory per process
PREFIX_CACHE_BYTES = int(os.environ.get("POLYEMO_PREFIX_CACHE_MB", "4096")) * (1 << 20)


@dataclass
class Job:
    """Everything one fine-tuning fit needs (picklable: DDP workers receive it)."""

    settings: FinetuneSettings
    config: TrainConfig
    num_classes: int
    class_names: list[str]
    train_waves: list[np.ndarray]
    train_labels: np.ndarray
    train_masks: np.ndarray | None
    val_waves: list[np.ndarray]
    val_labels: np.ndarray
    state_dir: Path | None = None
    #: DDP rendezvous (file:// URL) when world > 1
    init_method: str | None = None
    result_path: Path | None = None

    def fingerprint(self) -> str:
        """What a saved state must match to be resumed: settings, training config, data."""
        digest = hashlib.sha256()
        config = self.config.model_dump(mode="json", exclude={"show_progress", "log_path", "checkpoint_path", "device"})
        digest.update(json.dumps([self.settings.model_dump(mode="json"), config, self.class_names],
                                 sort_keys=True).encode())
        for waves, labels in ((self.train_waves, self.train_labels), (self.val_waves, self.val_labels)):
            digest.update(np.asarray(labels, dtype=np.int64).tobytes())
            digest.update(np.array([w.size for w in waves], dtype=np.int64).tobytes())
            for w in waves:  # a cheap content check: a few samples of each clip
                digest.update(np.asarray(w[:: max(1, w.size // 16)], dtype=np.float32).tobytes())
        return digest.hexdigest()[:20]


@dataclass
class LoopResult:
    best_epoch: int | None
    best_score: float
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    best_state: dict[str, torch.Tensor] = field(repr=False)
    resumed_from: int | None = None


def device_of(config: TrainConfig) -> torch.device:
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast_for(settings: FinetuneSettings, device: torch.device):
    from polyemo.encoders.precision import resolve_precision

    if resolve_precision(settings.precision, device.type) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def build_model(settings: FinetuneSettings, num_classes: int) -> FinetuneModel:
    encoder, _ = load_trainable_encoder(settings.encoder)
    model = FinetuneModel(encoder, settings, num_classes)
    model.configure_training()
    return model


class PrefixCache:
    """Outputs of the frozen prefix (front-end + frozen blocks) per clip, when they cannot
    change (Whisper; fixed inputs): computed once, batched again by padding."""

    def __init__(self, model: FinetuneModel, limit: int = PREFIX_CACHE_BYTES) -> None:
        self.model = model
        self.blocks = model.frozen_blocks()
        # shared by every model of this process with the same pretrained prefix (the folds of
        # a run, the final model): the frozen part never changes, so a clip is computed once
        self.store = _SHARED_PREFIXES.setdefault((model.settings.encoder, self.blocks), {"items": {}, "bytes": 0})
        self.limit = limit

    @staticmethod
    def usable(model: FinetuneModel, training: bool) -> bool:
        # a single layer read: the cached prefix output is all the later blocks need
        return (isinstance(model.encoder, WhisperTrainable) and model.layer_index is not None
                and model.layer_index >= model.frozen_blocks() and model.settings.frozen_prefix_cacheable(training))

    def batch(self, waves: list[np.ndarray], device: torch.device):
        encoder = self.model.encoder
        items = self.store["items"]
        # keyed by the input's content: the same clip and crop in any fold hits
        keys = [hashlib.blake2b(np.ascontiguousarray(w, dtype=np.float32).tobytes(), digest_size=16).digest()
                for w in waves]
        missing = [i for i, k in enumerate(keys) if k not in items]
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            was_training = encoder.training
            encoder.eval()  # frozen blocks: no dropout, whatever mode the rest is in
            try:
                with torch.no_grad():
                    inputs = _to(encoder.prepare([waves[i] for i in missing]), device)
                    hidden, lengths, context = encoder.frontend(inputs)
                    states = encoder.run_blocks(hidden, context, 0, self.blocks) if self.blocks else [hidden]
            finally:
                encoder.train(was_training)
            out = states[-1].float()
            for row, i in enumerate(missing):
                fresh[i] = out[row, : int(lengths[row])].clone()
                if self.store["bytes"] < self.limit:
                    items[keys[i]] = fresh[i]
                    self.store["bytes"] += fresh[i].numel() * 4
        parts = [fresh[i] if i in fresh else items[k] for i, k in enumerate(keys)]
        lengths = torch.tensor([p.shape[0] for p in parts], device=device)
        hidden = torch.zeros(len(parts), int(lengths.max()), parts[0].shape[1], device=device)
        for row, p in enumerate(parts):
            hidden[row, : p.shape[0]] = p
        return hidden, lengths, WhisperTrainable.attention_mask(lengths, hidden.shape[1])


#: frozen-prefix outputs by (encoder, frozen blocks): {"items": {content key: (frames, dim)}, "bytes": n}
_SHARED_PREFIXES: dict[tuple[str, int], dict[str, Any]] = {}


def _to(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def forward(model: FinetuneModel, waves: list[np.ndarray], cache: PrefixCache | None,
            device: torch.device) -> dict[str, torch.Tensor]:
    if cache is not None:
        return model(None, cache.batch(waves, device), cache.blocks)
    inner = getattr(model, "module", model)  # DDP wraps the model
    return model(_to(inner.encoder.prepare(waves), device))


@torch.no_grad()
def predict_probabilities(model: FinetuneModel, waves: list[np.ndarray], settings: FinetuneSettings,
                          batch_size: int, device: torch.device, cache: PrefixCache | None = None) -> np.ndarray:
    """Softmax probabilities (N, C) of clips, in evaluation crops, in the given order."""
    model.eval()
    inputs = [eval_input(w, settings.crop) for w in waves]
    out = np.zeros((len(inputs), model.head.head.num_classes))
    with autocast_for(settings, device):
        for batch in eval_batches(np.array([w.size for w in inputs]), batch_size):
            logits = forward(model, [inputs[i] for i in batch], cache, device)["emotion"]
            out[batch] = torch.softmax(logits.float(), dim=-1).double().cpu().numpy()
    return out


@torch.no_grad()
def fit_standardisation(model: FinetuneModel, waves: list[np.ndarray], settings: FinetuneSettings,
                        batch_size: int, device: torch.device, cache: PrefixCache | None = None) -> None:
    """Mean and spread of the pooled state over (at most ``standardise_clips``, evenly spaced)
    training clips in evaluation crops, under the encoder as it is before the first step; no
    random draw (every process computes the same, and the RNG sequence is unchanged)."""
    picked = np.unique(np.linspace(0, len(waves) - 1, min(len(waves), settings.standardise_clips)).round().astype(int))
    inputs = [eval_input(waves[i], settings.crop) for i in picked]
    was_training = model.training
    model.eval()
    model.pool_shift.zero_()  # the identity while the raw states are measured
    model.pool_scale.fill_(1.0)
    parts = []
    for batch in eval_batches(np.array([w.size for w in inputs]), batch_size):
        if cache is not None:
            parts.append(model.pooled(None, cache.batch([inputs[i] for i in batch], device), cache.blocks).float())
        else:
            parts.append(model.pooled(_to(model.encoder.prepare([inputs[i] for i in batch]), device)).float())
    model.set_standardisation(torch.cat(parts))  # statistics: the order of the clips is irrelevant
    model.train(was_training)


def run_loop(job: Job, rank: int = 0, world: int = 1) -> tuple[LoopResult, FinetuneModel]:
    """Train (resuming a saved state of the same job) and return the best epoch and the model
    with its best trained tensors loaded."""
    from polyemo.train.adapters import build_emotion_loss, classification_scores
    from polyemo.train.trainer import EpochSampler, seeded

    cfg, settings = job.config, job.settings
    device = device_of(cfg)
    distributed = world > 1
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("gloo" if device.type == "cpu" else "nccl", init_method=job.init_method,
                                rank=rank, world_size=world)
    try:
        with seeded(cfg.seed, cfg.deterministic, device, cfg.num_threads):
            model = build_model(settings, job.num_classes).to(device)
            trained = [p for p in model.parameters() if p.requires_grad]
            groups = model.parameter_groups(cfg.lr, settings.head_lr, settings.layer_decay, cfg.weight_decay)
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
            labels = np.asarray(job.train_labels)
            sampler_generator = torch.Generator().manual_seed(cfg.seed)
            sampler = EpochSampler(labels, cfg.sampling, sampler_generator)
            micro = math.ceil(len(sampler) / cfg.batch_size)
            steps_per_epoch = math.ceil(micro / cfg.grad_accum)
            total = cfg.epochs * steps_per_epoch
            from transformers import get_linear_schedule_with_warmup

            scheduler = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total), total)
            class_counts = np.bincount(labels[labels >= 0], minlength=job.num_classes)
            loss_fn = build_emotion_loss(cfg.loss, class_counts, cfg.loss_params, cfg.label_smoothing)
            wrapped = model
            if distributed:
                from torch.nn.parallel import DistributedDataParallel

                wrapped = DistributedDataParallel(model)

            train_cache = PrefixCache(model) if PrefixCache.usable(model, True) else None
            val_cache = PrefixCache(model) if PrefixCache.usable(model, False) else None
            if settings.standardise:
                fit_standardisation(model, job.train_waves, settings, cfg.eval_batch_size or cfg.batch_size,
                                    device, val_cache)
            lengths_in = input_lengths(np.array([w.size for w in job.train_waves]), settings.crop.train, settings.crop)
            masks = None if job.train_masks is None else torch.as_tensor(np.asarray(job.train_masks), dtype=torch.bool)
            label_t = torch.as_tensor(labels, dtype=torch.long)

            history: list[dict[str, Any]] = []
            best_score, best_epoch, best_metrics, best_state, stale = -math.inf, None, {}, None, 0
            start_epoch, finished, resumed_from = 1, False, None
            fingerprint = job.fingerprint()
            state_path = None if job.state_dir is None else Path(job.state_dir) / STATE_FILE
            if state_path is not None and state_path.is_file():
                saved = torch.load(state_path, map_location=device, weights_only=True)
                if saved.get("fingerprint") == fingerprint:
                    model.load_trainable_state(saved["model"])
                    optimizer.load_state_dict(saved["optimizer"])
                    scheduler.load_state_dict(saved["scheduler"])
                    torch.set_rng_state(saved["torch_rng"])
                    sampler_generator.set_state(saved["sampler_rng"])
                    history, best_state = saved["history"], saved["best_state"]
                    best_score, best_epoch = saved["best_score"], saved["best_epoch"]
                    best_metrics, stale, finished = saved["best_metrics"], saved["stale"], saved["finished"]
                    start_epoch = resumed_from = saved["epoch"] + 1

            for epoch in range(start_epoch, cfg.epochs + 1):
                if finished:
                    break
                started = time.perf_counter()
                wrapped.train()
                order = sampler.epoch().numpy()
                batches = epoch_batches(torch.arange(len(order)), lengths_in[order], cfg.batch_size,
                                        settings.bucket, sampler_generator)
                loss_sum, n_batches = 0.0, 0
                for group_start in range(0, len(batches), cfg.grad_accum):
                    group = batches[group_start:group_start + cfg.grad_accum]
                    for positions in group:
                        rows = order[positions]
                        known_global = int((label_t[rows] >= 0).sum())
                        mine = np.arange(len(rows))[rank::world]
                        shard = rows[mine]
                        waves = [training_input(job.train_waves[r], settings.crop, settings.augment, cfg.seed,
                                                epoch, int(positions[i])) for r, i in zip(shard, mine)]
                        targets = label_t[shard].to(device)
                        known = int((targets >= 0).sum())
                        with autocast_for(settings, device):
                            out = forward(wrapped, waves, train_cache, device)["emotion"].float()
                        batch_masks = None if masks is None else masks[shard].to(device)
                        if known:
                            loss = loss_fn(out, targets, batch_masks) * (known / max(known_global, 1))
                        else:
                            loss = out.sum() * 0.0
                        (loss * world / len(group)).backward()
                        value = loss.detach().clone()
                        if distributed:
                            dist.all_reduce(value)
                        loss_sum += float(value)
                        n_batches += 1
                    if cfg.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(trained, cfg.max_grad_norm)
                    lr = optimizer.param_groups[0]["lr"]
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)

                stop = False
                if rank == 0:
                    eval_size = cfg.eval_batch_size or cfg.batch_size
                    probabilities = predict_probabilities(model, job.val_waves, settings, eval_size, device, val_cache)
                    scores = classification_scores(job.val_labels, probabilities, job.class_names)
                    metrics = {"ua": scores["ua"], "wa": scores["wa"], "macro_f1": scores["macro_f1"]}
                    score = float(metrics[cfg.selection_metric])
                    improved = best_state is None or score > best_score + cfg.min_delta or cfg.checkpoint == "last"
                    record = {"epoch": epoch, "train_loss": loss_sum / max(n_batches, 1),
                              **{f"val_{k}": v for k, v in metrics.items()}, "lr": lr,
                              "seconds": round(time.perf_counter() - started, 3), "best": improved,
                              "processes": world}
                    history.append(record)
                    if improved:
                        best_score, best_epoch, best_metrics, stale = score, epoch, scores, 0
                        best_state = model.trainable_state()
                    else:
                        stale += 1
                    stop = cfg.patience is not None and stale >= cfg.patience and cfg.checkpoint == "best"
                    finished = stop or epoch == cfg.epochs
                    if state_path is not None:
                        _save_state(state_path, {
                            "fingerprint": fingerprint, "epoch": epoch, "model": model.trainable_state(),
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "torch_rng": torch.get_rng_state(), "sampler_rng": sampler_generator.get_state(),
                            "history": history, "best_state": best_state, "best_score": best_score,
                            "best_epoch": best_epoch, "best_metrics": best_metrics, "stale": stale,
                            "finished": finished})
                    if cfg.log_path is not None:
                        from polyemo.io import write_text

                        write_text(cfg.log_path, "".join(json.dumps(r) + "\n" for r in history))
                if distributed:
                    flag = [stop]
                    dist.broadcast_object_list(flag, src=0)
                    stop = flag[0]
                if stop:
                    break

            if rank == 0:
                model.load_trainable_state(best_state)
            model.eval()
            result = LoopResult(best_epoch, best_score, best_metrics, history, best_state or {}, resumed_from)
            if distributed and rank == 0 and job.result_path is not None:
                _save_state(job.result_path, result.__dict__)
            return result, model
    finally:
        if distributed:
            dist.barrier()
            dist.destroy_process_group()


def _plain(value: Any) -> Any:
    """Tensors, numbers, strings and containers only, so the file loads with weights_only=True
    (numpy scalars in metrics and histories become Python numbers, arrays tensors)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return value


def _save_state(path: Path, payload: dict[str, Any]) -> None:
    from polyemo.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(_plain(payload), tmp)


def _worker(rank: int, world: int, job: Job) -> None:
    run_loop(job, rank, world)


def run_distributed(job: Job, world: int, workdir: Path) -> tuple[LoopResult, FinetuneModel]:
    """Run the loop in ``world`` processes (``torch.multiprocessing`` spawn; gloo on CPU) and
    return rank 0's result with a model holding its best tensors."""
    import torch.multiprocessing as mp

    workdir.mkdir(parents=True, exist_ok=True)
    rendezvous = workdir / "rendezvous"
    rendezvous.unlink(missing_ok=True)
    result_path = workdir / "result.pt"
    result_path.unlink(missing_ok=True)
    job = Job(**{**job.__dict__, "init_method": f"file://{rendezvous}", "result_path": result_path})
    mp.spawn(_worker, args=(world, job), nprocs=world, join=True)
    saved = torch.load(result_path, weights_only=True)
    result = LoopResult(**saved)
    from polyemo.train.trainer import seeded

    with seeded(job.config.seed, job.config.deterministic, None, job.config.num_threads):
        model = build_model(job.settings, job.num_classes)
    model.load_trainable_state(result.best_state)
    return result, model.to(device_of(job.config)).eval()
