"""Downloads: HTTP ranges and validators, the streamed response, and download counts.

:func:`plan` decides from the request's headers what to answer (200, 206, 304 or 416; RFC 9110
ranges and conditional requests, one range at a time: a request for several ranges gets the
whole file). :class:`BlobResponse` streams the blob store's chunks straight into ASGI messages
and stops reading when the client goes away. :class:`DownloadCounter` adds up downloads per
(tenant, artifact, device) in memory and writes them in one transaction every
:data:`FLUSH_S` seconds, off the download path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from roost.core import metrics
from roost.errors import Unavailable
from roost.ota.artifacts.tables import ota_artifacts, ota_downloads
from roost.ota.blobs.base import BlobStore, Chunk
from roost.store.database import Database

log = logging.getLogger(__name__)

DOWNLOADS = metrics.tally(
    "roost_ota_downloads",
    "Artifact downloads by devices, by whether they reached the end of the file",
    ["result"],
)
DOWNLOAD_BYTES = metrics.tally("roost_ota_download_bytes", "Artifact bytes sent to devices")

# Counts are written this often: one small transaction every few seconds whatever the number of
# downloads, and a counter read soon after a download (the overview) is at most this late.
FLUSH_S = 2.0
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to answer: the status and, for a body, the bytes ``start``..``end`` (exclusive)."""

    status: int
    start: int = 0
    end: int = 0


def _etag_matches(header: str, etag: str) -> bool:
    """If-None-Match's weak comparison: ``*``, or any listed tag equal to ours (W/ ignored)."""
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The one range ``header`` asks for as (start, end exclusive); None to send everything
    (no range, a malformed one, or several); (-1, -1) when it cannot be satisfied."""
    match = _RANGE.fullmatch(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0:
            return (-1, -1)
        return (max(0, size - suffix), size)
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None  # invalid: ignored, as RFC 9110 says
    if start >= size:
        return (-1, -1)
    return (start, end)


def plan(method: str, headers: dict[str, str], size: int, etag: str) -> Plan:
    """The answer to a GET or HEAD of a blob of ``size`` bytes with tag ``etag``."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Plan(304)
    ranged = headers.get("range")
    if ranged is not None:
        if_range = headers.get("if-range")
        # If-Range with a date, or another tag: the representation may have changed, send all.
        if if_range is None or if_range.strip() == etag:
            chosen = byte_range(ranged, size)
            if chosen == (-1, -1):
                return Plan(416)
            if chosen is not None:
                return Plan(206, chosen[0], chosen[1])
    return Plan(200, 0, size)


def unsatisfiable(size: int, etag: str) -> Response:
    """416 as problem+json, with ``Content-Range: bytes */size``."""
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": "Range not satisfiable",
            "status": 416,
            "detail": f"the range asked for is outside the {size}-byte file",
        }
    )
    return Response(
        body,
        status_code=416,
        media_type="application/problem+json",
        headers={"Content-Range": f"bytes */{size}", "ETag": etag, "Accept-Ranges": "bytes"},
    )


#: Called when a download ends: (bytes sent, whether the file's last byte was sent).
Finished = Callable[[int, bool], None]


class BlobResponse(Response):
    """Streams ``chunks`` (already positioned on the range) with the given headers.

    Every chunk is one ASGI body message; a client that goes away stops the reading at once (a
    task watches ``receive`` for the disconnect). ``finished(bytes_sent, complete)`` is called
    at the end, whatever happened.
    """

    def __init__(
        self,
        status_code: int,
        headers: dict[str, str],
        chunks: AsyncGenerator[Chunk, None] | None,
        length: int,
        finished: Finished | None = None,
        reaches_end: bool = True,
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = b""
        self.media_type = None
        self.init_headers(headers)
        self.chunks = chunks
        self.length = length
        self.finished = finished
        self.reaches_end = reaches_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if self.chunks is None or self.length == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if self.chunks is not None:
                await self.chunks.aclose()
            return
        sent = 0
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())
        try:
            async for chunk in self.chunks:
                if gone.is_set():
                    break
                sent += len(chunk)
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": sent < self.length}
                )
                if sent >= self.length:
                    break
            if sent < self.length and not gone.is_set():
                # The store gave fewer bytes than the length promised: end the body; the client
                # sees a short read (Content-Length) and can resume with a Range.
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await self.chunks.aclose()
            if self.finished is not None:
                complete = sent >= self.length and not gone.is_set()
                self.finished(sent, complete and self.reaches_end)


