"""The HTTP service: ``POST /v1/predict``, ``GET /v1/labels``, ``GET /health``, the web page at ``/``.

The model loads once when the app starts. Requests are decoded and checked in the request
handler (so bad audio gets its 4xx at once), then queued to a :class:`MicroBatcher` that runs
the model in one worker thread. Memory is bounded: bodies held at once (``max_buffered_upload_bytes``),
decodes at once (``max_concurrent_decodes``, each bounded by the loader's header-first limits),
decoded audio waiting for the model (``max_queued_audio_seconds``). Every request has a deadline
(``request_timeout_seconds``) and an id (``X-Request-ID``, echoed in every error body).

Refusals are JSON ``{"error": code, "detail": message, "request_id": id}``: 400 malformed
requests, 408 a body too slow to arrive, 413 over a size limit, 415 not audio, 422 unusable
audio, 503 busy or out of time. 500 is only for our own faults (a model or encoder failure
included): its body says nothing about the cause, which is logged with the request id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from polyemo.audio import MIN_SECONDS, SAMPLE_RATE, AudioLimits
from polyemo.predict.inputs import AudioItem
from polyemo.predict.results import Prediction
from polyemo.serve.batcher import MicroBatcher, QueueFullError
from polyemo.serve.uploads import BodyBudget, UploadError, audio_from_request, decode_upload

if TYPE_CHECKING:
    from polyemo.predict.engine import Recogniser

log = logging.getLogger("polyemo.serve")


class ServeConfig(BaseModel):
    """Limits and batching of the service."""

    max_upload_bytes: int = Field(50 * 1024 * 1024, gt=0, description="largest accepted request body")
    max_duration_seconds: float = Field(600.0, gt=0, description="longest accepted audio")
    min_duration_seconds: float = Field(0.1, ge=0, description="shortest accepted audio")
    max_batch: int = Field(8, ge=1, description="most requests run through the model together")
    max_wait_seconds: float = Field(0.01, ge=0, description="how long a request waits for others to batch with")
    max_queue: int = Field(1024, ge=1, description="requests waiting for the model beyond this get 503 (their audio is bounded by max_queued_audio_seconds too)")
    max_queued_audio_seconds: float = Field(
        3600.0, gt=0, description="decoded audio held for waiting requests (bounds memory); beyond it 503")
    max_sample_rate: int = Field(192_000, gt=0, description="highest accepted sample rate (from the header)")
    max_channels: int = Field(8, gt=0, description="most accepted channels (from the header)")
    max_decoded_bytes: int = Field(
        1024**3, gt=0, description="most PCM one upload may decode to at its own rate (frames x channels x 4 bytes)")
    max_concurrent_decodes: int = Field(2, ge=1, description="uploads decoded at the same time (others wait)")
    max_buffered_upload_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="request bodies held in memory by all requests together; beyond it 503")
    request_timeout_seconds: float = Field(120.0, gt=0, description="deadline of a request from its arrival; then 408/503")

    def audio_limits(self) -> AudioLimits:
        return AudioLimits(max_seconds=self.max_duration_seconds, max_sample_rate=self.max_sample_rate,
                           max_channels=self.max_channels, max_decoded_bytes=self.max_decoded_bytes)


def web_dir() -> Path:
    """The static web page shipped in the package (``polyemo/web``)."""
    return Path(str(resources.files("polyemo") / "web"))


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(request: Request) -> str:
    """The request's id: the client's ``X-Request-ID`` when it is short and plain, else a new one."""
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        given = request.headers.get("x-request-id", "")
        rid = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        request.state.request_id = rid
    return rid


def _error(status: int, code: str, message: str, rid: str | None = None) -> JSONResponse:
    body = {"error": code, "detail": message}
    headers = {}
    if rid is not None:
        body["request_id"] = rid
        headers["x-request-id"] = rid
    if status == 503:
        headers["retry-after"] = "1"
    return JSONResponse(body, status_code=status, headers=headers)


def _internal(rid: str) -> JSONResponse:
    return _error(500, "internal_error", f"internal server error; quote request id {rid} when reporting it", rid)


_AUDIO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def create_app(model: "str | os.PathLike[str] | Recogniser | None" = None, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app serving ``model`` (a bundle folder, a loaded Recogniser, or the default model)."""
    config = config or ServeConfig()
    state: dict[str, Any] = {"queued_seconds": 0.0}
    audio_limits = config.audio_limits()
    budget = BodyBudget(config.max_buffered_upload_bytes)

    def run_batch(items: list[AudioItem]) -> list[Prediction]:
        # The engine itself (the CLI's too): the batcher only groups requests.
        return state["recogniser"].run(items, on_error="record")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from polyemo.predict.engine import Recogniser, load_model

        started = time.perf_counter()
        recogniser = model if isinstance(model, Recogniser) else await run_in_threadpool(load_model, model)
        state["recogniser"] = recogniser
        state["started"] = time.time()
        log.info("model %s loaded in %.1f s", recogniser.name, time.perf_counter() - started)
        batcher: MicroBatcher[AudioItem, Prediction] = MicroBatcher(
            run_batch, max_batch=config.max_batch, max_wait_seconds=config.max_wait_seconds, max_queue=config.max_queue
        )
        batcher.start()
        state["batcher"] = batcher
        # Created here, in the server's event loop (asyncio objects belong to one loop).
        state["decodes"] = asyncio.Semaphore(config.max_concurrent_decodes)
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(
        title="polyemo",
        summary="Speech emotion recognition from audio uploads",
        version=_version(),
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return _error(422, "invalid_request", problems[:500], request_id(request))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The cause goes to the log (with the request id), never to the client.
        rid = request_id(request)
        log.error("request %s: unexpected error on %s", rid, request.url.path, exc_info=exc)
        return _internal(rid)

    @app.get("/health", summary="Liveness and the loaded model")
    async def health() -> dict[str, Any]:
        recogniser = state["recogniser"]
        batcher = state["batcher"]
        return {
            "status": "ok",
            "model": recogniser.name,
            "encoder": recogniser.encoder_name,
            "uptime_seconds": round(time.time() - state["started"], 1),
            "waiting": batcher.waiting,
            "batches_run": batcher.batches_run,
            "requests_run": batcher.items_run,
        }

    @app.get("/v1/labels", summary="The classes and dimensions the model predicts")
    async def labels() -> dict[str, Any]:
        recogniser = state["recogniser"]
        return {"classes": recogniser.classes, "dimensions": recogniser.dimensions, "model": recogniser.describe()}

    @app.get("/v1/limits", summary="Upload limits of this server")
    async def limits() -> dict[str, Any]:
        return config.model_dump()

    @app.post(
        "/v1/predict",
        summary="Predict the emotion of an audio upload",
        description=(
            "Send the audio as multipart/form-data (field `file`) or as the raw body with an audio/* "
            "Content-Type. WAV, FLAC, OGG and MP3 are decoded. Long audio is split at pauses by voice "
            "activity detection (`segment=auto` above the model's threshold, or `true`/`false`), and "
            "the response then lists per-segment predictions with their times."
        ),
        openapi_extra=_AUDIO_BODY,
    )
    async def predict(request: Request, segment: Literal["auto", "true", "false"] = "auto") -> JSONResponse:
        rid = request_id(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.request_timeout_seconds
        phase = "receiving"
        try:
            async with asyncio.timeout_at(deadline):
                with budget.hold() as hold:
                    data, name = await audio_from_request(request, config.max_upload_bytes, hold)
                    phase = "waiting"
                    async with state["decodes"]:
                        phase = "decoding"
                        # the decode stops itself at the deadline (a thread cannot be cancelled)
                        wave = await run_in_threadpool(
                            # the engine needs MIN_SECONDS: shorter audio is refused here, as the client's
                            decode_upload, data, name, config.max_duration_seconds,
                            max(config.min_duration_seconds, MIN_SECONDS),
                            limits=audio_limits, deadline=time.monotonic() + max(deadline - loop.time(), 0.0))
                    del data
                phase = "predicting"
                response = await _predict_wave(wave, name, segment, rid)
        except UploadError as exc:
            log.info("request %s: %s %s", rid, exc.status, exc.code)
            return _error(exc.status, exc.code, exc.message, rid)
        except TimeoutError:
            if phase == "receiving":
                log.info("request %s: 408 body not received in %.0f s", rid, config.request_timeout_seconds)
                return _error(408, "request_timeout", f"the upload did not arrive within {config.request_timeout_seconds:g} s", rid)
            log.warning("request %s: 503 timeout while %s", rid, phase)
            return _error(503, "timeout", f"not answered within {config.request_timeout_seconds:g} s (server busy); retry later", rid)
        except Exception as exc:  # noqa: BLE001 - our fault: logged in full, answered without internals
            log.error("request %s: internal error while %s", rid, phase, exc_info=exc)
            return _internal(rid)
        response.headers["x-request-id"] = rid
        return response

    async def _predict_wave(wave, name: str, segment: str, rid: str) -> JSONResponse:
        # No group: the recording is its own normalisation group, so requests batched
        # together never share statistics.
        item = AudioItem(source=name, wave=wave, segment=None if segment == "auto" else segment == "true")
        seconds = wave.size / SAMPLE_RATE
        if state["queued_seconds"] + seconds > config.max_queued_audio_seconds:
            return _error(503, "busy", f"server busy: {state['queued_seconds']:.0f} s of audio already waiting; retry later", rid)
        state["queued_seconds"] += seconds  # the event loop is single-threaded: no lock needed
        try:
            prediction = await state["batcher"].submit(item)
        except QueueFullError as exc:
            return _error(503, "busy", f"server busy: {exc}; retry later", rid)
        finally:
            state["queued_seconds"] -= seconds
        if prediction.error is not None:
            # The audio passed every check above, so a failure now is the model's (the encoder's): ours.
            log.error("request %s: the model failed on %r: %s", rid, name, prediction.error)
            return _internal(rid)
        return JSONResponse(prediction.to_dict())

    static = web_dir()
    if (static / "index.html").exists():
        app.mount("/static", StaticFiles(directory=static), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(static / "index.html", media_type="text/html")

    return app


def _version() -> str:
    from polyemo import __version__

    return __version__


def serve(
    model: "str | os.PathLike[str] | Recogniser | None" = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    log_level: str = "info",
) -> None:
    """Run the service with uvicorn until interrupted (one process: the model is loaded once)."""
    import uvicorn

    uvicorn.run(create_app(model, config), host=host, port=port, log_level=log_level, workers=1)
