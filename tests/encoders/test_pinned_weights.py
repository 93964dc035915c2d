"""Packaged weights are checked against pinned SHA-256 digests, once per installed file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from polyemo.encoders.whisper import PACKAGED_WHISPER, PackagedWhisper, WeightsMismatchError


def _fake(tmp_path: Path, monkeypatch, content: bytes) -> PackagedWhisper:
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "model.bin").write_bytes(content)
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    pinned = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ("config.json", "tokenizer.json")}
    pinned["model.bin"] = hashlib.sha256(b"the real weights").hexdigest()
    spec = PackagedWhisper("fake-whisper", "x/fake", (("pkg", "model.bin"),), ("pkg", "."), pinned)
    monkeypatch.setattr(PackagedWhisper, "sources", lambda self: ([folder / "model.bin"], folder))
    monkeypatch.setenv("POLYEMO_CACHE", str(tmp_path / "cache"))
    return spec


def test_a_modified_weight_file_is_refused_by_name(tmp_path, monkeypatch):
    spec = _fake(tmp_path, monkeypatch, b"tampered weights")
    with pytest.raises(WeightsMismatchError, match=r"pkg/model\.bin: SHA-256 .* is not the pinned"):
        spec.verify()


def test_the_pinned_files_pass_and_are_checked_once(tmp_path, monkeypatch):
    spec = _fake(tmp_path, monkeypatch, b"the real weights")
    spec.verify()
    records = list((tmp_path / "cache").rglob("verified.json"))
    assert len(records) == 1 and len(json.loads(records[0].read_text())) == 3
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    spec.verify()
    assert not calls  # nothing re-hashed while the files are unchanged
    assert spec.fingerprint() == spec.fingerprint() and len(spec.fingerprint()) == 12


def test_the_installed_packages_match_their_pins():
    for spec in PACKAGED_WHISPER.values():
        assert {p.name for p in spec.files()} == set(spec.sha256)
        spec.verify()
