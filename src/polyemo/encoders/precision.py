"""Encoder compute precision chosen by the hardware.

``auto`` (the default everywhere: extract, run, bench, predict, serve) runs bfloat16 only
where it is computed natively, else fp32: on a CPU without AVX512-BF16 or AMX, torch
emulates bf16 GEMMs (measured 0.6 vs 144 GFLOP/s on an AMD EPYC Zen 3), so bf16 is ~6x
slower there, not faster. ``fp32`` and ``bf16`` are explicit; ``int8`` (opt-in) is
dynamic quantisation of the Linear layers (int8 weights, fp32 activations, CPU only).

The precision recorded in an encoder identity, and so in the feature cache key, is always
the resolved one, never ``auto``: ``auto`` on a machine without native bf16 reuses fp32
cache entries.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

AUTO = "auto"
#: precisions an encoder runs in (what identities record)
CONCRETE = ("fp32", "bf16", "int8")
#: what users may ask for
REQUESTABLE = (AUTO, *CONCRETE)

_warned_emulated: set[str] = set()


def _device_type(device: Any) -> str:
    if device is None:
        return "cpu"
    return str(getattr(device, "type", device)).split(":", 1)[0].lower()


def cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, arm
            return frozenset(value.split())
    return frozenset()


def cpu_model(path: str | Path = "/proc/cpuinfo") -> str:
    """The CPU model name (``platform.processor()`` where /proc/cpuinfo has none)."""
    try:
        for line in Path(path).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model"):
                return value.strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def cpu_bf16_report() -> dict[str, Any]:
    """What says whether this CPU computes bf16 natively: torch's checks and the CPU flags.

    torch's own answer (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``,
    which also checks that the OS enabled AMX) wins where torch has it; the flags
    ``avx512_bf16`` / ``amx_bf16`` (and ``bf16`` on arm) are the fallback.
    """
    import torch

    flags = cpu_flags()
    report: dict[str, Any] = {
        "cpu": cpu_model(),
        "torch_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        "flags": sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16"}),
    }
    checks = {}
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)
        if check is not None:
            try:
                checks[name.strip("_")] = bool(check())
            except Exception:  # noqa: BLE001 - an old or odd build: fall back to the flags
                pass
    report["torch"] = checks
    if checks:
        report["native_bf16"] = any(checks.values())
        report["source"] = "torch"
    else:
        report["native_bf16"] = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
        report["source"] = "cpuinfo"
    return report


def native_bf16(device: Any = None) -> bool:
    """True when ``device`` (default: the CPU) computes bfloat16 natively."""
    kind = _device_type(device)
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    return bool(cpu_bf16_report()["native_bf16"])


def resolve_precision(requested: str | None, device: Any = None) -> str:
    """The precision an encoder runs in: ``auto``/None -> bf16 where native, else fp32.

    An explicit ``bf16`` where it is not native is honoured with a one-time warning (it is
    emulated and several times slower than fp32); ``int8`` is CPU only.
    """
    precision = AUTO if requested is None else str(requested).strip().lower()
    if precision not in REQUESTABLE:
        raise ValueError(f"precision must be one of {', '.join(REQUESTABLE)}, got {requested!r}")
    kind = _device_type(device)
    if precision == AUTO:
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device) and kind not in _warned_emulated:
        _warned_emulated.add(kind)
        where = cpu_model() if kind == "cpu" else kind
        warnings.warn(f"bf16 is not native on this {kind} ({where}): torch emulates it, several times slower "
                      "than fp32; use precision auto or fp32 unless you need bf16 features",
                      RuntimeWarning, stacklevel=2)
    if precision == "int8" and kind != "cpu":
        raise ValueError(f"int8 (dynamic quantisation) runs on the CPU only, not on {kind}")
    return precision


def quantise_linear(module: Any) -> Any:
    """``module`` with its Linear layers dynamically quantised to int8 (fp32 activations).

    Replaces the layers in place (the module's other parts and the calls into it stay the
    same) and returns the module.
    """
    import torch

    quantize_dynamic = getattr(torch.ao.quantization, "quantize_dynamic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.10 points to torchao
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
