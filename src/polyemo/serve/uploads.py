"""Reading uploaded audio within limits: body size while it streams in, duration before decoding."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from starlette.datastructures import UploadFile
from starlette.requests import Request

from polyemo.audio import SAMPLE_RATE, AudioError, check_usable, to_mono_16k


class UploadError(Exception):
    """A request the server refuses: HTTP ``status``, a short ``code`` and a readable ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing more than ``max_bytes`` (checked as it streams, not only by header)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise UploadError(413, "too_large", f"upload of {int(declared):,} bytes exceeds the limit of {max_bytes:,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise UploadError(413, "too_large", f"upload exceeds the limit of {max_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def audio_from_request(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The audio bytes and a name for them: multipart field ``file`` or a raw ``audio/*`` body."""
    content_type = request.headers.get("content-type", "").lower()
    body = await read_body(request, max_bytes)
    if content_type.startswith("multipart/form-data"):
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return {"type": "http.request", "body": b"", "more_body": False}
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        # The body is already read (and size-checked); let Starlette parse it from memory.
        form = await Request(request.scope, replay).form(max_files=1, max_fields=10, max_part_size=max_bytes)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise UploadError(400, "no_file", "multipart upload needs a file in the field 'file'")
            return await upload.read(), upload.filename or "upload"
        finally:
            await form.close()
    if content_type.startswith("audio/") or content_type in ("application/octet-stream",):
        return body, "upload"
    raise UploadError(
        415,
        "unsupported_content_type",
        f"send multipart/form-data with a field 'file', or a raw body with Content-Type audio/*; got {content_type or 'none'!r}",
    )


def decode_upload(data: bytes, name: str, max_seconds: float, min_seconds: float = 0.1) -> np.ndarray:
    """Decode uploaded bytes to mono float32 16 kHz, refusing audio that is too long or unusable."""
    if not data:
        raise UploadError(422, "empty", f"{name}: empty upload (0 bytes)")
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # libsndfile's errors are untyped
        raise UploadError(422, "undecodable", f"{name}: cannot decode audio ({exc}); send WAV, FLAC, OGG or MP3") from exc
    if info.samplerate > 0 and info.frames / info.samplerate > max_seconds:
        raise UploadError(
            413, "too_long", f"{name}: {info.frames / info.samplerate:.1f} s of audio exceeds the limit of {max_seconds:g} s"
        )
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        wave = to_mono_16k(samples, int(rate), name)
    except AudioError as exc:
        raise UploadError(422, "undecodable", str(exc)) from exc
    except Exception as exc:
        raise UploadError(422, "undecodable", f"{name}: cannot decode audio ({exc})") from exc
    if wave.size / SAMPLE_RATE > max_seconds:  # the header can understate (e.g. MP3)
        raise UploadError(413, "too_long", f"{name}: {wave.size / SAMPLE_RATE:.1f} s of audio exceeds the limit of {max_seconds:g} s")
    try:
        check_usable(wave, name, min_seconds)
    except AudioError as exc:
        code = "silent" if "silent" in exc.reason else "empty" if "empty" in exc.reason else "too_short"
        raise UploadError(422, code, str(exc)) from exc
    return wave
