"""Precision from the hardware: auto resolves to bf16 only where it is native; int8 quantises."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from polyemo.encoders import get_encoder, precision
from polyemo.encoders.precision import cpu_flags, native_bf16, resolve_precision


@pytest.fixture
def fake_cpu(monkeypatch):
    """``fake_cpu(native)``: pretend the CPU does (not) compute bf16 natively; warnings reset."""

    def set_native(native: bool) -> None:
        report = {**precision.cpu_bf16_report(), "native_bf16": native, "source": "test"}
        monkeypatch.setattr(precision, "cpu_bf16_report", lambda: report)
        monkeypatch.setattr(precision, "_warned_emulated", set())

    return set_native


def test_this_machine_resolves_auto_from_what_torch_and_the_cpu_flags_say():
    report = precision.cpu_bf16_report()
    flags = cpu_flags()
    assert report["source"] in ("torch", "cpuinfo") and report["cpu"]
    if report["source"] == "torch":
        assert report["native_bf16"] == any(report["torch"].values())
    native = native_bf16()
    assert resolve_precision(None) == resolve_precision("auto") == ("bf16" if native else "fp32")
    if flags and not flags & {"avx512_bf16", "amx_bf16"}:  # e.g. this AMD EPYC (Zen 3, AVX2 only)
        assert not native and resolve_precision("auto", "cpu") == "fp32"


def test_auto_picks_bf16_only_where_native(fake_cpu):
    fake_cpu(True)
    assert resolve_precision("auto") == "bf16" and resolve_precision("AUTO", torch.device("cpu")) == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native bf16: no warning
        assert resolve_precision("bf16") == "bf16"
    fake_cpu(False)
    assert resolve_precision(None) == "fp32"
    assert resolve_precision("fp32") == "fp32" and resolve_precision("int8") == "int8"


def test_explicit_bf16_without_native_support_warns_once(fake_cpu):
    fake_cpu(False)
    with pytest.warns(RuntimeWarning, match="emulate"):
        assert resolve_precision("bf16") == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16") == "bf16"  # once per process


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, int8"):
        resolve_precision("fp8")
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("int8", "cuda:0")
    assert native_bf16("mps") is False


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n\n")
    assert {"avx2", "avx512_bf16", "amx_bf16"} <= cpu_flags(info)
    assert precision.cpu_model(info) == "Test CPU"
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_the_identity_records_the_resolved_precision_so_auto_reuses_its_cache(fake_cpu):
    fake_cpu(False)
    auto, fp32 = get_encoder("whisper-tiny.en"), get_encoder("whisper-tiny.en", precision="fp32")
    assert auto.precision == auto.identity.precision == "fp32" and auto.requested_precision == "auto"
    assert auto.identity.key() == fp32.identity.key()  # the cache entries of fp32 serve auto
    fake_cpu(True)
    native = get_encoder("whisper-tiny.en", precision="auto")
    assert native.identity.precision == "bf16" and native.identity.key() != fp32.identity.key()


def test_int8_quantises_the_linear_layers_and_stays_close_to_fp32(speech):
    fp32, int8 = get_encoder("whisper-tiny.en", precision="fp32"), get_encoder("whisper-tiny.en", precision="int8")
    assert int8.identity.precision == "int8" and int8.identity.key() != fp32.identity.key()
    a, b = fp32.pooled(speech[:2]), int8.pooled(speech[:2])
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    quantised = [m for m in int8.encoder.modules() if isinstance(m, dynamic)]
    assert len(quantised) == 4 * 6  # q, k, v, out + fc1, fc2 in each of tiny's 4 blocks
    assert not any(type(m) is torch.nn.Linear for m in int8.encoder.modules())
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    assert cos.min() >= 0.99, cos  # measured >= 0.999 on 4 EmoDB clips
    assert np.isfinite(b).all()
