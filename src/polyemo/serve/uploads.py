"""Reading uploads within limits: the body size while it streams in; decoding (header checked
first, then bounded block decoding) is :func:`polyemo.predict.inputs.decode_upload`, its refusals
mapped to HTTP statuses here. Messages name the upload and the limit, never server internals."""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

import numpy as np
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from polyemo.audio import AudioLimits
from polyemo.predict.inputs import UnusableUpload
from polyemo.predict.inputs import decode_upload as decode_audio

#: HTTP status of each refusal code of :class:`~polyemo.predict.inputs.UnusableUpload`
#: (413: more than the limits allow; 422: audio we cannot use; 503: our capacity, retry later)
STATUS_OF_CODE = {"too_long": 413, "decoded_too_large": 413, "timeout": 503}


class UploadError(Exception):
    """A request the server refuses: HTTP ``status``, a short ``code`` and a readable ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


def upload_name(raw: str | None) -> str:
    """A safe display name for a client's file name: the last path part, no control characters,
    at most 120 characters (it only appears in messages and results, never as a path)."""
    text = unicodedata.normalize("NFC", str(raw or ""))
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = PurePosixPath(text.replace("\\", "/")).name.strip()
    text = re.sub(r"^\.+$", "", text)
    return text[:120] or "upload"


class BodyBudget:
    """Bytes of request bodies held in memory by all requests together, from the first chunk
    received until the request is decoded (:meth:`hold`); beyond ``limit`` new bytes get 503.
    The event loop is one thread, so plain counters suffice."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def hold(self) -> "_Hold":
        return _Hold(self)


class _Hold:
    """One request's share of a :class:`BodyBudget`, given back when the ``with`` block ends."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.taken = 0

    def take(self, n: int) -> None:
        if self.budget.held + n > self.budget.limit:
            raise UploadError(503, "busy", "server busy: too many uploads are being received; retry later")
        self.budget.held += n
        self.taken += n

    def __enter__(self) -> "_Hold":
        return self

    def __exit__(self, *exc: object) -> None:
        self.budget.held -= self.taken
        self.taken = 0


async def read_body(request: Request, max_bytes: int, hold: _Hold | None = None) -> bytes:
    """The request body, refusing more than ``max_bytes`` (checked as it streams, not only by header);
    ``hold`` (of a :class:`BodyBudget`) counts its bytes against the server-wide budget."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise UploadError(413, "too_large", f"upload of {int(declared):,} bytes exceeds the limit of {max_bytes:,} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise UploadError(413, "too_large", f"upload exceeds the limit of {max_bytes:,} bytes")
        if hold is not None:
            hold.take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


async def audio_from_request(request: Request, max_bytes: int, hold: _Hold | None = None) -> tuple[bytes, str]:
    """The audio bytes and a name for them: multipart field ``file`` or a raw ``audio/*`` body."""
    content_type = request.headers.get("content-type", "").lower()
    if not (content_type.startswith("multipart/form-data") or content_type.startswith("audio/")
            or content_type.startswith("application/octet-stream")):
        raise UploadError(
            415,
            "unsupported_content_type",
            "send multipart/form-data with a field 'file', or a raw body with Content-Type audio/*; "
            f"got {upload_name(content_type)[:60] if content_type else 'none'!r}",
        )
    body = await read_body(request, max_bytes, hold)
    if not content_type.startswith("multipart/form-data"):
        return body, "upload"
    replayed = False

    async def replay() -> dict:
        nonlocal replayed
        if replayed:
            return {"type": "http.request", "body": b"", "more_body": False}
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    # The body is already read (and size-checked); let Starlette parse it from memory.
    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=10, max_part_size=max_bytes)
    except (HTTPException, ValueError, KeyError, UnicodeError) as exc:  # malformed multipart
        raise UploadError(400, "bad_multipart", "the multipart/form-data body cannot be parsed") from exc
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise UploadError(400, "no_file", "multipart upload needs a file in the field 'file'")
        return await upload.read(), upload_name(upload.filename)
    finally:
        await form.close()


def decode_upload(data: bytes, name: str, max_seconds: float, min_seconds: float = 0.1, *,
                  limits: AudioLimits | None = None, deadline: float | None = None) -> np.ndarray:
    """Decode uploaded bytes (:func:`polyemo.predict.inputs.decode_upload`); a refusal becomes its HTTP error."""
    try:
        return decode_audio(data, name, max_seconds, min_seconds, limits=limits, deadline=deadline)
    except UnusableUpload as exc:
        raise UploadError(STATUS_OF_CODE.get(exc.code, 422), exc.code, str(exc)) from exc
