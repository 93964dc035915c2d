"""The encoder registry and the documented name resolution order."""

from __future__ import annotations

import shutil

import pytest

from polyemo.encoders import ENCODERS, get_encoder
from polyemo.encoders.hf import canonical_name, resolve_model


def test_registry_names():
    names = set(ENCODERS.names())
    assert {"egemaps", "compare", "egemaps-lld", "whisper-base", "whisper-tiny.en", "wavlm-base-plus"} <= names
    assert canonical_name("openai/whisper-base") == "whisper-base"
    assert canonical_name("someone/model") == "someone/model"


def test_packaged_copy_when_not_cached_and_offline(monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    resolved = resolve_model("whisper-tiny.en")
    assert resolved.source == "packaged" and resolved.name == "whisper-tiny.en"
    assert resolve_model("openai/whisper-tiny.en").path == resolved.path  # hub id, same copy


def test_hf_cache_comes_before_the_packaged_copy(monkeypatch, tmp_path, tiny_models):
    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--openai--whisper-tiny.en" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_models["whisper"], snapshot)
    (cache / "models--openai--whisper-tiny.en" / "refs").mkdir()
    (cache / "models--openai--whisper-tiny.en" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    resolved = resolve_model("whisper-tiny.en")
    assert resolved.source == "hf-cache" and resolved.path == snapshot
    encoder = get_encoder("whisper-tiny.en")
    assert encoder.identity.name == "whisper-tiny.en" and encoder.frame_dim == 32  # the cached tiny model


def test_local_path_comes_first(monkeypatch, tmp_path, tiny_models):
    shutil.copytree(tiny_models["whisper"], tmp_path / "whisper-tiny.en")
    monkeypatch.chdir(tmp_path)
    resolved = resolve_model("whisper-tiny.en")
    assert resolved.source == "local" and resolved.path == (tmp_path / "whisper-tiny.en").resolve()


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="cannot find"):
        get_encoder("no-such-encoder")