async def respond(
    request: Request, row: Mapping[str, Any], store: BlobStore, finished: Finished | None
) -> Response:
    """The answer to a GET or HEAD of an artifact (``row``) whose bytes are in ``store``."""
    etag = f'"{row["sha256"]}"'
    size = int(row["size"])
    answer = plan(request.method, dict(request.headers), size, etag)
    if answer.status == 416:
        return unsatisfiable(size, etag)
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, no-transform"}
    if answer.status == 304:
        return BlobResponse(304, headers, None, 0)
    length = answer.end - answer.start
    headers.update(
        {
            "Content-Type": row["content_type"],
            "Content-Length": str(length),
            "Content-Disposition": f'attachment; filename="{row["filename"]}"',
        }
    )
    if answer.status == 206:
        headers["Content-Range"] = f"bytes {answer.start}-{answer.end - 1}/{size}"
    if request.method == "HEAD" or length == 0:
        return BlobResponse(answer.status, headers, None, 0)
    chunks = await _primed(store.read(row["blob_key"], answer.start, answer.end), row)
    return BlobResponse(answer.status, headers, chunks, length, finished, answer.end == size)


async def _primed(
    chunks: AsyncGenerator[Chunk, None], row: Mapping[str, Any]
) -> AsyncGenerator[Chunk, None]:
    """``chunks`` with its first piece already read: a blob that cannot be opened (missing, the
    store down) is answered 503 before any header is sent, rather than with a cut response."""
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = b""
    except Exception as exc:
        log.error("cannot read the bytes of artifact %s (%s): %s", row["id"], row["blob_key"], exc)
        raise Unavailable(f"the bytes of artifact {row['id']!r} cannot be read now") from exc

    async def joined() -> AsyncGenerator[Chunk, None]:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    return joined()


class DownloadCounter:
    """Download counts per (tenant, artifact, device), kept in memory and written in batches."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self.db = db
        self.clock = clock
        self._pending: dict[tuple[str, str, str], list[int]] = {}
        self._last: dict[tuple[str, str, str], datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def add(
        self, tenant_id: str, artifact_id: str, device_id: str, sent: int, complete: bool
    ) -> None:
        """Count one download (``complete``: it reached the end of the file) of ``sent`` bytes."""
        DOWNLOADS.inc(("complete" if complete else "partial",))
        DOWNLOAD_BYTES.inc((), sent)
        key = (tenant_id, artifact_id, device_id)
        entry = self._pending.setdefault(key, [0, 0])
        entry[0] += 1 if complete else 0
        entry[1] += sent
        self._last[key] = self.clock()

    def start(self) -> None:
        """Write the counts every :data:`FLUSH_S` seconds."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ota-download-counts")

    async def close(self) -> None:
        """Stop, writing what is pending."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            try:
                await self.flush()
            except Exception as exc:  # kept for the next round; a download never fails for it
                log.warning("could not write download counts (kept for the next try): %s", exc)

    async def flush(self) -> None:
        """Write the pending counts now (one transaction)."""
        async with self._lock:
            if not self._pending:
                return
            pending, last = self._pending, self._last
            self._pending, self._last = {}, {}
            try:
                async with self.db.write() as conn:
                    await self._upsert_all(conn, pending, last)
            except Exception:
                for key, (count, sent) in pending.items():  # put them back, merged
                    entry = self._pending.setdefault(key, [0, 0])
                    entry[0] += count
                    entry[1] += sent
                    self._last.setdefault(key, last[key])
                raise

    @staticmethod
    async def _upsert_all(
        conn: AsyncConnection,
        pending: Mapping[tuple[str, str, str], list[int]],
        last: Mapping[tuple[str, str, str], datetime],
    ) -> None:
        """Add ``pending`` to the stored counts with one statement (a short write transaction:
        a flush after a thousand downloads must not hold SQLite's lock for long)."""
        pairs = {(tenant_id, artifact_id) for tenant_id, artifact_id, _ in pending}
        alive = {
            (row.tenant_id, row.id)
            for row in await conn.execute(
                sa.select(ota_artifacts.c.tenant_id, ota_artifacts.c.id).where(
                    sa.tuple_(ota_artifacts.c.tenant_id, ota_artifacts.c.id).in_(sorted(pairs))
                )
            )
        }
        rows = [
            {
                "tenant_id": tenant_id,
                "artifact_id": artifact_id,
                "device_id": device_id,
                "count": count,
                "bytes": sent,
                "last_at": last[(tenant_id, artifact_id, device_id)],
            }
            # An artifact deleted meanwhile: count nothing for it.
            for (tenant_id, artifact_id, device_id), (count, sent) in pending.items()
            if (tenant_id, artifact_id) in alive
        ]
        if not rows:
            return
        insert = (
            pg_insert(ota_downloads)
            if conn.dialect.name == "postgresql"
            else sqlite_insert(ota_downloads)
        )
        await conn.execute(
            insert.on_conflict_do_update(
                index_elements=["tenant_id", "artifact_id", "device_id"],
                set_={
                    "count": ota_downloads.c.count + insert.excluded["count"],
                    "bytes": ota_downloads.c.bytes + insert.excluded["bytes"],
                    "last_at": insert.excluded["last_at"],
                },
            ),
            rows,
        )
