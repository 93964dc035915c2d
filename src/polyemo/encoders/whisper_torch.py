"""Whisper's log-mel front end and encoder as plain torch modules, for inference.

Why not transformers here: importing ``transformers``' Whisper model costs seconds of CPU
(its lazy-import machinery scans every model file and pulls in ``torch.distributed``),
more than a 5 s clip's whole forward pass. These modules compute the same numbers from the
same files -- a transformers Whisper folder (``config.json``, ``model.safetensors``,
``preprocessor_config.json``) -- with the same operations in the same order:

- :class:`LogMel` is ``WhisperFeatureExtractor``'s torch path (periodic Hann window,
  centred reflect-padded STFT, power spectrum, last frame dropped, Slaney mel filters,
  log10 clamped at 1e-10, floor at max - 8, (x + 4) / 4);
- :class:`WhisperEncoderModule` holds transformers' ``WhisperEncoder`` parameters under the
  same names (conv1, conv2, embed_positions, layers[i].self_attn.{q,k,v,out}_proj, ...,
  layer_norm) and its blocks are pre-norm attention + GELU MLP, query scaled before SDPA.

tests/encoders/test_whisper_torch.py checks both against transformers (tiny random models and
the packaged whisper-base). Training and conversion still use transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ENCODER_PREFIXES = ("model.encoder.", "encoder.")


# --- the log-mel front end ------------------------------------------------------------------

def _hertz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    mels[log_region] = 15.0 + np.log(freq[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mels


def _mel_to_hertz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    freq = 200.0 * mels / 3.0
    log_region = mels >= 15.0
    freq[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mels[log_region] - 15.0))
    return freq


def slaney_mel_filters(n_mels: int, n_fft: int = 400, sample_rate: int = 16_000, fmax: float = 8000.0) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters, Slaney-normalised (librosa's ``norm="slaney"``)."""
    bins = 1 + n_fft // 2
    edges = _mel_to_hertz(np.linspace(_hertz_to_mel(np.array([0.0]))[0], _hertz_to_mel(np.array([fmax]))[0], n_mels + 2))
    fft_freqs = np.linspace(0, sample_rate // 2, bins)
    slopes = edges[None, :] - fft_freqs[:, None]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(np.zeros(1), np.minimum(down, up))
    return filters * (2.0 / (edges[2: n_mels + 2] - edges[:n_mels]))[None, :]


class LogMel:
    """Whisper's log-mel spectrogram of one 16 kHz waveform: (n_mels, samples // hop) float32."""

    def __init__(self, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160, sample_rate: int = 16_000) -> None:
        self.n_mels, self.n_fft, self.hop_length, self.sample_rate = n_mels, n_fft, hop_length, sample_rate
        self.filters = torch.from_numpy(slaney_mel_filters(n_mels, n_fft, sample_rate)).to(torch.float32)
        self.window = torch.hann_window(n_fft)

    @classmethod
    def from_folder(cls, folder: Path, n_mels: int) -> LogMel:
        path = folder / "preprocessor_config.json"
        config: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        if config.get("feature_size", n_mels) != n_mels:
            raise ValueError(f"{path}: feature extractor has {config['feature_size']} mel bins, the model {n_mels}")
        if config.get("dither", 0.0):
            raise ValueError(f"{path}: dithered log-mel (dither={config['dither']}) is random; polyemo needs it off")
        return cls(n_mels, int(config.get("n_fft", 400)), int(config.get("hop_length", 160)),
                   int(config.get("sampling_rate", 16_000)))

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        stft = torch.stft(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), self.n_fft, self.hop_length,
                          window=self.window, return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()
        log_spec = torch.clamp(self.filters.T @ power, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).numpy()

    def padded(self, wave: np.ndarray, seconds: float = 30.0) -> np.ndarray:
        """The log-mel of ``wave`` zero-padded (or cut) to ``seconds``, as for a padded 30 s run."""
        samples = round(seconds * self.sample_rate)
        fixed = np.zeros(samples, dtype=np.float32)
        fixed[: min(samples, wave.size)] = wave[:samples]
        return self(fixed)


# --- the encoder ---------------------------------------------------------------------------

class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, device: str | None = None) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scaling = self.head_dim ** -0.5
        self.k_proj = nn.Linear(dim, dim, bias=False, device=device)
        self.v_proj = nn.Linear(dim, dim, device=device)
        self.q_proj = nn.Linear(dim, dim, device=device)
        self.out_proj = nn.Linear(dim, dim, device=device)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, frames, _ = x.shape
        shape = (batch, frames, self.heads, self.head_dim)
        # the query is scaled before the product, as in OpenAI's and transformers' Whisper; SDPA
        # reads the head-transposed views directly (transformers copies them: same numbers, more traffic)
        query = (self.q_proj(x) * self.scaling).view(shape).transpose(1, 2)
        key = self.k_proj(x).view(shape).transpose(1, 2)
        value = self.v_proj(x).view(shape).transpose(1, 2)
        out = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=1.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, frames, -1))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int, device: str | None = None) -> None:
        super().__init__()
        self.self_attn = _Attention(dim, heads, device)
        self.self_attn_layer_norm = nn.LayerNorm(dim, device=device)
        self.fc1 = nn.Linear(dim, ffn, device=device)
        self.fc2 = nn.Linear(ffn, dim, device=device)
        self.final_layer_norm = nn.LayerNorm(dim, device=device)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask)
        return x + self.fc2(nn.functional.gelu(self.fc1(self.final_layer_norm(x))))


