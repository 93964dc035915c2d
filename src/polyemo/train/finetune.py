"""The ``finetune`` estimator: a pretrained speech encoder trained end to end with its head.

It takes raw audio (``features: audio``; :mod:`polyemo.experiment.audio_inputs` serves the
decoded clips as ``SplitData`` frames of shape (1, samples, 1)) and goes through the same
stages as a frozen head: ``fit(train, val)`` chooses the checkpoint epoch by the validation
score (validation speakers of the TRAINING data) and returns the receipt that opens the
sealed test split; ``refit_settings`` fixes that epoch count for a refit on train +
validation (``training.refit``; the seed system keeps the best checkpoint instead:
``refit: false``). Settings: :class:`~polyemo.train.finetuning.settings.FinetuneSettings`
(the head's params); the loop: :mod:`polyemo.train.finetuning.loop`.

Saved (``save``/``load_estimator``): ``finetune.safetensors`` holds only the tensors
training changed (LoRA adapters or the unfrozen encoder weights, and the head); the rest
is the pretrained encoder, loaded by name and checked by its weights hash.

Processes: ``processes`` in the settings or ``POLYEMO_NPROC`` (``polyemo run --nproc N``)
train with DDP over N local processes (gloo on CPU); the result equals one process's with
the same global batch.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from polyemo.io import atomic_path, write_json
from polyemo.train.data import DataError, FitReceipt, SplitData
from polyemo.train.estimator import Estimator, FitReport, HeadOutput, epoch_refit_settings
from polyemo.train.registry import ESTIMATORS

WEIGHTS_FILE = "finetune.safetensors"
INFO_FILE = "finetune.json"
NPROC_ENV = "POLYEMO_NPROC"


def state_dir_of(config) -> Path | None:
    """Where a fit keeps its per-epoch state: beside its training log (or checkpoint path)."""
    anchor = config.checkpoint_path or config.log_path
    return None if anchor is None else Path(anchor).with_suffix(".state")


@ESTIMATORS.register("finetune")
class FinetuneEstimator(Estimator):
    kind = "finetune"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from polyemo.train.finetuning.settings import FinetuneSettings

        self.settings = FinetuneSettings.of(self.head_config.params)
        if self.train_config.normalisation != "none":
            raise ValueError(f"fine-tuning reads raw audio: normalisation must be none, "
                             f"not {self.train_config.normalisation!r}")
        self.model = None
        self.callbacks: list = []
        self.resumed_from: int | None = None

    @property
    def processes(self) -> int:
        return int(os.environ.get(NPROC_ENV) or self.settings.processes)

    def _waves(self, data: SplitData) -> list[np.ndarray]:
        from polyemo.train.finetuning.audio import clip_waves

        if not data.is_frames:
            raise DataError("the finetune head reads raw audio ('features: audio'), got pooled features")
        return clip_waves(data.features)

    def _fit(self, train: SplitData, val: SplitData) -> FitReport:
        from polyemo.train.finetuning.loop import Job, run_distributed, run_loop

        job = Job(settings=self.settings, config=self.train_config, num_classes=self.num_classes,
                  class_names=self.class_names, train_waves=self._waves(train), train_labels=train.labels,
                  train_masks=train.masks, val_waves=self._waves(val), val_labels=val.labels,
                  state_dir=state_dir_of(self.train_config))
        world = self.processes
        if world > 1:
            if self.train_config.batch_size < world:
                raise ValueError(f"batch_size {self.train_config.batch_size} < {world} processes")
            workdir = job.state_dir or Path(tempfile.mkdtemp(prefix="polyemo-ddp-"))
            result, model = run_distributed(job, world, Path(workdir) / "ddp")
        else:
            result, model = run_loop(job)
        self.model = model
        self.resumed_from = result.resumed_from
        receipt = FitReceipt(finished_at=time.time(), best_epoch=result.best_epoch)
        for callback in self.callbacks:
            callback("fit_end", {"best_epoch": result.best_epoch, "receipt": receipt})
        return FitReport(result.best_epoch, result.best_score, result.history, result.best_metrics, receipt)

    def refit_settings(self, report: FitReport):
        return epoch_refit_settings(self, report)

    def layer_weights(self) -> np.ndarray | None:
        return None if self.model is None else self.model.head.layer_weights()

    def _predict(self, data: SplitData) -> HeadOutput:
        from polyemo.train.finetuning.loop import PrefixCache, device_of, predict_probabilities
        from polyemo.train.trainer import seeded

        if self.model is None:
            raise RuntimeError("FinetuneEstimator has no model (fit or load it first)")
        if len(data) == 0:
            return HeadOutput(np.zeros((0, self.num_classes)))
        cfg = self.train_config
        with seeded(cfg.seed, cfg.deterministic, None, cfg.num_threads):
            cache = PrefixCache(self.model) if PrefixCache.usable(self.model, False) else None
            probabilities = predict_probabilities(self.model, self._waves(data), self.settings,
                                                  cfg.eval_batch_size or cfg.batch_size, device_of(cfg), cache)
        return HeadOutput(probabilities)

    # -- persistence ---------------------------------------------------------------------
    def trained_tensors(self) -> dict[str, Any]:
        return {k: v.detach().cpu().contiguous() for k, v in self.model.trainable_state().items()}

    def _save_head(self, directory: Path) -> None:
        import safetensors.torch

        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            safetensors.torch.save_file(self.trained_tensors(), str(tmp))
        write_json(directory / INFO_FILE, {"settings": self.settings.model_dump(mode="json"),
                                           "tensors": sorted(self.model.trainable_state())})

    def _load_head(self, directory: Path) -> None:
        import safetensors.torch

        from polyemo.train.finetuning.loop import build_model
        from polyemo.train.trainer import seeded

        info = json.loads((directory / INFO_FILE).read_text(encoding="utf-8"))
        cfg = self.train_config
        with seeded(cfg.seed, cfg.deterministic, None, cfg.num_threads):
            model = build_model(self.settings, self.num_classes)
        state = safetensors.torch.load_file(str(directory / WEIGHTS_FILE))
        if sorted(state) != sorted(info["tensors"]):
            raise DataError(f"{directory / WEIGHTS_FILE}: its tensors differ from those {INFO_FILE} lists")
        model.load_trainable_state(state)
        self.model = model.eval()
