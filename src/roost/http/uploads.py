"""Raw request bodies streamed to storage (artifact uploads, diagnostics archives)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

from roost.errors import InvalidInput


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The body as it arrives; a client gone mid-body is a 422 (nothing is stored)."""
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect as exc:
        raise InvalidInput(
            "the upload was cut short (the client went away): nothing stored"
        ) from exc


def content_length(request: Request) -> int | None:
    """The announced length, when the client gave a valid one (limits are checked early)."""
    raw = request.headers.get("content-length")
    return int(raw) if raw is not None and raw.isdigit() else None
