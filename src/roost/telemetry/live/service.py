"""Live streams: committed telemetry and events fanned out to WebSocket readers as they land.

Every commit is announced on the bus (subject ``roost.telemetry.committed``: the first offset, then
the batch blob), so readers connected to any Roost process see every gateway's data. One task per
process decodes each announcement once and hands each subscriber the items it asked for; a reader
too slow to keep up loses the oldest frames (and is told how many), never slows ingest.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from roost.bus.base import Bus, Subscription
from roost.core import metrics
from roost.core.access import GrantScope
from roost.telemetry.engine.batch import DecodedBatch, decode
from roost.telemetry.queries.service import SeriesDirectory, batch_items

log = logging.getLogger(__name__)

COMMITTED_SUBJECT = "roost.telemetry.committed"
_OFFSET = struct.Struct("<q")
# Frames a reader may lag behind before the oldest are dropped (each frame is one commit).
MAX_QUEUED_FRAMES = 1000
# Announcements waiting to be fanned out before the oldest are dropped (the hub fell behind).
MAX_PENDING_COMMITS = 10_000


def announcement(first_offset: int, batch: DecodedBatch) -> bytes:
    """The bus payload announcing a commit."""
    return _OFFSET.pack(first_offset) + batch.encode()


@dataclass(frozen=True, slots=True)
class LiveFilter:
    """What one reader wants: a tenant, optionally some devices, sensors, event types, kinds."""

    tenant_id: str
    devices: frozenset[str] = frozenset()
    sensors: frozenset[str] = frozenset()
    event_types: frozenset[str] = frozenset()
    telemetry: bool = True
    events: bool = True
    # A consumer's resolved grants (None: no limit beyond the tenant).
    scope: GrantScope | None = None

    @classmethod
    def from_query(cls, tenant_id: str, query: Any) -> LiveFilter:
        """From a query string (``device``, ``sensor``, ``event`` repeatable; ``kind``)."""
        kind = query.get("kind")
        return cls(
            tenant_id=tenant_id,
            devices=frozenset(query.getlist("device")),
            sensors=frozenset(query.getlist("sensor")),
            event_types=frozenset(query.getlist("event")),
            telemetry=kind in (None, "", "telemetry"),
            events=kind in (None, "", "events"),
        )

    def keep(self, device_id: str, kind: str, name: str | None) -> bool:
        """True when the reader wants this item (and, for a consumer, is granted it)."""
        if self.devices and device_id not in self.devices:
            return False
        if self.scope is not None and not self.scope.allows(device_id, kind, name):
            return False
        if kind == "telemetry":
            return self.telemetry and (not self.sensors or name in self.sensors)
        return self.events and (not self.event_types or name in self.event_types)


@dataclass(eq=False, slots=True)
class LiveSubscription:
    """One reader's queue of frames."""

    hub: LiveHub
    filter: LiveFilter
    frames: deque[dict[str, Any]] = field(default_factory=deque)
    dropped: int = 0
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, items: list[dict[str, Any]]) -> None:
        """Queue a frame, dropping the oldest when the reader is too slow."""
        if len(self.frames) >= MAX_QUEUED_FRAMES:
            self.frames.popleft()
            self.dropped += 1
        self.frames.append({"items": items})
        self._ready.set()

    async def next_frame(self) -> dict[str, Any]:
        """The next frame (a ``{"dropped": n}`` notice first if frames were lost)."""
        while not self.frames:
            self._ready.clear()
            await self._ready.wait()
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            return {"dropped": dropped}
        return self.frames.popleft()

    def close(self) -> None:
        """Stop receiving."""
        self.hub.subscribers.discard(self)


class LiveHub:
    """Fans committed batches out to the live readers of this process."""

    def __init__(self, bus: Bus, directory: SeriesDirectory) -> None:
        self.bus = bus
        self.directory = directory
        self.subscribers: set[LiveSubscription] = set()
        metrics.gauge_source(
            "roost_live_subscribers",
            "Open live telemetry streams of this process",
            (),
            self,
            lambda hub: {(): len(hub.subscribers)},
        )
        self._pending: deque[bytes] = deque(maxlen=MAX_PENDING_COMMITS)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Listen for commit announcements."""
        self._subscription = await self.bus.subscribe(COMMITTED_SUBJECT, self._on_commit)
        self._task = asyncio.create_task(self._run(), name="live-hub")

    async def close(self) -> None:
        """Stop listening."""
        if self._subscription is not None:
            await self._subscription.stop()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def subscribe(self, live_filter: LiveFilter) -> LiveSubscription:
        """A new reader."""
        subscription = LiveSubscription(self, live_filter)
        self.subscribers.add(subscription)
        return subscription

    async def _on_commit(self, _subject: str, data: bytes) -> None:
        if self.subscribers:
            self._pending.append(data)
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                data = self._pending.popleft()
                try:
                    await self._fan_out(data)
                except Exception:
                    log.exception("live fan-out failed")

    async def _fan_out(self, data: bytes) -> None:
        if not self.subscribers:
            return
        (first_offset,) = _OFFSET.unpack_from(data, 0)
        batch = decode(memoryview(data)[_OFFSET.size :])
        await self.directory.resolve(batch.series.tolist(), [e.device_pk for e in batch.events])
        for reader in list(self.subscribers):
            # The reader's filter runs before any item is built: a dashboard watching a few
            # devices costs a lookup per item of the batch, not a formatted item.
            chosen = batch_items(
                batch,
                first_offset,
                self.directory,
                tenant_id=reader.filter.tenant_id,
                keep=reader.filter.keep,
            )
            if chosen:
                reader.offer(chosen)
