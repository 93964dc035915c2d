"""The HTTP service: ``POST /v1/predict``, ``GET /v1/labels``, ``GET /health``, the web page at ``/``.

The model loads once when the app starts. Requests are decoded and checked in the request
handler (so bad audio gets its 4xx at once), then queued to a :class:`MicroBatcher` that runs
the model in one worker thread. Any unexpected failure becomes a JSON 500 for that request
only; the server keeps running.
"""

from __future__ import annotations

import logging
import os
import time
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

from polyemo.audio import SAMPLE_RATE
from polyemo.predict.inputs import AudioItem
from polyemo.predict.results import Prediction
from polyemo.serve.batcher import MicroBatcher, QueueFullError
from polyemo.serve.uploads import UploadError, audio_from_request, decode_upload

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
    max_queue: int = Field(256, ge=1, description="requests waiting beyond this get 503")
    max_queued_audio_seconds: float = Field(
        3600.0, gt=0, description="decoded audio held for waiting requests (bounds memory); beyond it 503")


def web_dir() -> Path:
    """The static web page shipped in the package (``polyemo/web``)."""
    return Path(str(resources.files("polyemo") / "web"))


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "detail": message}, status_code=status)


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
        return _error(422, "invalid_request", problems)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, "internal_error", f"{type(exc).__name__}: {exc}")

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
        try:
            data, name = await audio_from_request(request, config.max_upload_bytes)
            wave = await run_in_threadpool(
                decode_upload, data, name, config.max_duration_seconds, config.min_duration_seconds
            )
        except UploadError as exc:
            return _error(exc.status, exc.code, exc.message)
        # No group: the recording is its own normalisation group, so requests batched
        # together never share statistics.
        item = AudioItem(source=name, wave=wave, segment=None if segment == "auto" else segment == "true")
        seconds = wave.size / SAMPLE_RATE
        if state["queued_seconds"] + seconds > config.max_queued_audio_seconds:
            return _error(503, "busy", f"server busy: {state['queued_seconds']:.0f} s of audio already waiting; retry later")
        state["queued_seconds"] += seconds  # the event loop is single-threaded: no lock needed
        try:
            prediction = await state["batcher"].submit(item)
        except QueueFullError as exc:
            return _error(503, "busy", f"server busy: {exc}; retry later")
        finally:
            state["queued_seconds"] -= seconds
        if prediction.error is not None:
            return _error(422, "unusable_audio", prediction.error)
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
