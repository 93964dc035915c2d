"""Property checks for hostile inputs (issue 15), shared by ``tests/fuzz`` and ``benchmarks/fuzz.py``.

Each ``check_*`` takes one generated input and returns a short outcome (``"ok"`` or the error's
code/type) or raises ``AssertionError`` when the contract is broken: every input must end in a
correct result or a clear error naming the input (:class:`~polyemo.audio.AudioError`,
``ValueError``/``FileNotFoundError`` from the readers, ``BundleError``, a JSON 4xx from the
server), within :data:`MEMORY_BOUND` bytes of Python-tracked memory and the hypothesis deadline.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import audio_cases as cases  # noqa: E402

from polyemo.audio import AudioError, AudioLimits, read_audio  # noqa: E402

#: the fuzzed loader's limits: 60 s of output (3.8 MB) at most
LIMITS = AudioLimits(max_seconds=60, max_decoded_bytes=64 * 1024**2)
#: peak of memory allocated while one input is handled (numpy arrays included: numpy reports to tracemalloc)
MEMORY_BOUND = 96 * 1024**2
AUDIO_CODES = {"undecodable", "empty", "non_finite", "out_of_range", "too_long", "decoded_too_large", "sample_rate", "channels",
               "not_found", "timeout", "silent", "too_short"}
SERVER_STATUSES = {200, 400, 408, 413, 415, 422, 503}


@contextmanager
def memory_bounded(what: str):
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"{what}: {peak / 2**20:.0f} MiB allocated (bound {MEMORY_BOUND / 2**20:.0f} MiB)"


# --------------------------------------------------------------------------- audio bytes
def _seeds() -> list[bytes]:
    good = cases.tone(0.4, 22_050)
    out = [cases.encode(good, 22_050, "WAV"), cases.encode(good, 22_050, "FLAC"),
           cases.encode(cases.tone(0.3, 16_000, channels=2), 16_000, "WAV", "FLOAT")]
    try:
        out.append(cases.encode(good, 22_050, "OGG"))
    except Exception:  # noqa: BLE001 - a libsndfile without Vorbis
        pass
    return out + [p.read_bytes() for p in sorted(cases.SEED_DIR.iterdir())]


SEEDS = _seeds()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "byte", "cut", "insert", "dup"]))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 4096))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            data[at:at] = data[at:at + draw(st.integers(1, 512))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # truncated
    return bytes(data)


@st.composite
def crafted_wav(draw) -> bytes:
    """A WAV header with any rate, channel count, sample size and claimed length over a little data."""
    rate = draw(st.one_of(st.sampled_from([0, 1, 7, 8000, 16_000, 44_100, 192_000, 192_001, 10**6, 2**31, 2**32 - 1]),
                          st.integers(0, 2**32 - 1)))
    channels = draw(st.one_of(st.sampled_from([0, 1, 2, 8, 9, 255, 65535]), st.integers(0, 65535)))
    bits = draw(st.sampled_from([0, 8, 16, 24, 32, 33, 64]))
    frames = draw(st.one_of(st.integers(0, 1000), st.integers(0, 2**32 // max(1, channels * max(bits, 8) // 8) - 1)))
    data = draw(st.binary(max_size=8192))
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", draw(st.sampled_from([1, 3, 0xFFFE, 7])), channels, rate,
                      (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    size = min(frames * block, 2**32 - 1)
    return (b"RIFF" + struct.pack("<I", min(36 + size, 2**32 - 1)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", size) + data)


@st.composite
def non_finite_wav(draw) -> bytes:
    n = draw(st.integers(1, 20_000))
    wave = np.asarray(draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=50)),
                      dtype=np.float32)
    full = np.resize(wave, n)
    buffer = io.BytesIO()
    import soundfile as sf

    sf.write(buffer, full, draw(st.sampled_from([8000, 16_000, 48_000])), format="WAV", subtype="FLOAT")
    return buffer.getvalue()


audio_bytes = st.one_of(st.binary(max_size=4096), mutated(), crafted_wav(), non_finite_wav())
names = st.one_of(st.sampled_from(["a.wav", "../../etc/passwd", "..\\..\\boot.ini", "ünïcødé 音声.flac", "x.txt",
                                    "", ".", "..", "a" * 300, "nul\x00byte.wav", "新建 文件.mp3", "\u202eevil.wav"]),
                  st.text(max_size=40))


def check_audio(data: bytes, name: str = "fuzz.wav") -> str:
    label = name or "upload"
    with memory_bounded(f"decoding {len(data)} bytes"):
        try:
            wave = read_audio(data, limits=LIMITS, name=label)
        except AudioError as exc:
            assert exc.code in AUDIO_CODES, exc.code
            assert str(exc).startswith(f"{label}: "), str(exc)
            assert "object at 0x" not in exc.reason, exc.reason  # no object addresses
            return exc.code
    assert wave.dtype == np.float32 and wave.ndim == 1 and np.isfinite(wave).all()
    assert wave.size <= LIMITS.max_seconds * 16_000 + 160
    return "ok"


# --------------------------------------------------------------------------- list/manifest tables
table_text = st.one_of(
    st.text(max_size=300),
    st.lists(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(["path", "speaker", "group", "\"", ",", "\t", ""])),
                      min_size=1, max_size=4), min_size=0, max_size=6).map(lambda rows: "\n".join(",".join(r) for r in rows)),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
)


def check_list(folder: Path, suffix: str, content: bytes) -> str:
    """``collect_inputs`` on a list file (.csv/.tsv/.txt/.parquet) of any content."""
    from polyemo.predict.inputs import collect_inputs

    path = folder / f"list{suffix}"
    path.write_bytes(content)
    with memory_bounded(f"reading {path}"):
        try:
            rows, _ = collect_inputs(path)
        except (ValueError, FileNotFoundError) as exc:
            assert str(path) in str(exc), f"error does not name the file: {exc}"
            return type(exc).__name__
    assert all(isinstance(r.path, str) for r in rows)
    return "ok"


def check_manifest(folder: Path, suffix: str, content: bytes) -> str:
    """``polyemo.manifest.load`` on a manifest file of any content."""
    from polyemo import manifest

    path = folder / f"manifest{suffix}"
    path.write_bytes(content)
    with memory_bounded(f"reading {path}"):
        try:
            frame = manifest.load(path)
        except (ValueError, FileNotFoundError) as exc:  # ManifestError is a ValueError
            return type(exc).__name__
    assert list(frame.columns[:3]) == manifest.COLUMNS[:3]
    return "ok"


# --------------------------------------------------------------------------- bundles
def tiny_bundle(target: Path) -> Path:
    """A real (small) bundle without an encoder: a linear head on 2 layers x 8 dims, global normalisation."""
    import torch

    from polyemo.bundle import FeatureSpec, ModelCard, export_bundle
    from polyemo.heads import HeadConfig, build_head
    from polyemo.labels import LabelSet
    from polyemo.train.data import SplitData
    from polyemo.train.normalise import make_normaliser

    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 2, 8)).astype(np.float32)
    normaliser = make_normaliser("global")
    normaliser.fit(SplitData(features))
    config = HeadConfig(name="linear")
    torch.manual_seed(0)
    model = build_head(config, 2, 8, 3).eval()
    spec = FeatureSpec(encoder="fuzz-encoder", identity={"name": "fuzz-encoder", "key": "k", "weights_hash": "w",
                                                          "options": {}}, kind="pooled", feature_dim=8)
    card = ModelCard(name="fuzz", description="fuzz", corpora=["none"], languages=["de"], protocol="none",
                     scores={}, license="research")
    return export_bundle(target, model=model, head_config=config, features=spec,
                         labels=LabelSet(name="three", classes=["anger", "happiness", "sadness"]), card=card, normaliser=normaliser,
                         metrics={}, overwrite=True)


def rehash(bundle: Path) -> None:
    """Make manifest.json agree with the files again (so the parser, not the checksum, meets the damage)."""
    from polyemo.bundle import sha256_file

    manifest = json.loads((bundle / "manifest.json").read_text())
    for name, entry in manifest.get("files", {}).items():
        if isinstance(entry, dict) and (bundle / name).is_file():
            entry["sha256"] = sha256_file(bundle / name)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
                                     st.text(max_size=20)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=10), inner, max_size=4)),
                           max_leaves=12)


def check_bundle(bundle: Path) -> str:
    """Read a (damaged) bundle and build its head and normaliser: a usable bundle or a BundleError."""
    from polyemo.bundle import BundleError, normaliser_from_bundle, read_bundle

    with memory_bounded(f"reading {bundle}"):
        try:
            loaded = read_bundle(bundle)
            loaded.build_head()
            normaliser_from_bundle(loaded.config.normalisation, loaded.normalisation_stats)
        except BundleError as exc:
            assert str(bundle) in str(exc), str(exc)
            return "BundleError"
    return "ok"


# --------------------------------------------------------------------------- uploads
content_types = st.one_of(st.sampled_from(["audio/wav", "audio/flac", "audio/mpeg", "application/octet-stream",
                                           "text/plain", "", "multipart/form-data", "multipart/form-data; boundary=",
                                           "multipart/form-data; boundary=xyz", "audio/../../x", "AUDIO/WAV; x=\u00e9"]),
                          st.text(max_size=30))


def check_upload(client, body: bytes, name: str, content_type: str | None, multipart: bool) -> int:
    """POST one upload; the server answers 200 with a prediction or a JSON refusal, never a 500."""
    if multipart:
        # Built by hand so any file name (control characters, quotes, non-UTF-8) reaches the server.
        boundary = b"polyemo-fuzz-7d1e"
        raw_name = name.encode("utf-8", "surrogateescape").replace(b"\r", b"").replace(b"\n", b"")
        part_type = (content_type or "audio/wav").encode("utf-8", "surrogateescape").replace(b"\r", b"").replace(b"\n", b"")
        payload = (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + raw_name
                   + b"\"\r\nContent-Type: " + part_type + b"\r\n\r\n" + body + b"\r\n--" + boundary + b"--\r\n")
        response = client.post("/v1/predict", content=payload,
                               headers={"content-type": b"multipart/form-data; boundary=" + boundary})
    else:
        headers = {} if content_type is None else {
            "content-type": content_type.encode("utf-8", "surrogateescape").replace(b"\r", b"").replace(b"\n", b"")}
        response = client.post("/v1/predict", content=body, headers=headers)
    assert response.status_code in SERVER_STATUSES, (response.status_code, response.text[:300])
    payload = response.json()
    if response.status_code == 200:
        assert payload["error"] is None and payload["label"] is not None
        assert abs(sum(payload["probabilities"].values()) - 1) < 1e-3
        assert "/" not in payload["source"] and "\\" not in payload["source"]
    else:
        assert set(payload) >= {"error", "detail", "request_id"}, payload
        assert "Traceback" not in response.text and "object at 0x" not in payload["detail"]
    return response.status_code


def damage_bundle(bundle: Path, target: str, mutation: str, payload: bytes, value, rehashed: bool, at: int) -> str:
    """Damage one file of a bundle copy (overwritten bytes, a JSON value, truncation or deletion;
    optionally re-hashed so the manifest agrees) and return what reading it gave."""
    path = bundle / target
    original = path.read_bytes()
    if mutation == "bytes":
        i = at % max(len(original), 1)
        path.write_bytes(original[:i] + payload + original[i + len(payload):])
    elif mutation == "truncate":
        path.write_bytes(original[: at % max(len(original), 1)])
    elif mutation == "delete":
        path.unlink()
    elif target.endswith(".json"):
        document = json.loads(original)
        if isinstance(document, dict) and document:
            document[sorted(document)[at % len(document)]] = value
        else:
            document = value
        path.write_text(json.dumps(document))
    else:
        path.write_bytes(json.dumps(value).encode())
    if rehashed and target != "manifest.json":
        rehash(bundle)
    return check_bundle(bundle)
