"""Reading uploads within limits: the body size while it streams in; decoding (duration checked first)
is :func:`polyemo.predict.inputs.decode_upload`, its refusals mapped to HTTP statuses here."""

from __future__ import annotations

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request

from polyemo.predict.inputs import UnusableUpload
from polyemo.predict.inputs import decode_upload as decode_audio


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
    """Decode uploaded bytes (:func:`polyemo.predict.inputs.decode_upload`); a refusal becomes its HTTP error."""
    try:
        return decode_audio(data, name, max_seconds, min_seconds)
    except UnusableUpload as exc:
        raise UploadError(413 if exc.code == "too_long" else 422, exc.code, str(exc)) from exc
