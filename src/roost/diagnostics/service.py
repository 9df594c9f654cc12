"""Diagnostics: a device's uploaded archives, kept in the blob store, listed and downloaded.

An upload streams into a new blob a piece at a time (SHA-256 computed on the way, memory flat
whatever the size); a body over :data:`MAX_BYTES` (413) or cut short (422) leaves nothing. The
blob is durable before its row commits; then the device's archives beyond the newest
:data:`KEEP_PER_DEVICE` are deleted with their blobs. Downloads go through the artifacts'
download path (:func:`roost.ota.artifacts.downloads.respond`: ranges, ETag).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from roost.core import metrics
from roost.core.access import Actor, Role
from roost.core.device_identity import DeviceIdentity
from roost.diagnostics.tables import diagnostics
from roost.errors import InvalidInput, NotFound, PayloadTooLarge
from roost.inventory.devices.registry import device_pk_of
from roost.inventory.tables import devices
from roost.ota.artifacts.downloads import respond
from roost.ota.blobs.base import CHUNK_BYTES, BlobStore, open_blob_store
from roost.store.queries import Page, PageRequest, as_dicts, fetch_one, fetch_page, order_by

if TYPE_CHECKING:
    from roost.core.context import ServiceDeps

log = logging.getLogger(__name__)

# A diagnostics archive holds log tails and status documents: a few MiB at most. 50 MiB leaves
# room for a long journal while keeping a misbehaving device from filling the blob store.
MAX_BYTES = 50 * 1024 * 1024
# Archives kept per device (older ones are deleted with their bytes): enough to compare a
# device's last crashes, few enough that a device asked every hour cannot pile up storage.
KEEP_PER_DEVICE = 20
MAX_NOTE_CHARS = 500
SORTS = ("id", "size", "created_at")
#: Content types an upload may declare (anything else is stored as octet-stream).
KNOWN_TYPES = ("application/gzip", "application/x-gzip", "application/x-tar")

UPLOADS = metrics.tally(
    "roost_diagnostics_uploads", "Diagnostics archives devices uploaded and stored"
)


def diagnostic_out(row: dict[str, Any]) -> dict[str, Any]:
    """The API's view of a stored archive (the blob key stays inside)."""
    return {
        "id": row["id"],
        "device_id": row["device_id"],
        "size": row["size"],
        "sha256": row["sha256"],
        "content_type": row["content_type"],
        "filename": filename(row),
        "note": row["note"],
        "command_id": row["command_id"],
        "created_at": row["created_at"],
    }


def filename(row: dict[str, Any]) -> str:
    """The name a download is saved as: ``<device>-<UTC time>.tar.gz``."""
    stamp = row["created_at"].strftime("%Y%m%dT%H%M%SZ")
    suffix = ".tar.gz" if "gzip" in row["content_type"] else ".bin"
    return f"{row['device_id']}-{stamp}{suffix}"


