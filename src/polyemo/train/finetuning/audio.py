"""Clips -> model inputs for fine-tuning: cut/pad, random crops, augmentation, batches.

Every random draw is a function of ``(seed, epoch, row)`` (:func:`row_rng`), not of a
stream consumed in order, so a clip gets the same crop and augmentation whichever process
(DDP) or resumed run draws it. Batches: the epoch's row order comes from the trainer's
:class:`polyemo.train.trainer.EpochSampler` (shuffle or class-balanced, one seeded
generator); with bucketing, each window of ``50 x batch`` rows is sorted by length before it
is cut into batches and the batches are shuffled, so a batch holds clips of similar length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from polyemo.train.finetuning.settings import AugmentSettings, CropSettings

SAMPLE_RATE = 16_000
BUCKET_WINDOW = 50


def clip_waves(features: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The 1-D waveforms of audio SplitData features (each (1, samples, 1), memory-mapped or not)."""
    waves = []
    for item in features:
        if item.ndim != 3 or item.shape[0] != 1 or item.shape[2] != 1:
            raise ValueError(f"audio features must be (1, samples, 1) waveforms, got {item.shape}: "
                             "fine-tuning reads 'features: audio'")
        waves.append(item.reshape(-1))
    return waves


def row_rng(seed: int, epoch: int, row: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(row), 0x5EED])


def cut(wave: np.ndarray, mode: str, crop: CropSettings, rng: np.random.Generator | None = None) -> np.ndarray:
    """``fixed``: first ``seconds``, zero-padded to exactly that; ``random``: a random window of
    ``seconds`` (shorter clips whole); ``whole``: the clip (at most ``max_seconds``)."""
    size = int(round(crop.seconds * SAMPLE_RATE))
    if mode == "fixed":
        out = wave[:size]
        return np.pad(out, (0, size - out.size)) if out.size < size else np.asarray(out)
    if mode == "random":
        if wave.size <= size:
            return np.asarray(wave)
        if rng is None:
            raise ValueError("random crops need a random generator")
        start = int(rng.integers(0, wave.size - size + 1))
        return np.asarray(wave[start:start + size])
    if mode == "whole":
        return np.asarray(wave[: int(round(crop.max_seconds * SAMPLE_RATE))])
    raise ValueError(f"unknown crop mode {mode!r}")


def augment(wave: np.ndarray, settings: AugmentSettings, rng: np.random.Generator) -> np.ndarray:
    """Speed (resampling), gain and white noise, each with probability ``p``."""
    wave = np.asarray(wave, dtype=np.float32)
    if settings.speed is not None and rng.random() < settings.p:
        import soxr

        factor = float(rng.uniform(*settings.speed))
        # played ``factor`` times faster: resample as if recorded at rate * factor
        wave = soxr.resample(wave, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)
    if settings.gain_db is not None and rng.random() < settings.p:
        wave = wave * np.float32(10 ** (rng.uniform(-settings.gain_db, settings.gain_db) / 20))
    if settings.noise_snr_db is not None and rng.random() < settings.p:
        snr = rng.uniform(*settings.noise_snr_db)
        power = float(np.mean(wave.astype(np.float64) ** 2)) or 1e-10
        noise = rng.standard_normal(wave.size) * np.sqrt(power / 10 ** (snr / 10))
        wave = (wave + noise).astype(np.float32)
    return wave


def training_input(wave: np.ndarray, crop: CropSettings, aug: AugmentSettings, seed: int, epoch: int,
                   row: int) -> np.ndarray:
    """A training clip as drawn in ``epoch``: augmented, then cut (the crop length is exact)."""
    rng = row_rng(seed, epoch, row)
    if aug.active:
        wave = augment(wave, aug, rng)
    return np.ascontiguousarray(cut(wave, crop.train, crop, rng), dtype=np.float32)


def eval_input(wave: np.ndarray, crop: CropSettings) -> np.ndarray:
    return np.ascontiguousarray(cut(wave, crop.eval, crop), dtype=np.float32)


def input_lengths(lengths: np.ndarray, mode: str, crop: CropSettings) -> np.ndarray:
    """The lengths clips of ``lengths`` samples have after cutting (for bucketing)."""
    size = int(round(crop.seconds * SAMPLE_RATE))
    if mode == "fixed":
        return np.full(len(lengths), size)
    if mode == "random":
        return np.minimum(lengths, size)
    return np.minimum(lengths, int(round(crop.max_seconds * SAMPLE_RATE)))


def epoch_batches(order: torch.Tensor, lengths: np.ndarray, batch_size: int, bucket: bool,
                  generator: torch.Generator) -> list[np.ndarray]:
    """Batches of row indices for one epoch (``order`` from the sampler)."""
    order = np.asarray(order, dtype=np.int64)
    if not bucket:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches = []
    window = batch_size * BUCKET_WINDOW
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffle = torch.randperm(len(batches), generator=generator).numpy()
    return [batches[i] for i in shuffle]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches of similar lengths (the caller restores the order)."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
