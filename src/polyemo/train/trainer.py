"""Training torch heads: AdamW, warm-up + linear decay, accumulation, early stopping.

The checkpoint is selected on the validation split (macro-F1 or UA); the best state is kept
in memory and, with ``checkpoint_path``, saved. Runs are reproducible on CPU: the model is
initialised and shuffled from ``seed`` (inside a forked RNG, so the caller's random state is
untouched) with deterministic algorithms switched on.

Class masks (``SplitData.masks``) are a TRAINING device: they go to the loss so a corpus that
has no "surprise" does not teach "never surprise". Predictions -- on validation, on test and
in deployment -- are never masked: an unseen corpus has no mask.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from polyemo.heads.base import Targets
from polyemo.heads.model import HeadModel, build_head
from polyemo.io import atomic_path, write_text
from polyemo.progress import progress_bar
from polyemo.train.adapters import build_emotion_loss, classification_scores
from polyemo.train.data import DataError, FitReceipt, SplitData
from polyemo.train.estimator import Estimator, FitReport, HeadOutput, epoch_refit_settings
from polyemo.train.registry import ESTIMATORS

#: ``callback(event, info)`` with events "epoch_end" (info: epoch, record, model) and "fit_end"
Callback = Callable[[str, dict[str, Any]], None]


@contextmanager
def seeded(seed: int, deterministic: bool = True, device: torch.device | None = None,
           num_threads: int | None = None) -> Iterator[None]:
    """Seed torch inside a forked RNG state, optionally force deterministic algorithms and
    fix the CPU thread count; everything is restored on exit."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_threads = torch.get_num_threads()
    cuda = [device.index or 0] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous)
            torch.set_num_threads(previous_threads)


class EpochSampler:
    """Row order of each epoch from a seeded generator: shuffle, class-balanced or undersampled."""

    def __init__(self, labels: np.ndarray, mode: str, generator: torch.Generator,
                 groups: np.ndarray | None = None) -> None:
        self.mode = mode
        self.generator = generator
        self.n = len(labels)
        labels_t = torch.as_tensor(labels)
        self.labelled = torch.nonzero(labels_t >= 0).flatten()
        self.by_class = [torch.nonzero(labels_t == c).flatten() for c in torch.unique(labels_t[self.labelled])]
        if mode == "class_balanced":
            counts = torch.bincount(labels_t[self.labelled])
            self.weights = 1.0 / counts[labels_t[self.labelled]].double()
            # torch's sampler draws torch.multinomial(weights, n, replacement=True, generator=g):
            # the same indices as before it replaced our own multinomial call (tested).
            self.balanced = WeightedRandomSampler(self.weights, len(self.labelled), replacement=True,
                                                  generator=generator)
        elif mode in ("corpus_balanced", "corpus_class_balanced"):
            # issue 12: every corpus (corpus and class) drawn equally often, whatever its size
            if groups is None or len(groups) != self.n:
                raise ValueError(f"sampling {mode!r} needs each row's corpus (utt_ids 'corpus/...')")
            keys = [str(g) for g in np.asarray(groups, dtype=object)[self.labelled.numpy()]]
            if mode == "corpus_class_balanced":
                keys = [f"{k}\t{int(c)}" for k, c in zip(keys, labels_t[self.labelled].tolist())]
            _, codes = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
            counts = np.bincount(codes)
            self.weights = torch.as_tensor(1.0 / counts[codes], dtype=torch.double)
            self.balanced = WeightedRandomSampler(self.weights, len(self.labelled), replacement=True,
                                                  generator=generator)
            self.mode = "class_balanced"  # drawn the same way, with these weights
        elif mode not in ("none", "undersample"):
            raise ValueError(f"unknown sampling {mode!r}")

    def __len__(self) -> int:
        if self.mode == "none":
            return self.n
        if self.mode == "class_balanced":
            return len(self.labelled)
        return len(self.by_class) * min(len(rows) for rows in self.by_class)

    def epoch(self) -> torch.Tensor:
        g = self.generator
        if self.mode == "none":
            return torch.randperm(self.n, generator=g)
        if self.mode == "class_balanced":
            return self.labelled[torch.tensor(list(self.balanced), dtype=torch.long)]
        per_class = min(len(rows) for rows in self.by_class)
        picked = torch.cat([rows[torch.randperm(len(rows), generator=g)[:per_class]] for rows in self.by_class])
        return picked[torch.randperm(len(picked), generator=g)]