class DiagnosticsService:
    """Diagnostics archives of every tenant's devices."""

    def __init__(self, deps: ServiceDeps, blobs: BlobStore | None = None) -> None:
        self.db = deps.db
        self.clock: Callable[[], datetime] = deps.clock
        # The same store (and directory or bucket) as artifacts, under keys of its own.
        self.blobs = blobs or open_blob_store(deps.settings.blob_url, deps.settings.data_dir)
        self._started = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Open the blob store."""
        await self._store()

    async def close(self) -> None:
        """Release the blob store."""
        if self._started:
            self._started = False
            await self.blobs.close()

    async def _store(self) -> BlobStore:
        if not self._started:
            async with self._lock:
                if not self._started:
                    await self.blobs.start()
                    self._started = True
        return self.blobs

    # -- the device's upload ---------------------------------------------------------------------

    async def upload(
        self,
        device: DeviceIdentity,
        body: AsyncIterator[bytes],
        *,
        content_type: str | None = None,
        note: str | None = None,
        command_id: str | None = None,
        expected_size: int | None = None,
    ) -> dict[str, Any]:
        """Store an archive the device sends (streamed), then prune its oldest beyond the limit."""
        if note is not None and len(note) > MAX_NOTE_CHARS:
            raise InvalidInput(f"note must be at most {MAX_NOTE_CHARS} characters")
        if expected_size is not None and expected_size > MAX_BYTES:
            raise PayloadTooLarge(_too_large())
        kind = (content_type or "").split(";")[0].strip().lower()
        store = await self._store()
        key = f"_diagnostics/{device.tenant_id}/{device.device_pk}/{uuid.uuid4().hex}"
        writer = await store.writer(key)
        digest = hashlib.sha256()
        size = 0
        piece = bytearray()
        try:
            async for data in body:
                size += len(data)
                if size > MAX_BYTES:
                    raise PayloadTooLarge(_too_large())
                piece += data
                if len(piece) >= CHUNK_BYTES:
                    chunk = bytes(piece)
                    piece.clear()
                    await asyncio.to_thread(digest.update, chunk)
                    await writer.write(chunk)
            if piece:
                digest.update(piece)
                await writer.write(bytes(piece))
            if expected_size is not None and size != expected_size:
                raise InvalidInput(
                    f"the upload was cut short: {size} of the {expected_size} bytes arrived"
                )
            if size == 0:
                raise InvalidInput("the archive is empty: send its bytes as the body")
            await writer.commit()
        except BaseException:
            await asyncio.shield(writer.abort())
            raise
        row = {
            "id": f"diag-{secrets.token_hex(8)}",
            "tenant_id": device.tenant_id,
            "device_pk": device.device_pk,
            "device_id": device.device_id,
            "size": size,
            "sha256": digest.hexdigest(),
            "content_type": kind if kind in KNOWN_TYPES else "application/octet-stream",
            "note": note,
            "command_id": command_id,
            "blob_key": key,
            "created_at": self.clock(),
        }
        try:
            async with self.db.write() as conn:
                await conn.execute(diagnostics.insert().values(**row))
                old = await conn.execute(
                    sa.select(diagnostics.c.id, diagnostics.c.blob_key)
                    .where(
                        diagnostics.c.tenant_id == device.tenant_id,
                        diagnostics.c.device_pk == device.device_pk,
                    )
                    .order_by(diagnostics.c.created_at.desc(), diagnostics.c.id.desc())
                    .offset(KEEP_PER_DEVICE)
                )
                pruned = [(str(ident), str(blob)) for ident, blob in old]
                if pruned:
                    await conn.execute(
                        diagnostics.delete().where(diagnostics.c.id.in_([i for i, _ in pruned]))
                    )
        except BaseException:
            await asyncio.shield(store.delete(key))
            raise
        UPLOADS.inc(())
        log.info(
            "diagnostics %s of device %s/%s stored: %d bytes",
            row["id"],
            device.tenant_id,
            device.device_id,
            size,
        )
        await self._delete_blobs([blob for _, blob in pruned])
        return diagnostic_out(row)

    # -- operators -------------------------------------------------------------------------------

    async def list(self, actor: Actor, device_id: str, page: PageRequest) -> Page[dict[str, Any]]:
        """A device's archives, newest first unless sorted otherwise."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            query = sa.select(diagnostics).where(
                diagnostics.c.tenant_id == actor.tenant_id, diagnostics.c.device_pk == pk
            )
            order = order_by(diagnostics, page.sort, SORTS, "-created_at")
            rows, total = await fetch_page(conn, query, order, page)
        return Page([diagnostic_out(r) for r in rows], total, page.limit, page.offset)

    async def _row(self, actor: Actor, device_id: str, diag_id: str) -> dict[str, Any]:
        async with self.db.read() as conn:
            pk = await device_pk_of(conn, actor.tenant_id, device_id)
            row = await fetch_one(
                conn,
                sa.select(diagnostics).where(
                    diagnostics.c.tenant_id == actor.tenant_id,
                    diagnostics.c.device_pk == pk,
                    diagnostics.c.id == diag_id,
                ),
            )
        if row is None:
            raise NotFound(f"device {device_id!r} has no diagnostics {diag_id!r}")
        return row

    async def get(self, actor: Actor, device_id: str, diag_id: str) -> dict[str, Any]:
        """One archive's record."""
        actor.require(Role.VIEWER)
        return diagnostic_out(await self._row(actor, device_id, diag_id))

    async def content(
        self, request: Request, actor: Actor, device_id: str, diag_id: str
    ) -> Response:
        """The archive's bytes (Range, If-None-Match) as an attachment."""
        actor.require(Role.VIEWER)
        row = await self._row(actor, device_id, diag_id)
        row["filename"] = filename(row)
        return await respond(request, row, await self._store(), None)

    async def delete(self, actor: Actor, device_id: str, diag_id: str) -> None:
        """Remove an archive and its bytes."""
        actor.require(Role.OPERATOR)
        row = await self._row(actor, device_id, diag_id)
        async with self.db.write() as conn:
            await conn.execute(diagnostics.delete().where(diagnostics.c.id == row["id"]))
        await self._delete_blobs([row["blob_key"]])

    async def device_deleted(self, tenant_id: str, device_id: str) -> None:
        """Forget a deleted device's archives and their bytes (a device-deletion listener)."""
        alive = sa.select(devices.c.pk).where(devices.c.tenant_id == tenant_id)
        async with self.db.write() as conn:
            rows = as_dicts(
                await conn.execute(
                    sa.select(diagnostics.c.id, diagnostics.c.blob_key).where(
                        diagnostics.c.tenant_id == tenant_id,
                        diagnostics.c.device_id == device_id,
                        diagnostics.c.device_pk.not_in(alive),
                    )
                )
            )
            if rows:
                await conn.execute(
                    diagnostics.delete().where(diagnostics.c.id.in_([r["id"] for r in rows]))
                )
        await self._delete_blobs([r["blob_key"] for r in rows])

    async def _delete_blobs(self, keys: Sequence[str]) -> None:
        store = await self._store()
        for key in keys:
            try:
                await store.delete(key)
            except Exception as exc:  # the row is gone: the bytes are unreachable garbage only
                log.warning("could not delete the diagnostics blob %s: %s", key, exc)


def _too_large() -> str:
    return f"a diagnostics archive may be at most {MAX_BYTES} bytes (50 MiB)"
