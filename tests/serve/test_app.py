"""The HTTP service: endpoints, every refusal as a JSON 4xx, failures that never stop the server."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from polyemo_tiny_bundle import SERVE_LIMITS as LIMITS
from polyemo_tiny_bundle import wav_bytes

from polyemo.audio import load_audio
from polyemo.serve.batcher import MicroBatcher, QueueFullError

CLASSES = ["anger", "happiness", "neutral", "sadness"]


def test_health_labels_limits_docs(client, recogniser):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == recogniser.name and health["encoder"] == "whisper-tiny.en"
    labels = client.get("/v1/labels").json()
    assert labels["classes"] == CLASSES and labels["dimensions"] == []
    assert labels["model"]["languages"] == ["de"] and labels["model"]["normalisation"] == "test-speaker"  # "speaker" is read as test-speaker
    assert client.get("/v1/limits").json()["max_upload_bytes"] == LIMITS.max_upload_bytes
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "audio/*" in body


def test_web_page_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file-input"' in page.text and "/static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the internet
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "/v1/predict" in script.text
    assert client.get("/static/style.css").status_code == 200


def test_predict_multipart_and_raw_body_agree(client, clip_path):
    data = clip_path.read_bytes()
    response = client.post("/v1/predict", files={"file": (clip_path.name, data, "audio/flac")})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["source"] == clip_path.name and result["label"] in CLASSES
    assert set(result["probabilities"]) == set(CLASSES)
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
    assert abs(result["duration"] - load_audio(clip_path).size / 16000) < 1e-3
    assert result["segments"] is None and result["error"] is None
    assert result["norm_source"].startswith("training statistics")
    # The same audio as a raw WAV body gives the same answer.
    raw = client.post("/v1/predict", content=wav_bytes(load_audio(clip_path)), headers={"content-type": "audio/wav"})
    assert raw.status_code == 200, raw.text
    assert raw.json()["label"] == result["label"]
    np.testing.assert_allclose([raw.json()["probabilities"][c] for c in CLASSES],
                               [result["probabilities"][c] for c in CLASSES], atol=2e-3)


def test_long_audio_gets_segments(client, clip_path):
    wave = load_audio(clip_path)
    gap = np.zeros(16000, dtype=np.float32)
    response = client.post("/v1/predict?segment=true", files={"file": ("long.wav", wav_bytes(np.concatenate([wave, gap, wave, gap, wave])))})
    assert response.status_code == 200, response.text
    result = response.json()
    assert len(result["segments"]) == 3
    assert all(s["label"] in CLASSES and s["end"] > s["start"] for s in result["segments"])
    assert result["norm_source"] == "recording (3 units)"  # its segments share statistics


def _silence(seconds: float) -> bytes:
    return wav_bytes(np.zeros(int(seconds * 16000), dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "says"),
    [
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "unsupported_content_type", "multipart/form-data"),
        ({"data": {"other": "x"}, "files": {"notfile": ("a.wav", b"x")}}, 400, "no_file", "'file'"),
        ({"files": {"file": ("junk.wav", b"this is not audio at all" * 10)}}, 422, "undecodable", "junk.wav: cannot decode"),
        ({"files": {"file": ("empty.wav", b"")}}, 422, "empty", "empty upload"),
        ({"files": {"file": ("quiet.wav", _silence(2.0))}}, 422, "silent", "silent"),
        ({"files": {"file": ("blip.wav", _silence(0.03))}}, 422, "too_short", "too short"),
        ({"files": {"file": ("big.wav", b"\0" * 3_100_000)}}, 413, "too_large", "3,000,000 bytes"),
        ({"files": {"file": ("long.wav", _silence(61.0))}}, 413, "too_long", "61.0 s of audio exceeds the limit of 60 s"),
    ],
    ids=["content-type", "no-file-field", "undecodable", "empty", "silent", "too-short", "too-large", "too-long"],
)
def test_bad_requests_get_json_4xx(client, kwargs, status, code, says):
    response = client.post("/v1/predict", **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and says in body["detail"]


def test_invalid_parameter_is_a_json_422(client, clip_path):
    response = client.post("/v1/predict?segment=maybe", files={"file": (clip_path.name, clip_path.read_bytes())})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request" and "segment" in response.json()["detail"]


def test_size_limit_holds_without_content_length(client):
    def chunks():  # chunked transfer: no Content-Length header to check up front
        for _ in range(40):
            yield b"\0" * 100_000

    response = client.post("/v1/predict", content=chunks(), headers={"content-type": "audio/wav"})
    assert response.status_code == 413 and response.json()["error"] == "too_large"


def test_model_failure_is_a_500_and_the_server_goes_on(client, recogniser, clip_path, monkeypatch, caplog):
    def broken(items, **kwargs):
        raise RuntimeError("simulated model failure")

    monkeypatch.setattr(recogniser, "run", broken)
    with caplog.at_level("ERROR", logger="polyemo.serve"):
        response = client.post("/v1/predict", files={"file": (clip_path.name, clip_path.read_bytes())},
                               headers={"x-request-id": "req-model-1"})
    assert response.status_code == 500
    body = response.json()
    # The client learns that it was our fault and the id to quote, never the cause ...
    assert body["error"] == "internal_error" and body["request_id"] == "req-model-1"
    assert "simulated" not in response.text and "RuntimeError" not in response.text
    assert response.headers["x-request-id"] == "req-model-1"
    # ... which is in the log under that id.
    assert any("req-model-1" in r.getMessage() and r.exc_info and "simulated model failure" in str(r.exc_info[1])
               for r in caplog.records)
    monkeypatch.undo()
    assert client.post("/v1/predict", files={"file": (clip_path.name, clip_path.read_bytes())}).status_code == 200
    assert client.get("/health").json()["status"] == "ok"


def test_concurrent_requests_are_batched_on_a_live_server(live_server, clip_path):
    import httpx

    data = clip_path.read_bytes()

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server, timeout=120) as http:
            return await asyncio.gather(*[
                http.post("/v1/predict", files={"file": (f"c{i}.flac", data)}) for i in range(12)
            ])

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 12
    labels = {r.json()["label"] for r in responses}
    assert len(labels) == 1  # same audio, same answer, whatever batch it ran in
    health = httpx.get(f"{live_server}/health").json()
    assert health["requests_run"] >= 12 and health["batches_run"] < health["requests_run"]


def test_micro_batcher_batches_fails_per_batch_and_bounds_its_queue():
    seen: list[list[int]] = []
    release = threading.Event()

    def process(items: list[int]) -> list[int]:
        release.wait(5)
        seen.append(items)
        if -1 in items:
            raise ValueError("bad batch")
        return [i * 10 for i in items]

    async def scenario():
        batcher = MicroBatcher(process, max_batch=4, max_wait_seconds=0.05, max_queue=6)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))  # occupies the worker
        await asyncio.sleep(0.1)
        waiting = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 7)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await batcher.submit(99)
        release.set()
        results = await asyncio.gather(first, *waiting)
        failing = await asyncio.gather(batcher.submit(-1), return_exceptions=True)
        after = await batcher.submit(7)
        await batcher.stop()
        return results, failing, after

    start = time.monotonic()
    results, failing, after = asyncio.run(scenario())
    assert results == [0, 10, 20, 30, 40, 50, 60]
    assert [len(batch) for batch in seen[:3]] == [1, 4, 2]  # queued requests ran together
    assert isinstance(failing[0], ValueError) and after == 70
    assert time.monotonic() - start < 5


def test_cli_serve_refuses_a_bad_bundle_before_binding(tmp_path):
    from typer.testing import CliRunner

    from polyemo.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "missing-bundle"), "--port", "9"])
    assert result.exit_code == 2 and "missing-bundle: not a bundle folder" in result.output


def test_no_default_model_is_a_clear_error(tmp_path, monkeypatch):
    import polyemo.predict
    import polyemo.predict.engine
    from polyemo.bundle import BundleError

    monkeypatch.setattr(polyemo.predict.engine, "default_model_path", lambda: tmp_path / "default-model")
    with pytest.raises(BundleError, match="no default model is installed"):
        polyemo.predict.load_model()


def test_queued_audio_is_bounded(recogniser, clip_path):
    from fastapi.testclient import TestClient

    from polyemo.serve import ServeConfig, create_app

    with TestClient(create_app(recogniser, ServeConfig(max_queued_audio_seconds=1.0))) as small:
        response = small.post("/v1/predict", files={"file": (clip_path.name, clip_path.read_bytes())})
        assert response.status_code == 503 and response.json()["error"] == "busy"
        assert small.get("/health").json()["status"] == "ok"
