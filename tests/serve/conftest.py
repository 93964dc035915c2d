"""Fixtures of the server tests: the tiny real model, an app client, a live uvicorn server."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import polyemo_tiny_bundle as tiny  # noqa: E402

from polyemo.serve import create_app  # noqa: E402

LIMITS = tiny.SERVE_LIMITS


@pytest.fixture(scope="session")
def recogniser(tmp_path_factory, shared_corpora):
    return tiny.recogniser(tiny.shared_bundle(tmp_path_factory.getbasetemp(), shared_corpora))


@pytest.fixture(scope="session")
def clip_path(shared_corpora) -> Path:
    """A real EmoDB clip (anger, speaker 03)."""
    return shared_corpora / "emodb" / "audio" / "03a01Wa.flac"


@pytest.fixture(scope="module")
def client(recogniser):
    from fastapi.testclient import TestClient

    # Model errors must come back as JSON 500s, as a real server sends them, not as exceptions.
    with TestClient(create_app(recogniser, LIMITS), raise_server_exceptions=False) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(recogniser):
    """A real uvicorn server on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(recogniser, LIMITS), host="127.0.0.1", port=port,
                                          log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
