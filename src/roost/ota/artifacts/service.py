"""Artifacts: immutable uploaded files (or container references), signed, streamed to devices.

An upload streams into the blob store (:mod:`roost.ota.blobs`) while SHA-256, SHA-1 and MD5 are
computed on the way in, a chunk at a time (memory stays flat whatever the size); a body over
``ROOST_ARTIFACT_MAX_BYTES`` (413), cut short, or whose SHA-256 differs from the uploader's
(422) leaves nothing behind. The blob is durable before its row commits. Roost signs each
artifact's manifest (:meth:`ArtifactService.manifest`) with the platform key
(:mod:`roost.ota.artifacts.signing`) unless the operator attached a detached signature of their
own (kept as given, ``signature_by: operator``; Roost does not verify it).

Every download door (the user's, the device's, signed URLs, DDI, APT) goes through
:meth:`ArtifactService.stream`. Other rooms refuse deletes of what they use through
:attr:`ArtifactService.in_use_checks`.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from roost.audit import service as audit
from roost.core.access import Actor, Role
from roost.core.device_identity import DeviceIdentity
from roost.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from roost.inventory.tables import device_models, devices
from roost.ota.artifacts import debpkg, rules, signing, uploads
from roost.ota.artifacts.downloads import DownloadCounter, Finished, respond
from roost.ota.artifacts.rules import (
    DOWNLOAD_PATH,
    MAX_NOTES_CHARS,
    MAX_VERSION_CHARS,
    NO_BYTES,
    SHA256,
    SIGNED_PATH,
    artifact_out,
)
from roost.ota.artifacts.tables import (
    ota_artifact_tombstones,
    ota_artifacts,
    ota_downloads,
)
from roost.ota.blobs.base import BlobStore, open_blob_store
from roost.store.queries import (
    Page,
    PageRequest,
    as_dicts,
    fetch_one,
    fetch_page,
    order_by,
    text_match,
)

if TYPE_CHECKING:
    from roost.core.context import ServiceDeps

log = logging.getLogger(__name__)

SORTS = ("id", "name", "version", "type", "size", "created_at")
DOWNLOAD_SORTS = ("device_id", "count", "bytes", "last_at")
#: ``in_use_checks`` entries: (connection, tenant, artifact id) → what uses it, or None.
InUseCheck = Callable[[AsyncConnection, str, str], Awaitable[str | None]]
#: ``recipients`` entries: (connection, tenant, artifact id) → the devices it was sent to.
Recipients = Callable[[AsyncConnection, str, str], Awaitable[set[str]]]
# An artifact's bytes never change, so the download path may trust a row read this recently; a
# delete in another process reaches its downloads within this time (they then find no bytes).
SERVED_ROW_TTL_S = 10.0
# Distinct artifacts kept for the download path; beyond it the memo starts again (rows are small).
MAX_SERVED_ROWS = 4096


class ArtifactService:
    """Artifacts of every tenant: upload, read, delete, sign, and the one download path."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps
        self.db = deps.db
        self.settings = deps.settings
        self.clock: Callable[[], datetime] = deps.clock
        self.blobs: BlobStore = open_blob_store(deps.settings.blob_url, deps.settings.data_dir)
        #: Other rooms add checks here; a delete is refused (409) while one answers a reason.
        self.in_use_checks: list[InUseCheck] = []
        #: Rooms that send artifacts to devices (deployments) say here to which.
        self.recipients: list[Recipients] = []
        self._sent: dict[tuple[str, str], tuple[frozenset[str], float]] = {}
        self._sent_reads: dict[tuple[str, str], asyncio.Future[frozenset[str]]] = {}
        self.urls = signing.UrlSigner(deps.secret_key)
        self.downloads = DownloadCounter(deps.db, deps.clock)
        self._key: signing.SigningKey | None = None
        self._key_lock = asyncio.Lock()
        self._blobs_ready = False
        self._blobs_lock = asyncio.Lock()
        # Rows the download path read lately: (tenant, id) → (row, monotonic time read).
        self._served: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}

    async def start(self) -> None:
        """Open the blob store and start writing download counts."""
        await self._store()
        self.downloads.start()

    async def close(self) -> None:
        """Write pending counts, close the blob store."""
        await self.downloads.close()
        if self._blobs_ready:
            await self.blobs.close()
            self._blobs_ready = False

    async def _store(self) -> BlobStore:
        if not self._blobs_ready:
            async with self._blobs_lock:
                if not self._blobs_ready:
                    await self.blobs.start()
                    self._blobs_ready = True
        return self.blobs

    # -- signing ---------------------------------------------------------------------------------

    async def signing_key(self) -> signing.SigningKey:
        """The platform signing key: the operator's file, or the sealed one (made on first use)."""
        if self._key is not None:
            return self._key
        async with self._key_lock:
            if self._key is None:
                self._key = await signing.load_signing_key(
                    self.db, self.deps.secret_key, self.settings.ota_signing_key_file, self.clock
                )
        return self._key

    async def signing_key_document(self) -> dict[str, str]:
        """``{algorithm, key_id, public_key (PEM), public_key_raw (base64)}``."""
        return (await self.signing_key()).public_document()

    @staticmethod
    def manifest(row: Mapping[str, Any]) -> dict[str, Any]:
        """The signed manifest ``{id, sha256, size, type, version}`` of an artifact."""
        return {
            "id": row["id"],
            "sha256": row["sha256"],
            "size": row["size"],
            "type": row["type"],
            "version": row["version"],
        }

    def signed_url(self, tenant_id: str, artifact_id: str, device_id: str) -> str:
        """A path a device may GET without headers for ``ota_url_ttl_s`` seconds."""
        expires = int(self.clock().timestamp()) + self.settings.ota_url_ttl_s
        return SIGNED_PATH.format(token=self.urls.make(tenant_id, artifact_id, device_id, expires))

    def device_view(
        self, row: Mapping[str, Any], device: DeviceIdentity | str | None = None
    ) -> dict[str, Any]:
        """What a device is sent: the manifest, its signature, and where to download (paths on
        this server: ``url`` with the device's credentials, ``signed_url`` without)."""
        view = {
            **self.manifest(row),
            "name": row["name"],
            "filename": row["filename"],
            "signature": row["signature"],
            "signature_by": row["signature_by"],
            "signing_key_id": row["signing_key_id"],
            "url": DOWNLOAD_PATH.format(id=row["id"]),
        }
        if row["type"] == "container":
            view["reference"] = row["reference"]
        device_id = device.device_id if isinstance(device, DeviceIdentity) else device
        if device_id is not None:
            view["signed_url"] = self.signed_url(row["tenant_id"], row["id"], device_id)
        return view

    # -- reading ---------------------------------------------------------------------------------

    async def row(
        self, tenant_id: str, artifact_id: str, conn: AsyncConnection | None = None
    ) -> dict[str, Any]:
        """The stored row of an artifact (blob key included); 404 when the tenant has none."""
        query = sa.select(ota_artifacts).where(
            ota_artifacts.c.tenant_id == tenant_id, ota_artifacts.c.id == artifact_id
        )
        if conn is None:
            async with self.db.read() as own:
                found = await fetch_one(own, query)
        else:
            found = await fetch_one(conn, query)
        if found is None:
            raise NotFound(f"no artifact {artifact_id!r}")
        return found

    async def row_by_module(self, tenant_id: str, module_id: int) -> dict[str, Any]:
        """The stored row of the artifact numbered ``module_id`` in the tenant; 404 otherwise."""
        async with self.db.read() as conn:
            found = await fetch_one(
                conn,
                sa.select(ota_artifacts).where(
                    ota_artifacts.c.tenant_id == tenant_id, ota_artifacts.c.module_id == module_id
                ),
            )
        if found is None:
            raise NotFound(f"no software module {module_id}")
        return found

    async def get(self, actor: Actor, artifact_id: str) -> dict[str, Any]:
        """One artifact of the actor's tenant."""
        actor.require(Role.VIEWER)
        return artifact_out(await self.row(actor.tenant_id, artifact_id))

    async def list(
        self,
        actor: Actor,
        page: PageRequest,
        *,
        type: str | None = None,
        model_id: str | None = None,
        q: str | None = None,
    ) -> Page[dict[str, Any]]:
        """The tenant's artifacts, filtered by type, a model they suit, text in id/name/version."""
        actor.require(Role.VIEWER)
        query = sa.select(ota_artifacts).where(ota_artifacts.c.tenant_id == actor.tenant_id)
        if type is not None:
            query = query.where(ota_artifacts.c.type == type)
        if q:
            query = query.where(
                text_match(
                    [
                        ota_artifacts.c.id,
                        ota_artifacts.c.name,
                        ota_artifacts.c.version,
                        ota_artifacts.c.filename,
                    ],
                    q,
                )
            )
        order = order_by(ota_artifacts, page.sort, SORTS, "-created_at")
        async with self.db.read() as conn:
            if model_id is None:
                rows, total = await fetch_page(conn, query, order, page)
            else:  # model_ids is JSON: filtered here (a tenant has hundreds of artifacts at most)
                every = as_dicts(await conn.execute(query.order_by(*order)))
                kept = [r for r in every if not r["model_ids"] or model_id in r["model_ids"]]
                rows, total = kept[page.offset : page.offset + page.limit], len(kept)
        return Page([artifact_out(row) for row in rows], total, page.limit, page.offset)

    async def incompatible(
        self,
        conn: AsyncConnection | None,
        tenant_id: str,
        artifact_ids: Iterable[str],
        device_ids: Iterable[str],
    ) -> builtins.list[str]:
        """The devices (ids, sorted) whose model one of the artifacts does not suit: a device
        without a model does not suit an artifact limited to models. Unknown artifact: 404."""
        if conn is None:
            async with self.db.read() as own:
                return await self.incompatible(own, tenant_id, artifact_ids, device_ids)
        wanted = list(dict.fromkeys(artifact_ids))
        result = await conn.execute(
            sa.select(ota_artifacts.c.id, ota_artifacts.c.model_ids).where(
                ota_artifacts.c.tenant_id == tenant_id, ota_artifacts.c.id.in_(wanted)
            )
        )
        limits = {artifact_id: set(models) for artifact_id, models in result}
        missing = [a for a in wanted if a not in limits]
        if missing:
            raise NotFound(f"no artifact {missing[0]!r}")
        limited = [models for models in limits.values() if models]
        if not limited:
            return []
        found: set[str] = set()
        ids = list(dict.fromkeys(device_ids))
        for start in range(0, len(ids), 1000):  # bounded IN lists
            rows = await conn.execute(
                sa.select(devices.c.id, devices.c.model_id).where(
                    devices.c.tenant_id == tenant_id, devices.c.id.in_(ids[start : start + 1000])
                )
            )
            for device_id, model in rows:
                if any(model not in models for models in limited):
                    found.add(device_id)
        return sorted(found)

    async def downloads_of(
        self, actor: Actor, artifact_id: str, page: PageRequest
    ) -> Page[dict[str, Any]]:
        """Download counts of an artifact per device (written every few seconds)."""
        actor.require(Role.VIEWER)
        await self.downloads.flush()
        async with self.db.read() as conn:
            await self.row(actor.tenant_id, artifact_id, conn)
            query = sa.select(
                ota_downloads.c.device_id,
                ota_downloads.c.count,
                ota_downloads.c.bytes,
                ota_downloads.c.last_at,
            ).where(
                ota_downloads.c.tenant_id == actor.tenant_id,
                ota_downloads.c.artifact_id == artifact_id,
            )
            spec = page.sort or "device_id"
            name = spec.removeprefix("-")
            if name not in DOWNLOAD_SORTS:
                raise InvalidInput(
                    f"cannot sort by {name!r}; sortable fields: {', '.join(DOWNLOAD_SORTS)}"
                )
            column = ota_downloads.c[name]
            order: builtins.list[sa.ColumnElement[Any]] = [
                column.desc() if spec.startswith("-") else column.asc()
            ]
            if name != "device_id":
                order.append(ota_downloads.c.device_id.asc())
            rows, total = await fetch_page(conn, query, order, page)
        return Page(rows, total, page.limit, page.offset)

    # -- writing ---------------------------------------------------------------------------------

    async def _check_meta(
        self, conn: AsyncConnection, actor: Actor, meta: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The upload's metadata checked (:func:`rules.upload_fields`), its models known and its
        id free."""
        fields = rules.upload_fields(meta)
        models = fields["model_ids"]
        if models:
            known = set(
                (
                    await conn.execute(
                        sa.select(device_models.c.id).where(
                            device_models.c.tenant_id == actor.tenant_id,
                            device_models.c.id.in_(models),
                        )
                    )
                ).scalars()
            )
            unknown = [m for m in models if m not in known]
            if unknown:
                raise InvalidInput(
                    f"no device model {unknown[0]!r}",
                    errors=[
                        {"field": "model_id", "message": f"unknown models: {', '.join(unknown)}"}
                    ],
                )
        if await fetch_one(
            conn,
            sa.select(ota_artifacts.c.module_id).where(
                ota_artifacts.c.tenant_id == actor.tenant_id, ota_artifacts.c.id == fields["id"]
            ),
        ):
            raise Conflict(f"artifact {fields['id']!r} already exists (artifacts are immutable)")
        return fields

    async def create(
        self,
        actor: Actor,
        meta: Mapping[str, Any],
        body: AsyncIterator[bytes],
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
    ) -> dict[str, Any]:
        """Store a new artifact from ``body`` (streamed) with ``meta``: ``type`` (required),
        ``id``, ``name``, ``version``, ``filename``, ``model_ids``, ``release_notes``,
        ``signature`` (the operator's own, base64), ``reference`` (container type, no bytes)."""
        actor.require(Role.OPERATOR)
        if expected_sha256 is not None:
            expected_sha256 = expected_sha256.lower()
            if SHA256.fullmatch(expected_sha256) is None:
                raise InvalidInput("sha256 must be 64 hexadecimal digits")
        if expected_size is not None and expected_size > self.settings.artifact_max_bytes:
            raise PayloadTooLarge(
                f"the artifact is larger than the {self.settings.artifact_max_bytes}-byte limit "
                "(ROOST_ARTIFACT_MAX_BYTES)"
            )
        async with self.db.read() as conn:
            fields = await self._check_meta(conn, actor, meta)
        store = await self._store()
        key = f"{actor.tenant_id}/{fields['id']}/{uuid.uuid4().hex}"
        container = fields["type"] == "container"
        try:
            received = await uploads.receive(
                store,
                key,
                body,
                max_bytes=0 if container else self.settings.artifact_max_bytes,
                keep_prefix=debpkg.PREFIX_BYTES if fields["type"] == "deb" else 0,
                expected_size=expected_size,
            )
        except PayloadTooLarge as exc:
            if container:
                raise InvalidInput(NO_BYTES) from exc
            raise
        try:
            fields["metadata"] = self._finish_meta(fields, received, expected_sha256)
            if fields["type"] == "container":
                await received.writer.abort()
                key_or_none: str | None = None
            else:
                await received.writer.commit()
                key_or_none = key
        except BaseException:
            await asyncio.shield(received.writer.abort())
            raise
        try:
            return await self._insert(actor, fields, received, key_or_none)
        except BaseException:
            if key_or_none is not None:
                await asyncio.shield(store.delete(key_or_none))
            raise

    @staticmethod
    def _finish_meta(
        fields: dict[str, Any], received: uploads.Received, expected_sha256: str | None
    ) -> dict[str, Any]:
        if fields["type"] == "container" and received.size:
            raise InvalidInput(NO_BYTES)
        if expected_sha256 is not None and expected_sha256 != received.sha256:
            raise InvalidInput(
                f"the body's SHA-256 is {received.sha256}, not the {expected_sha256} given: "
                "nothing was stored"
            )
        metadata: dict[str, Any] = {}
        if fields["type"] == "deb":
            control = debpkg.control_fields(received.prefix)
            metadata = {"control": control}
            fields["name"] = fields["name"] or control["Package"]
            fields["version"] = fields["version"] or control["Version"]
            if len(fields["version"]) > MAX_VERSION_CHARS:
                raise InvalidInput(f"version must be at most {MAX_VERSION_CHARS} characters")
        fields["name"] = fields["name"] or fields["filename"]
        return metadata

    async def _insert(
        self,
        actor: Actor,
        fields: dict[str, Any],
        received: uploads.Received,
        key: str | None,
    ) -> dict[str, Any]:
        row: dict[str, Any] = {
            **fields,
            "tenant_id": actor.tenant_id,
            "size": received.size,
            "sha256": received.sha256,
            "sha1": received.sha1,
            "md5": received.md5,
            "blob_key": key,
            "signature_by": "operator" if fields["signature"] else "roost",
            "signing_key_id": None,
            "created_by": actor.name,
            "created_at": self.clock(),
        }
        if not fields["signature"]:
            signer = await self.signing_key()
            row["signature"] = signer.sign(self.manifest(row))
            row["signing_key_id"] = signer.key_id
        async with self.db.write() as conn:
            earlier = await fetch_one(
                conn,
                sa.select(ota_artifact_tombstones.c.sha256).where(
                    ota_artifact_tombstones.c.tenant_id == actor.tenant_id,
                    ota_artifact_tombstones.c.id == row["id"],
                ),
            )
            if earlier is not None and earlier["sha256"] != row["sha256"]:
                raise Conflict(
                    f"artifact id {row['id']!r} named other bytes (SHA-256 {earlier['sha256']}) "
                    "before it was deleted, and an artifact id always means the same bytes: "
                    "choose another id"
                )
            result = await conn.execute(ota_artifacts.insert().values(**row))
            inserted = result.inserted_primary_key
            assert inserted is not None  # an INSERT of one row always has it
            row["module_id"] = int(inserted[0])
            await audit.record(
                conn, actor, "create", "artifact", row["id"], after=artifact_out(row)
            )
        log.info("artifact %s/%s stored: %d bytes", actor.tenant_id, row["id"], row["size"])
        return artifact_out(row)

    async def update(self, actor: Actor, artifact_id: str, release_notes: str) -> dict[str, Any]:
        """Change the release notes (the one thing of an artifact that may change)."""
        actor.require(Role.OPERATOR)
        if len(release_notes) > MAX_NOTES_CHARS:
            raise InvalidInput(f"release_notes must be at most {MAX_NOTES_CHARS} characters")
        async with self.db.write() as conn:
            before = await self.row(actor.tenant_id, artifact_id, conn)
            await conn.execute(
                ota_artifacts.update()
                .where(ota_artifacts.c.module_id == before["module_id"])
                .values(release_notes=release_notes)
            )
            after = {**before, "release_notes": release_notes}
            await audit.record(
                conn,
                actor,
                "update",
                "artifact",
                artifact_id,
                before=artifact_out(before),
                after=artifact_out(after),
            )
        return artifact_out(after)

    async def delete(self, actor: Actor, artifact_id: str) -> None:
        """Remove an artifact and its bytes; 409 while something uses it (a deployment …)."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            before = await self.row(actor.tenant_id, artifact_id, conn)
            for check in self.in_use_checks:
                reason = await check(conn, actor.tenant_id, artifact_id)
                if reason:
                    raise Conflict(f"artifact {artifact_id!r} is in use: {reason}")
            await conn.execute(
                ota_downloads.delete().where(
                    ota_downloads.c.tenant_id == actor.tenant_id,
                    ota_downloads.c.artifact_id == artifact_id,
                )
            )
            await conn.execute(
                ota_artifacts.delete().where(ota_artifacts.c.module_id == before["module_id"])
            )
            await conn.execute(
                ota_artifact_tombstones.delete().where(
                    ota_artifact_tombstones.c.tenant_id == actor.tenant_id,
                    ota_artifact_tombstones.c.id == artifact_id,
                )
            )
            await conn.execute(
                ota_artifact_tombstones.insert().values(
                    tenant_id=actor.tenant_id,
                    id=artifact_id,
                    sha256=before["sha256"],
                    deleted_at=self.clock(),
                )
            )
            await audit.record(
                conn, actor, "delete", "artifact", artifact_id, before=artifact_out(before)
            )
        self._served.pop((actor.tenant_id, artifact_id), None)
        if before["blob_key"]:
            try:
                await (await self._store()).delete(before["blob_key"])
            except Exception as exc:  # the row is gone: the bytes are unreachable garbage only
                log.warning("could not delete the blob of artifact %s: %s", artifact_id, exc)

    # -- downloads -------------------------------------------------------------------------------

    async def stream(
        self, request: Request, tenant_id: str, artifact_id: str, device_id: str | None = None
    ) -> Response:
        """The artifact's bytes for ``request`` (GET or HEAD; Range, If-Range, If-None-Match),
        counted for ``device_id`` when a device downloads. The one download path of every door."""
        row = await self._served_row(tenant_id, artifact_id)
        if row["blob_key"] is None:
            raise NotFound(
                f"artifact {artifact_id!r} is a container reference ({row['reference']}): "
                "it has no bytes to download; pull the image from its registry"
            )
        finished: Finished | None = None
        if device_id is not None:
            counter = self.downloads

            def finished(sent: int, reached_end: bool) -> None:
                counter.add(tenant_id, artifact_id, device_id, sent, reached_end)

        return await respond(request, row, await self._store(), finished)

    async def _served_row(self, tenant_id: str, artifact_id: str) -> dict[str, Any]:
        """The row a download serves, from memory when read in the last
        :data:`SERVED_ROW_TTL_S` seconds: a thousand devices starting one download at once
        would otherwise queue for the database's few read connections (and time out there)."""
        key = (tenant_id, artifact_id)
        now = time.monotonic()
        cached = self._served.get(key)
        if cached is not None and now - cached[1] < SERVED_ROW_TTL_S:
            return cached[0]
        row = await self.row(tenant_id, artifact_id)
        if len(self._served) >= MAX_SERVED_ROWS:
            self._served.clear()
        self._served[key] = (row, now)
        return row

    async def check_sent(self, tenant_id: str, artifact_id: str, device_id: str) -> None:
        """404 unless the artifact was sent to the device (a deployment named it): a device
        reaches only what is meant for it (an APT channel checks its own audience)."""
        key = (tenant_id, artifact_id)
        cached = self._sent.get(key)
        age = time.monotonic() - cached[1] if cached else SERVED_ROW_TTL_S
        # A device missing from a set read a moment ago is refused without reading again (a
        # device probing ids costs no database read); one just sent it waits at most a second.
        if cached is None or age >= SERVED_ROW_TTL_S or (device_id not in cached[0] and age > 1):
            cached = (await self._read_recipients(key), time.monotonic())
        if device_id not in cached[0]:
            raise NotFound(f"no artifact {artifact_id!r} was sent to this device")

    def recipients_changed(self, tenant_id: str, artifact_ids: Sequence[str]) -> None:
        """Forget who was sent these artifacts (a deployment just sent them to more devices)."""
        for artifact_id in artifact_ids:
            self._sent.pop((tenant_id, artifact_id), None)

    async def _read_recipients(self, key: tuple[str, str]) -> frozenset[str]:
        """The artifact's recipients read once for every download that asks at the same time."""
        pending = self._sent_reads.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[frozenset[str]] = asyncio.get_running_loop().create_future()
        self._sent_reads[key] = future
        try:
            async with self.db.read() as conn:
                found: set[str] = set()
                for recipients in self.recipients:
                    found |= await recipients(conn, *key)
            sent = frozenset(found)
            if len(self._sent) >= MAX_SERVED_ROWS:
                self._sent.clear()
            self._sent[key] = (sent, time.monotonic())
            future.set_result(sent)
            return sent
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            del self._sent_reads[key]

    async def stream_signed(self, request: Request, token: str) -> Response:
        """The download a signed URL names (401 when forged or expired)."""
        tenant_id, artifact_id, device_id = self.urls.check(token, time.time())
        async with self.db.read() as conn:
            found = await fetch_one(
                conn,
                sa.select(devices.c.pk).where(
                    devices.c.tenant_id == tenant_id, devices.c.id == device_id
                ),
            )
        if found is None:
            raise NotFound("the device of this signed URL no longer exists")
        return await self.stream(request, tenant_id, artifact_id, device_id)