class Batches:
    """Tensors of a split, cut into batches (frame features padded with zeros)."""

    def __init__(self, data: SplitData, device: torch.device) -> None:
        self.data = data
        self.device = device
        self.pooled = None if data.is_frames else torch.as_tensor(np.asarray(data.features, dtype=np.float32))

        def tensor(values, dtype):
            return None if values is None else torch.as_tensor(values, dtype=dtype)

        labels = data.labels if data.labels is not None else np.full(len(data), -1)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.masks = tensor(data.masks, torch.bool)
        self.gender = tensor(data.gender, torch.long)
        self.avd = tensor(data.avd, torch.float32)

    def __call__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, Targets]:
        if self.pooled is not None:
            x, lengths = self.pooled[index], None
        else:
            frames = [self.data.features[int(i)] for i in index]
            lengths_np = np.array([f.shape[1] for f in frames])
            layers, dim = frames[0].shape[0], frames[0].shape[2]
            padded = np.zeros((len(frames), layers, int(lengths_np.max()), dim), dtype=np.float32)
            for row, f in enumerate(frames):
                padded[row, :, : f.shape[1]] = f
            x, lengths = torch.from_numpy(padded), torch.from_numpy(lengths_np).to(self.device)
        pick = (lambda t: None if t is None else t[index].to(self.device))
        targets = Targets(pick(self.labels), pick(self.masks), pick(self.gender), pick(self.avd))
        return x.to(self.device), lengths, targets


def _corpora(data: SplitData) -> np.ndarray | None:
    """Each row's corpus (the utt_id's ``corpus/`` prefix) for corpus-balanced sampling."""
    if data.utt_ids is None:
        return None
    return np.array([str(u).split("/", 1)[0] for u in data.utt_ids], dtype=object)


