"""The devices that credentials name, resolved to their pk and generation, read once and cached.

Every kind of device credential (a token, a SAS token signed with a device key, a client
certificate) names its device by ``(tenant, device id)``. The :class:`DeviceDirectory` answers
that device's pk and *generation* (a device created again under the same id is another
generation) without a database round trip once the device has been seen: the first sight reads
it (devices connecting at once are read together, see :class:`~roost.core.batching.BatchLoader`),
and concurrent first sights share one read. Devices known to be gone are remembered too, so a
deleted device that keeps reconnecting with an old credential costs no read each time.

The :class:`~roost.credentials.authenticator.DeviceAuthenticator` owns one and drops entries
when devices are deleted or re-created.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa

from roost.core.batching import BatchLoader
from roost.credentials.tokens.signing import device_generation
from roost.inventory.tables import devices
from roost.store.database import Database

# Devices resolved to their pk: every device a large gateway serves (~150 B each, ~40 MB full).
# A device evicted from it costs one indexed read when next seen.
DEVICE_CACHE_SIZE = 262_144
# (device, generation) pairs known to be gone: a deleted device that keeps reconnecting with its
# old token is refused without asking the database each time.
GONE_CACHE_SIZE = 4096

DeviceKey = tuple[str, str]  # (tenant id, device id)
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


def put_bounded(cache: OrderedDict[_K, _V], key: _K, value: _V, limit: int) -> None:
    """Insert into a FIFO-bounded map: the oldest entry leaves when it is full.

    An OrderedDict, because evicting a plain dict's first key (``next(iter(d))``) scans the
    slots its earlier deletions left: measured 8.6 µs a call at 16k entries, against 0.5 µs.
    """
    if key not in cache and len(cache) >= limit:
        cache.popitem(last=False)
    cache[key] = value


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """A device as the authenticator knows it."""

    pk: int
    generation: int


class DeviceDirectory:
    """``(tenant, device id)`` → :class:`DeviceEntry`, read once per device and cached."""

    def __init__(self, db: Database) -> None:
        self._db = db
        #: The cached entries; the authenticator's hot path reads this map directly.
        self.entries: OrderedDict[DeviceKey, DeviceEntry] = OrderedDict()
        self._loader: BatchLoader[DeviceKey, DeviceEntry] = BatchLoader(self._read_many)
        self._gone: OrderedDict[tuple[DeviceKey, int], None] = OrderedDict()
        self._loading: dict[DeviceKey, asyncio.Task[DeviceEntry | None]] = {}
        # Bumped whenever an entry is dropped: a lookup that started before must not put back
        # what the drop removed.
        self._epoch = 0

    def is_gone(self, key: DeviceKey, generation: int) -> bool:
        """True when this generation of the device is known to be gone."""
        return (key, generation) in self._gone

    def mark_gone(self, key: DeviceKey, generation: int) -> None:
        """Remember that this generation of the device is gone (it never comes back)."""
        put_bounded(self._gone, (key, generation), None, GONE_CACHE_SIZE)

    def forget(self, key: DeviceKey) -> None:
        """Drop a device's entry; its next credential is checked against the database."""
        self.entries.pop(key, None)
        self._epoch += 1

    async def load(self, key: DeviceKey) -> DeviceEntry | None:
        """Read a device once for every concurrent caller, caching what was read."""
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self.read(key))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        # A caller that is cancelled leaves the read to finish for the others.
        return await asyncio.shield(task)

    def _loaded(self, key: DeviceKey, task: asyncio.Task[DeviceEntry | None]) -> None:
        self._loading.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited is not logged twice

    async def read(self, key: DeviceKey) -> DeviceEntry | None:
        """Read a device now (batched with concurrent reads), caching it unless it was dropped
        meanwhile."""
        epoch = self._epoch
        device = await self._loader.load(key)
        if device is not None and epoch == self._epoch:
            put_bounded(self.entries, key, device, DEVICE_CACHE_SIZE)
        return device

    async def _read_many(self, keys: Sequence[DeviceKey]) -> dict[DeviceKey, DeviceEntry]:
        """Many devices' rows in one read (devices connecting at once, see BatchLoader)."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                sa.select(
                    devices.c.tenant_id, devices.c.id, devices.c.pk, devices.c.created_at
                ).where(sa.tuple_(devices.c.tenant_id, devices.c.id).in_(list(keys)))
            )
            return {
                (tenant_id, device_id): DeviceEntry(pk, device_generation(created_at))
                for tenant_id, device_id, pk, created_at in rows
            }
