"""APT repositories: channels of Debian-package artifacts, served signed to the devices.

A tenant's repository lives at ``/api/v1/apt/<tenant>``; each channel is a suite
(``dists/<channel>``) with one component, ``main``. Operators make channels for an audience
(``all`` devices, the devices of a ``site:<id>`` or the members of a ``group:<id>``) and publish
artifacts of type ``deb`` into them. A device sees the channels of its audience only: any other
channel, and any package not published to a channel it sees, answers 404, as another tenant's
repository does.

The indices (``Packages``, ``Release``, ``InRelease``, ``Release.gpg``) of a channel are made on
first request and kept in memory until a publish, an unpublish or a channel's deletion drops them
(here and, through the bus, in the other processes), so a fleet updating at once costs one gpg run.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.bus.base import Subscription
from roost.core.access import Actor, Role
from roost.core.device_identity import DeviceIdentity
from roost.errors import Conflict, InvalidInput, NotFound
from roost.inventory.devices.query import group_condition
from roost.inventory.tables import devices, groups, sites
from roost.ota.apt import repo
from roost.ota.apt.gpg import SigningKey
from roost.ota.apt.tables import ota_apt_channel_packages, ota_apt_channels
from roost.ota.artifacts.tables import ota_artifacts
from roost.store.queries import Page, PageRequest, as_dicts, fetch_one

if TYPE_CHECKING:
    from roost.core.context import ServiceDeps

log = logging.getLogger(__name__)

#: Bus subject telling every process that a channel's indices changed.
CHANGED_SUBJECT = "roost.ota.apt.changed"
#: Kept indices are rebuilt after this long even without a change notice: a notice lost between
#: processes heals within five minutes, and a rebuild costs one query and two gpg runs.
CACHE_TTL_S = 300.0
#: What the Release files name as their origin and label.
ORIGIN = "Roost"
MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 2000
SORTS = ("name", "created_at", "updated_at")
#: A channel's name is its suite in URLs (dists/<name>) and in apt's sources lines.
_CHANNEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
CHANNEL_RULE = "1-64 characters: lower-case letters, digits and . _ - (not starting with a symbol)"
#: What a device may fetch under dists/<channel>/ (besides its Packages files).
_TOP_FILES = {"InRelease": "text/plain", "Release": "text/plain", "Release.gpg": "text/plain"}
_INDEX_FILE = re.compile(r"^main/binary-[a-z0-9-]+/Packages(\.gz)?$")

InUseCheck = Callable[[AsyncConnection, str, str], Awaitable[str | None]]


class ArtifactRegistry(Protocol):
    """What this room uses of the artifacts room's service: the delete guard."""

    @property
    def in_use_checks(self) -> list[InUseCheck]: ...


@dataclass(frozen=True, slots=True)
class Audience:
    """Who sees a channel: ``all``, a site's devices or a group's members."""

    kind: str  # all | site | group
    target: str = ""

    @classmethod
    def parse(cls, raw: str) -> Audience:
        """``all``, ``site:<id>`` or ``group:<id>``."""
        if raw == "all":
            return cls("all")
        kind, sep, target = raw.partition(":")
        if sep and kind in {"site", "group"} and target:
            return cls(kind, target)
        raise InvalidInput(f"audience {raw[:80]!r} must be 'all', 'site:<site id>' or 'group:<id>'")

    def __str__(self) -> str:
        return self.kind if self.kind == "all" else f"{self.kind}:{self.target}"


@dataclass(slots=True)
class _Indices:
    files: dict[str, bytes]
    made_at: float


def check_channel_name(name: str) -> None:
    """Refuse a channel name apt and URLs would not carry."""
    if not _CHANNEL_NAME.match(name):
        raise InvalidInput(f"channel name {name[:80]!r} is not valid: {CHANNEL_RULE}")


def _channel_out(row: dict[str, Any], packages: int) -> dict[str, Any]:
    return {
        "name": row["name"],
        "audience": row["audience"],
        "description": row["description"],
        "packages": packages,
        "repository": f"/api/v1/apt/{row['tenant_id']}",
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _package_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "artifact_id": row["artifact_id"],
        "package": row["package"],
        "version": row["version"],
        "architecture": row["architecture"],
        "filename": row.get("filename"),
        "size": row.get("size"),
        "sha256": row.get("sha256"),
        "published_by": row["published_by"],
        "published_at": row["published_at"],
    }


