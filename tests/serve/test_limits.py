"""The server's bounds (issue 15): header-first refusals with the right 4xx, bounded decodes and
bodies, deadlines, request ids, and 500 only (and without internals) for our own faults."""

from __future__ import annotations

import sys
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from polyemo_tiny_bundle import wav_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import audio_cases as cases  # noqa: E402

from polyemo.serve import ServeConfig, create_app  # noqa: E402


@pytest.fixture(scope="module")
def bomb_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.getbasetemp() / "click-bomb-600s-8ch-192k.flac"
    if not path.exists():
        cases.write_click_bomb(path)
    return path.read_bytes()


def test_the_bomb_gets_413_at_once_without_decoding(recogniser, bomb_bytes):
    # The defaults: 600 s allowed, and 192 kHz x 8 channels allowed; the decoded-PCM limit refuses it.
    config = ServeConfig(max_upload_bytes=3_000_000, max_duration_seconds=600)
    with TestClient(create_app(recogniser, config)) as client:
        tracemalloc.start()
        started = time.perf_counter()
        response = client.post("/v1/predict", files={"file": ("bomb.flac", bomb_bytes, "audio/flac")})
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["error"] == "decoded_too_large" and "bomb.flac: decodes to 3,686,400,000 bytes" in body["detail"]
    assert body["request_id"] and response.headers["x-request-id"] == body["request_id"]
    assert elapsed < 2.0 and peak < 30 * 1024**2  # the upload (1.7 MB) and its copies, no decoded audio


@pytest.mark.parametrize(("name", "status", "code"), [
    ("rate_384k.wav", 422, "sample_rate"), ("channels_9.wav", 422, "channels"), ("channels_64.wav", 422, "channels"),
    ("nan.wav", 422, "non_finite"), ("huge_values.wav", 422, "out_of_range"), ("zero_frames.wav", 422, "empty"), ("truncated_header.wav", 422, "undecodable"),
    ("silent.wav", 422, "silent"), ("text.mp3", 422, "undecodable"), ("too_short.wav", 422, "too_short"),
])
def test_hostile_files_get_the_right_4xx(client, name, status, code):
    response = client.post("/v1/predict", files={"file": (name, (cases.SEED_DIR / name).read_bytes())})
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and response.json()["request_id"]


def test_names_are_shown_without_their_path_and_wrong_extensions_still_work(client, clip_path):
    data = clip_path.read_bytes()  # FLAC
    response = client.post("/v1/predict", files={"file": ("../../etc/pass\x00wd\\..\\ünï 音.txt", data)})
    assert response.status_code == 200, response.text
    assert response.json()["source"] == "ünï 音.txt"  # the last part of the name, control characters dropped


def test_malformed_multipart_is_a_400_not_a_500(client):
    response = client.post("/v1/predict", content=b"--xyz\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc",
                           headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"] in ("bad_multipart", "no_file", "undecodable", "empty")


def test_encoder_failure_is_a_500_with_a_request_id_not_a_422(client, recogniser, clip_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA-ish failure inside the encoder at /secret/path")

    monkeypatch.setattr(recogniser.encoder, "pooled", broken)
    with caplog.at_level("ERROR", logger="polyemo.serve"):
        response = client.post("/v1/predict", files={"file": (clip_path.name, clip_path.read_bytes())})
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "internal_error" and body["request_id"] in body["detail"]
    assert "secret" not in response.text and "encoder" not in response.text
    assert any(body["request_id"] in r.getMessage() and "/secret/path" in r.getMessage() for r in caplog.records)


def test_decodes_run_at_most_max_concurrent_decodes_at_once(recogniser, clip_path, monkeypatch):
    import polyemo.serve.app as app_module

    running, peak, lock = [0], [0], threading.Lock()
    real = app_module.decode_upload

    def counting(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.15)
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(app_module, "decode_upload", counting)
    data = clip_path.read_bytes()
    with TestClient(create_app(recogniser, ServeConfig(max_concurrent_decodes=2))) as client:
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda i: client.post("/v1/predict", files={"file": (f"{i}.flac", data)}).status_code,
                                     range(8)))
    assert statuses == [200] * 8 and peak[0] == 2


def test_slow_model_hits_the_deadline_with_a_503_and_the_server_goes_on(recogniser, clip_path, monkeypatch):
    real = recogniser.run

    def slow(items, **kwargs):
        time.sleep(1.5)
        return real(items, **kwargs)

    data = clip_path.read_bytes()
    with TestClient(create_app(recogniser, ServeConfig(request_timeout_seconds=0.5))) as client:
        monkeypatch.setattr(recogniser, "run", slow)
        response = client.post("/v1/predict", files={"file": ("c.flac", data)})
        assert response.status_code == 503 and response.json()["error"] == "timeout"
        assert response.headers["retry-after"] == "1"
        monkeypatch.undo()
        time.sleep(1.2)  # the slow batch finishes in its thread
        assert client.get("/health").json()["status"] == "ok"


def test_bodies_held_at_once_are_bounded(recogniser):
    with TestClient(create_app(recogniser, ServeConfig(max_buffered_upload_bytes=50_000))) as client:
        response = client.post("/v1/predict", content=wav_bytes(np.zeros(40_000, dtype=np.float32)),
                               headers={"content-type": "audio/wav"})
        assert response.status_code == 503 and response.json()["error"] == "busy"
        # and the budget is given back: a small upload still gets through to decoding
        small = client.post("/v1/predict", content=wav_bytes(np.zeros(1600, dtype=np.float32)),
                            headers={"content-type": "audio/wav"})
        assert small.status_code == 422 and small.json()["error"] == "silent"


def test_request_ids_are_taken_from_the_client_only_when_plain(client):
    plain = client.post("/v1/predict", content=b"x", headers={"content-type": "text/plain", "x-request-id": "abc-123"})
    assert plain.json()["request_id"] == "abc-123" and plain.status_code == 415
    odd = client.post("/v1/predict", content=b"x", headers={"content-type": "text/plain", "x-request-id": "a b\tc" * 30})
    assert odd.json()["request_id"] != "a b\tc" * 30 and len(odd.json()["request_id"]) == 32
