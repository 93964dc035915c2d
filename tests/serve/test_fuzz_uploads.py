"""Property-based test (hypothesis) of the upload endpoint (issue 15): any body, content type and
file name gets a prediction or a JSON 4xx/503 with a request id; never a 500, never a crashed server."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import fuzz_cases as fz  # noqa: E402


@settings(max_examples=60, deadline=timedelta(seconds=30), derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(body=fz.audio_bytes, name=fz.names, content_type=st.one_of(st.none(), fz.content_types), multipart=st.booleans())
def test_any_upload_gets_a_prediction_or_a_json_refusal(client, body, name, content_type, multipart):
    fz.check_upload(client, body, name, content_type, multipart)


def test_the_server_is_healthy_after_the_fuzzing(client):
    assert client.get("/health").json()["status"] == "ok"