@ESTIMATORS.register("torch")
class Trainer(Estimator):
    """Trains a torch head (:class:`~polyemo.heads.model.HeadModel`) on pooled or frame features."""

    kind = "torch"

    def __init__(self, *args, callbacks: Sequence[Callback] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.callbacks = list(callbacks)
        self.model: HeadModel | None = None

    @property
    def device(self) -> torch.device:
        return torch.device(self.train_config.device)

    def _build_model(self) -> HeadModel:
        return build_head(self.effective_head_config(), self.num_layers, self.feature_dim, self.num_classes)

    def _emit(self, event: str, **info: Any) -> None:
        for callback in self.callbacks:
            callback(event, info)

    def _fit(self, train: SplitData, val: SplitData) -> FitReport:
        cfg = self.train_config
        device = self.device
        with seeded(cfg.seed, cfg.deterministic, device, cfg.num_threads):
            model = self._build_model().to(device)
            wanted = "frames" if model.input_kind == "frames" else "pooled"
            if wanted == "frames" and not train.is_frames or wanted == "pooled" and train.is_frames:
                raise DataError(f"head {self.head_config.name!r} takes {wanted} features, "
                                 f"got {'frame' if train.is_frames else 'pooled'} features")
            self.model = model
            labelled = train.labels[train.labels >= 0]
            class_counts = np.bincount(labelled, minlength=self.num_classes)
            loss_fn = build_emotion_loss(cfg.loss, class_counts, cfg.loss_params, cfg.label_smoothing)
            generator = torch.Generator().manual_seed(cfg.seed)
            sampler = EpochSampler(train.labels, cfg.sampling, generator, groups=_corpora(train))
            train_batches, val_batches = Batches(train, device), Batches(val, device)

            micro_batches = math.ceil(len(sampler) / cfg.batch_size)
            steps_per_epoch = math.ceil(micro_batches / cfg.grad_accum)
            total_steps = cfg.epochs * steps_per_epoch
            decay, no_decay = [], []
            for parameter in model.parameters():
                (no_decay if parameter.dim() < 2 else decay).append(parameter)  # biases, layer weights
            optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                           {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
            from transformers import get_linear_schedule_with_warmup  # a LambdaLR: 0 -> lr -> 0

            scheduler = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total_steps), total_steps)

            history: list[dict[str, Any]] = []
            best_score, best_epoch, best_state, best_metrics = -math.inf, None, None, {}
            stale = 0
            with progress_bar("{task.fields[status]}", enabled=cfg.show_progress, transient=True) as progress:
                epochs_task = progress.add_task("epochs", total=cfg.epochs, status="")
                batch_task = progress.add_task("batches", total=micro_batches, status="")
                for epoch in range(1, cfg.epochs + 1):
                    started = time.perf_counter()
                    model.train()
                    order = sampler.epoch()
                    sums: dict[str, float] = {}
                    progress.reset(batch_task, total=micro_batches)
                    for group_start in range(0, micro_batches, cfg.grad_accum):
                        group = range(group_start, min(group_start + cfg.grad_accum, micro_batches))
                        for b in group:
                            x, lengths, targets = train_batches(order[b * cfg.batch_size:(b + 1) * cfg.batch_size])
                            loss, parts = model.compute_loss(model(x, lengths), targets, loss_fn)
                            if not torch.isfinite(loss):
                                raise FloatingPointError(f"training loss became {float(loss)} in epoch {epoch}, "
                                                         f"batch {b + 1}; lower the learning rate")
                            (loss / len(group)).backward()
                            for key, value in {"loss": float(loss.detach()), **parts}.items():
                                sums[key] = sums.get(key, 0.0) + value
                            progress.advance(batch_task)
                        if cfg.max_grad_norm is not None:
                            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                        lr = optimizer.param_groups[0]["lr"]
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)

                    outputs, val_loss = self._run_eval(model, val_batches, loss_fn)
                    scores = classification_scores(val.labels, outputs["emotion"], self.class_names)
                    metrics = {"ua": scores["ua"], "wa": scores["wa"], "macro_f1": scores["macro_f1"]}
                    score = self._selection_score(epoch, metrics)
                    improved = score > best_score + cfg.min_delta or best_state is None or cfg.checkpoint == "last"
                    record = {"epoch": epoch, **{f"train_{k}": v / micro_batches for k, v in sums.items()},
                              "val_loss": val_loss, **{f"val_{k}": v for k, v in metrics.items()},
                              "lr": lr, "seconds": round(time.perf_counter() - started, 4), "best": improved}
                    if model.layer_weights() is not None:
                        record["layer_weights"] = model.layer_weights().round(5).tolist()
                    history.append(record)
                    if improved:
                        best_score, best_epoch, best_metrics, stale = score, epoch, scores, 0
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    else:
                        stale += 1
                    self._write_log(history)
                    self._emit("epoch_end", epoch=epoch, record=record, model=model)
                    progress.update(epochs_task, advance=1, status=(
                        f"val {cfg.selection_metric} {score:.3f} (best {best_score:.3f} @ {best_epoch})"))
                    if cfg.patience is not None and stale >= cfg.patience and cfg.checkpoint == "best":
                        break

            model.load_state_dict(best_state)
            model.eval()
            self._save_checkpoint(best_state, best_epoch)
        receipt = FitReceipt(finished_at=time.time(), best_epoch=best_epoch)
        self._emit("fit_end", best_epoch=best_epoch, receipt=receipt)
        return FitReport(best_epoch, best_score, history, best_metrics, receipt)

    def refit_settings(self, report: FitReport):
        """Retrain for the epoch count validation chose, keeping the last epoch."""
        return epoch_refit_settings(self, report)

    def _selection_score(self, epoch: int, metrics: dict[str, float]) -> float:
        """The validation number that selects the checkpoint (a method, so tests can script it)."""
        return float(metrics[self.train_config.selection_metric])

    def layer_weights(self) -> np.ndarray | None:
        return None if self.model is None else self.model.layer_weights()

    @torch.no_grad()
    def _run_eval(self, model: HeadModel, batches: Batches, loss_fn=None) -> tuple[dict[str, np.ndarray], float]:
        """Unmasked outputs (probabilities for class outputs) and the mean emotion loss."""
        model.eval()
        size = self.train_config.eval_batch_size or self.train_config.batch_size
        n = len(batches.data)
        collected: dict[str, list[np.ndarray]] = {}
        class_outputs = {o.name for o in model.head.outputs if o.kind == "class"}
        loss_total, loss_rows = 0.0, 0
        # Frames: batch utterances of similar length (less padding), then restore the order.
        order = torch.arange(n)
        if batches.data.is_frames:
            lengths_all = np.array([f.shape[1] for f in batches.data.features])
            order = torch.from_numpy(np.argsort(lengths_all, kind="stable"))
        for start in range(0, n, size):
            x, lengths, targets = batches(order[start:start + size])
            out = model(x, lengths)
            known = int((targets.emotion >= 0).sum())
            if known and loss_fn is not None:
                loss_total += float(loss_fn(out["emotion"], targets.emotion, targets.masks)) * known
                loss_rows += known
            for name, value in out.items():
                value = torch.softmax(value, dim=-1) if name in class_outputs else value
                collected.setdefault(name, []).append(value.double().cpu().numpy())
        inverse = np.argsort(order.numpy())
        outputs = {k: np.concatenate(v)[inverse] for k, v in collected.items()}
        return outputs, (loss_total / loss_rows if loss_rows else float("nan"))

    def _predict(self, data: SplitData) -> HeadOutput:
        if self.model is None:
            raise RuntimeError("Trainer has no model (fit or load it first)")
        if len(data) == 0:
            return HeadOutput(np.zeros((0, self.num_classes)))
        cfg = self.train_config
        with seeded(cfg.seed, cfg.deterministic, self.device, cfg.num_threads):
            outputs, _ = self._run_eval(self.model, Batches(data, self.device))
        probabilities = outputs.pop("emotion")
        return HeadOutput(probabilities, outputs)

    def _write_log(self, history: list[dict[str, Any]]) -> None:
        # Rewritten whole and atomically each epoch: a crash never leaves a torn line.
        if self.train_config.log_path is not None:
            write_text(self.train_config.log_path, "".join(json.dumps(r) + "\n" for r in history))

    def _checkpoint_payload(self, state: dict[str, torch.Tensor], best_epoch: int | None) -> dict[str, Any]:
        weights = self.layer_weights()
        return {"state_dict": state, "head_config": self.head_config.model_dump(mode="json"),
                "num_layers": self.num_layers, "feature_dim": self.feature_dim, "num_classes": self.num_classes,
                "class_names": self.class_names, "best_epoch": best_epoch,
                "layer_weights": None if weights is None else weights.tolist()}

    def _save_checkpoint(self, state: dict[str, torch.Tensor], best_epoch: int | None) -> None:
        if self.train_config.checkpoint_path is not None:
            with atomic_path(self.train_config.checkpoint_path) as tmp:
                torch.save(self._checkpoint_payload(state, best_epoch), tmp)

    def _save_head(self, directory: Path) -> None:
        with atomic_path(directory / "head.pt") as tmp:
            torch.save(self._checkpoint_payload(self.model.state_dict(), None), tmp)

    def _load_head(self, directory: Path) -> None:
        payload = torch.load(directory / "head.pt", map_location=self.device, weights_only=True)
        self.model = self._build_model().to(self.device)
        self.model.load_state_dict(payload["state_dict"])
        self.model.eval()