class AptService:
    """APT repositories of every tenant: channels, publishing, and the files devices fetch."""

    def __init__(self, deps: ServiceDeps, *, artifacts: ArtifactRegistry | None = None) -> None:
        self.deps = deps
        self.db = deps.db
        self.clock: Callable[[], datetime] = deps.clock
        self.key = SigningKey(
            deps.db, deps.settings.data_dir / "apt-gnupg", deps.secret_key, deps.clock
        )
        self._indices: dict[tuple[str, str], _Indices] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        # Bumped by every drop: indices built from a read older than a drop are not kept.
        self._generation = 0
        self._subscription: Subscription | None = None
        if artifacts is not None:
            artifacts.in_use_checks.append(self.artifact_in_use)

    async def start(self) -> None:
        """Follow changes made by other processes."""
        self._subscription = await self.deps.bus.subscribe(CHANGED_SUBJECT, self._on_changed)

    async def close(self) -> None:
        """Stop following changes, forget the indices, stop the gpg agent."""
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None
        self._indices.clear()
        await self.key.close()

    # -- caching ---------------------------------------------------------------------------------

    def _drop(self, tenant_id: str, channel: str) -> None:
        self._generation += 1
        self._indices.pop((tenant_id, channel), None)

    async def _on_changed(self, subject: str, data: bytes) -> None:
        try:
            notice = orjson.loads(data)
            self._drop(str(notice["tenant_id"]), str(notice["channel"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("malformed APT change notice on %s; dropping every index", subject)
            self._generation += 1
            self._indices.clear()

    async def _changed(self, tenant_id: str, channel: str) -> None:
        """After a commit: drop the channel's indices here, and tell the other processes."""
        self._drop(tenant_id, channel)
        notice = orjson.dumps({"tenant_id": tenant_id, "channel": channel})
        try:
            await self.deps.bus.publish(CHANGED_SUBJECT, notice)
        except Exception as exc:  # committed; the other processes rebuild within CACHE_TTL_S
            log.warning("could not announce the change of APT channel %s: %s", channel, exc)

    # -- channels --------------------------------------------------------------------------------

    async def _channel(self, conn: AsyncConnection, tenant_id: str, name: str) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            sa.select(ota_apt_channels).where(
                ota_apt_channels.c.tenant_id == tenant_id, ota_apt_channels.c.name == name
            ),
        )
        if row is None:
            raise NotFound(f"no APT channel {name!r}")
        return row

    async def _count(self, conn: AsyncConnection, tenant_id: str, name: str) -> int:
        total = await conn.execute(
            sa.select(sa.func.count()).where(
                ota_apt_channel_packages.c.tenant_id == tenant_id,
                ota_apt_channel_packages.c.channel == name,
            )
        )
        return int(total.scalar_one())

    async def _check_audience(
        self, conn: AsyncConnection, tenant_id: str, audience: Audience
    ) -> None:
        if audience.kind == "all":
            return
        table = sites if audience.kind == "site" else groups
        found = await conn.execute(
            sa.select(table.c.id).where(
                table.c.tenant_id == tenant_id, table.c.id == audience.target
            )
        )
        if found.first() is None:
            raise InvalidInput(f"audience {audience}: no {audience.kind} {audience.target!r}")

    async def create_channel(
        self, actor: Actor, name: str, audience: str, description: str = ""
    ) -> dict[str, Any]:
        """Make a channel (409 when the name is taken)."""
        actor.require(Role.OPERATOR)
        check_channel_name(name)
        parsed = Audience.parse(audience)
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidInput(f"description is longer than {MAX_DESCRIPTION_CHARS} characters")
        now = self.clock()
        row = {
            "tenant_id": actor.tenant_id,
            "name": name,
            "audience": str(parsed),
            "description": description,
            "created_by": actor.name,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.write() as conn:
            await self._check_audience(conn, actor.tenant_id, parsed)
            exists = await conn.execute(
                sa.select(ota_apt_channels.c.name).where(
                    ota_apt_channels.c.tenant_id == actor.tenant_id,
                    ota_apt_channels.c.name == name,
                )
            )
            if exists.first() is not None:
                raise Conflict(f"APT channel {name!r} exists")
            await conn.execute(ota_apt_channels.insert().values(**row))
            out = _channel_out(row, 0)
            await audit.record(conn, actor, "create", "apt_channel", name, after=out)
        await self._changed(actor.tenant_id, name)
        return out

    async def list_channels(self, actor: Actor, page: PageRequest) -> Page[dict[str, Any]]:
        """The tenant's channels, with how many packages each holds."""
        actor.require(Role.VIEWER)
        where = ota_apt_channels.c.tenant_id == actor.tenant_id
        counts = (
            sa.select(ota_apt_channel_packages.c.channel, sa.func.count().label("packages"))
            .where(ota_apt_channel_packages.c.tenant_id == actor.tenant_id)
            .group_by(ota_apt_channel_packages.c.channel)
            .subquery()
        )
        async with self.db.read() as conn:
            total = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(ota_apt_channels).where(where)
                )
            ).scalar_one()
            spec = page.sort or "name"
            name = spec.removeprefix("-")
            if name not in SORTS:
                raise InvalidInput(f"cannot sort by {name!r}; sortable fields: {', '.join(SORTS)}")
            column = ota_apt_channels.c[name]
            result = await conn.execute(
                sa.select(ota_apt_channels, sa.func.coalesce(counts.c.packages, 0).label("count"))
                .outerjoin(counts, counts.c.channel == ota_apt_channels.c.name)
                .where(where)
                .order_by(
                    column.desc() if spec.startswith("-") else column.asc(), ota_apt_channels.c.name
                )
                .limit(page.limit)
                .offset(page.offset)
            )
            items = [_channel_out(row, int(row["count"])) for row in as_dicts(result)]
        return Page(items, int(total), page.limit, page.offset)

    async def get_channel(self, actor: Actor, name: str) -> dict[str, Any]:
        """A channel and the packages published into it."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            row = await self._channel(conn, actor.tenant_id, name)
            packages = await self._published(conn, actor.tenant_id, name)
        return {**_channel_out(row, len(packages)), "items": [_package_out(p) for p in packages]}

    async def delete_channel(self, actor: Actor, name: str) -> None:
        """Delete a channel (its packages stay artifacts; only the publication goes)."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            row = await self._channel(conn, actor.tenant_id, name)
            count = await self._count(conn, actor.tenant_id, name)
            await conn.execute(
                ota_apt_channel_packages.delete().where(
                    ota_apt_channel_packages.c.tenant_id == actor.tenant_id,
                    ota_apt_channel_packages.c.channel == name,
                )
            )
            await conn.execute(
                ota_apt_channels.delete().where(
                    ota_apt_channels.c.tenant_id == actor.tenant_id, ota_apt_channels.c.name == name
                )
            )
            await audit.record(
                conn, actor, "delete", "apt_channel", name, before=_channel_out(row, count)
            )
        await self._changed(actor.tenant_id, name)

    # -- publishing ------------------------------------------------------------------------------

    async def _published(
        self, conn: AsyncConnection, tenant_id: str, channel: str
    ) -> list[dict[str, Any]]:
        """The channel's publications joined with their artifacts' rows."""
        pub, art = ota_apt_channel_packages, ota_artifacts
        result = await conn.execute(
            sa.select(
                pub,
                art.c.filename,
                art.c.size,
                art.c.md5,
                art.c.sha1,
                art.c.sha256,
                art.c.metadata,
            )
            .join(art, sa.and_(art.c.tenant_id == pub.c.tenant_id, art.c.id == pub.c.artifact_id))
            .where(pub.c.tenant_id == tenant_id, pub.c.channel == channel)
            .order_by(pub.c.package, pub.c.version, pub.c.architecture)
        )
        return as_dicts(result)

    async def publish(self, actor: Actor, channel: str, artifact_id: str) -> dict[str, Any]:
        """Publish a ``deb`` artifact into a channel; devices see it at their next update."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        async with self.db.write() as conn:
            await self._channel(conn, actor.tenant_id, channel)
            artifact = await fetch_one(
                conn,
                sa.select(ota_artifacts).where(
                    ota_artifacts.c.tenant_id == actor.tenant_id, ota_artifacts.c.id == artifact_id
                ),
            )
            if artifact is None:
                raise NotFound(f"no artifact {artifact_id!r}")
            if artifact["type"] != "deb":
                raise InvalidInput(
                    f"artifact {artifact_id!r} is of type {artifact['type']!r}; "
                    "only Debian packages (type deb) go into an APT channel"
                )
            package = repo.deb_package(artifact)
            problem = repo.control_problem(package.control)
            if problem is not None:
                raise InvalidInput(f"artifact {artifact_id!r} cannot be published: {problem}")
            clash = await fetch_one(
                conn,
                sa.select(ota_apt_channel_packages.c.artifact_id).where(
                    ota_apt_channel_packages.c.tenant_id == actor.tenant_id,
                    ota_apt_channel_packages.c.channel == channel,
                    ota_apt_channel_packages.c.package == package.package,
                    ota_apt_channel_packages.c.version == package.version,
                    ota_apt_channel_packages.c.architecture == package.architecture,
                ),
            )
            if clash is not None:
                which = (
                    "it is already published there"
                    if clash["artifact_id"] == artifact_id
                    else f"artifact {clash['artifact_id']!r} is"
                )
                raise Conflict(
                    f"channel {channel!r} already holds {package.package} {package.version} "
                    f"({package.architecture}): {which}"
                )
            row = {
                "tenant_id": actor.tenant_id,
                "channel": channel,
                "artifact_id": artifact_id,
                "package": package.package,
                "version": package.version,
                "architecture": package.architecture,
                "published_by": actor.name,
                "published_at": now,
            }
            await conn.execute(ota_apt_channel_packages.insert().values(**row))
            await conn.execute(
                ota_apt_channels.update()
                .where(
                    ota_apt_channels.c.tenant_id == actor.tenant_id,
                    ota_apt_channels.c.name == channel,
                )
                .values(updated_at=now)
            )
            out = _package_out({**row, **{k: artifact[k] for k in ("filename", "size", "sha256")}})
            await audit.record(conn, actor, "publish", "apt_channel", channel, after=out)
        await self._changed(actor.tenant_id, channel)
        return out

    async def unpublish(self, actor: Actor, channel: str, artifact_id: str) -> None:
        """Take an artifact out of a channel (the artifact itself stays)."""
        actor.require(Role.OPERATOR)
        where = (
            ota_apt_channel_packages.c.tenant_id == actor.tenant_id,
            ota_apt_channel_packages.c.channel == channel,
            ota_apt_channel_packages.c.artifact_id == artifact_id,
        )
        async with self.db.write() as conn:
            await self._channel(conn, actor.tenant_id, channel)
            before = await fetch_one(conn, sa.select(ota_apt_channel_packages).where(*where))
            if before is None:
                raise NotFound(f"artifact {artifact_id!r} is not published in channel {channel!r}")
            await conn.execute(ota_apt_channel_packages.delete().where(*where))
            await conn.execute(
                ota_apt_channels.update()
                .where(
                    ota_apt_channels.c.tenant_id == actor.tenant_id,
                    ota_apt_channels.c.name == channel,
                )
                .values(updated_at=self.clock())
            )
            await audit.record(
                conn, actor, "unpublish", "apt_channel", channel, before=_package_out(before)
            )
        await self._changed(actor.tenant_id, channel)

    async def artifact_in_use(
        self, conn: AsyncConnection, tenant_id: str, artifact_id: str
    ) -> str | None:
        """Why an artifact cannot be deleted: the channels it is published in, or None."""
        result = await conn.execute(
            sa.select(ota_apt_channel_packages.c.channel)
            .where(
                ota_apt_channel_packages.c.tenant_id == tenant_id,
                ota_apt_channel_packages.c.artifact_id == artifact_id,
            )
            .order_by(ota_apt_channel_packages.c.channel)
        )
        channels = list(result.scalars())
        if not channels:
            return None
        return f"published in APT channel(s) {', '.join(channels)}"

    # -- the device side -------------------------------------------------------------------------

    async def _sees(
        self, conn: AsyncConnection, device: DeviceIdentity, channels: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The channels among ``channels`` whose audience holds the device."""
        site = (
            await conn.execute(sa.select(devices.c.site_id).where(devices.c.pk == device.device_pk))
        ).scalar_one_or_none()
        seen = []
        for channel in channels:
            audience = Audience.parse(channel["audience"])
            if audience.kind == "all" or (audience.kind == "site" and audience.target == site):
                seen.append(channel)
            elif audience.kind == "group" and await self._member(conn, device, audience.target):
                seen.append(channel)
        return seen

    async def _member(self, conn: AsyncConnection, device: DeviceIdentity, group_id: str) -> bool:
        group = await fetch_one(
            conn,
            sa.select(groups).where(
                groups.c.tenant_id == device.tenant_id, groups.c.id == group_id
            ),
        )
        if group is None:
            return False
        found = await conn.execute(
            sa.select(devices.c.pk).where(
                devices.c.pk == device.device_pk, group_condition(device.tenant_id, group)
            )
        )
        return found.first() is not None

    async def channel_file(
        self, device: DeviceIdentity, tenant_id: str, channel: str, path: str
    ) -> tuple[bytes, str]:
        """A file under dists/<channel>/ as the device may see it: its bytes and media type."""
        if tenant_id != device.tenant_id:
            raise NotFound(f"no APT repository {tenant_id!r}")
        if path not in _TOP_FILES and not _INDEX_FILE.match(path):
            raise NotFound(f"no file {path!r} in channel {channel!r}")
        async with self.db.read() as conn:
            row = await fetch_one(
                conn,
                sa.select(ota_apt_channels).where(
                    ota_apt_channels.c.tenant_id == tenant_id, ota_apt_channels.c.name == channel
                ),
            )
            if row is None or not await self._sees(conn, device, [row]):
                raise NotFound(f"no APT channel {channel!r}")
        files = await self._channel_indices(row)
        if path not in files:
            raise NotFound(f"no file {path!r} in channel {channel!r}")
        media = _TOP_FILES.get(path, "application/gzip" if path.endswith(".gz") else "text/plain")
        return files[path], media

    async def check_package(
        self, device: DeviceIdentity, tenant_id: str, artifact_id: str, filename: str
    ) -> None:
        """Refuse (404) a pool file that is not in a channel the device sees."""
        if tenant_id != device.tenant_id:
            raise NotFound(f"no APT repository {tenant_id!r}")
        pub, art, chan = ota_apt_channel_packages, ota_artifacts, ota_apt_channels
        async with self.db.read() as conn:
            result = await conn.execute(
                sa.select(chan)
                .join(
                    pub, sa.and_(pub.c.tenant_id == chan.c.tenant_id, pub.c.channel == chan.c.name)
                )
                .join(
                    art, sa.and_(art.c.tenant_id == pub.c.tenant_id, art.c.id == pub.c.artifact_id)
                )
                .where(
                    pub.c.tenant_id == tenant_id,
                    pub.c.artifact_id == artifact_id,
                    art.c.filename == filename,
                )
            )
            channels = as_dicts(result)
            if not channels or not await self._sees(conn, device, channels):
                raise NotFound(f"no package pool/{artifact_id}/{filename} for this device")

    async def _channel_indices(self, channel: dict[str, Any]) -> dict[str, bytes]:
        """Every file of dists/<channel>/, from the cache or made now (one maker at a time)."""
        key = (str(channel["tenant_id"]), str(channel["name"]))
        kept = self._indices.get(key)
        if kept is not None and time.monotonic() - kept.made_at < CACHE_TTL_S:
            return kept.files
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            kept = self._indices.get(key)
            if kept is not None and time.monotonic() - kept.made_at < CACHE_TTL_S:
                return kept.files
            generation = self._generation
            async with self.db.read() as conn:
                published = await self._published(conn, *key)
            packages = [repo.deb_package({**p, "id": p["artifact_id"]}) for p in published]
            files, release = repo.channel_files(
                key[1],
                packages,
                self.clock(),
                origin=ORIGIN,
                description=str(channel.get("description") or ""),
            )
            files["Release"] = release
            files["InRelease"] = await self.key.clearsign(release)
            files["Release.gpg"] = await self.key.detach_sign(release)
            if generation == self._generation:
                self._indices[key] = _Indices(files, time.monotonic())
            return files

    async def public_key(self) -> str:
        """The armoured public key of the repositories' signatures."""
        return await self.key.public_key()