class _Positions(nn.Module):
    """The position table (``embed_positions.weight``); only ever sliced, never looked up.
    (Not nn.Embedding: initialising one on the meta device imports torch._dynamo, seconds.)"""

    def __init__(self, positions: int, dim: int, device: str | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(positions, dim, device=device), requires_grad=False)


class WhisperEncoderModule(nn.Module):
    """transformers' ``WhisperEncoder`` parameters and forward, for inference (no dropout).
    ``device="meta"`` builds it without allocating, for loading weights with ``assign=True``."""

    def __init__(self, config: dict[str, Any], device: str | None = None) -> None:
        super().__init__()
        dim = int(config["d_model"])
        self.conv1 = nn.Conv1d(int(config["num_mel_bins"]), dim, kernel_size=3, padding=1, device=device)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1, device=device)
        self.embed_positions = _Positions(int(config["max_source_positions"]), dim, device)
        self.layers = nn.ModuleList(
            _Block(dim, int(config["encoder_attention_heads"]), int(config["encoder_ffn_dim"]), device)
            for _ in range(int(config["encoder_layers"])))
        self.layer_norm = nn.LayerNorm(dim, device=device)


SUPPORTED_ACTIVATION = "gelu"


def encoder_config(folder: Path) -> dict[str, Any]:
    """A Whisper folder's ``config.json``, checked for what :class:`WhisperEncoderModule` implements."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    if config.get("model_type") != "whisper":
        raise ValueError(f"{folder}: model type {config.get('model_type')!r} is not whisper")
    if config.get("activation_function", SUPPORTED_ACTIVATION) != SUPPORTED_ACTIVATION:
        raise ValueError(f"{path}: activation {config['activation_function']!r} is not supported (gelu only)")
    if config.get("scale_embedding"):
        raise ValueError(f"{path}: scale_embedding=true is not supported")
    return config


def load_encoder_module(folder: Path, config: dict[str, Any]) -> WhisperEncoderModule | None:
    """The encoder's weights from ``model.safetensors`` (only the encoder's tensors are read),
    or None when the folder has no single safetensors file (the caller then uses transformers)."""
    from safetensors import safe_open

    path = folder / "model.safetensors"
    if not path.is_file():
        return None
    module = WhisperEncoderModule(config, device="meta")
    expected = set(module.state_dict())
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            for prefix in ENCODER_PREFIXES:
                if key.startswith(prefix) and key[len(prefix):] in expected:
                    state[key[len(prefix):]] = handle.get_tensor(key).to(torch.float32)
    missing = expected - set(state)
    if missing:
        raise ValueError(f"{path}: Whisper encoder tensors missing: {', '.join(sorted(missing)[:5])}"
                         + (" ..." if len(missing) > 5 else ""))
    module.load_state_dict(state, strict=True, assign=True)
    return module.eval()
