"""The telemetry pipeline of one process: store, writer, ingest, queries, live hub, upkeep.

Two modes, one code path for the doors:

* **embedded** (``memory://`` bus): the writer commits each batch to the time-series store; the
  commit is the acknowledgement point.
* **scale** (``nats://`` bus): the writer publishes each batch to the JetStream stream
  ``roost.ingest.batches`` and the JetStream acknowledgement is the acknowledgement point; the
  worker side of every process consumes the stream and commits to PostgreSQL, acknowledging the
  stream only after the commit. A batch redelivered after a crash is stored again harmlessly:
  points are identified by (series, ts) and events by (device, ts, body).

Either way each commit is announced on the bus for live streams, and registry changes (a sensor
created, retyped or deleted; a device deleted; a model's auto-create switched) reach every
process's ingest cache through the bus.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence

import orjson

from roost.bus.base import Bus, StreamMessage, Subscription
from roost.config import Settings
from roost.errors import ConfigError
from roost.inventory.devices.registry import RegistryChange
from roost.inventory.devices.service import DeviceService
from roost.inventory.service import InventoryService
from roost.store.database import Database
from roost.telemetry.engine import open_timeseries
from roost.telemetry.engine.base import TimeSeriesStore
from roost.telemetry.engine.batch import DecodedBatch, concat, decode, split
from roost.telemetry.heap import HeapKeeper
from roost.telemetry.ingest.service import IngestService
from roost.telemetry.ingest.writer import IngestWriter
from roost.telemetry.live.service import COMMITTED_SUBJECT, LiveHub, announcement
from roost.telemetry.maintenance import TelemetryMaintenance
from roost.telemetry.queries.service import SeriesDirectory, TelemetryService
from roost.telemetry.streams.service import StreamService

log = logging.getLogger(__name__)

INGEST_SUBJECT = "roost.ingest.batches"
WRITERS_DURABLE = "roost-writers"
REGISTRY_SUBJECT = "roost.registry.changed"
# Stream messages (each a batch) merged into one store commit in scale mode.
STREAM_BATCH = 64
# Bytes kept free below the bus's maximum payload for what wraps a batch (the commit offset).
_ANNOUNCEMENT_HEADROOM = 4096


class TelemetryPipeline:
    """Everything between a device door and the time-series store, for one process."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        bus: Bus,
        devices: DeviceService,
        inventory: InventoryService,
        *,
        store: TimeSeriesStore | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        # Names this process's registry notices, which it applies before publishing them.
        self._origin = secrets.token_hex(8)
        self.scale = settings.bus_url.split(":", 1)[0].lower() in {"nats", "tls"}
        self.store = store or open_timeseries(
            settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
        self.directory = SeriesDirectory(db)
        if settings.ingest_max_unacked_points < 1:
            raise ConfigError("ROOST_INGEST_MAX_UNACKED_POINTS must be at least 1")
        self.writer = IngestWriter(
            self._publish_batch if self.scale else self._commit_batch,
            max_buffered_items=settings.ingest_max_unacked_points,
        )
        self.ingest = IngestService(db, devices, self.store, self.writer)
        self.telemetry = TelemetryService(db, self.store, devices, self.directory)
        self.streams = StreamService(db, self.store, self.directory, devices.clock)
        self.live = LiveHub(bus, self.directory)
        self.maintenance = TelemetryMaintenance(
            self.store,
            db,
            log_retention_s=settings.stream_retention_s,
            retention_every_s=settings.retention_check_s,
        )
        # Gives a burst's freed memory back once ingest and compaction are quiet again.
        self.heap = HeapKeeper(
            lambda: self.writer.committed_items,
            lambda: self.maintenance.compacted_points,
            self.store.release_memory,
        )
        devices.on_change.append(self.registry_changed)
        inventory.on_update.append(self._record_updated)
        self._subscriptions: list[Subscription] = []
        self._opened = False
        self._serving = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store and follow registry changes (enough for CLI commands)."""
        await self.store.open()
        self._opened = True
        self._subscriptions.append(
            await self.bus.subscribe(REGISTRY_SUBJECT, self._on_registry_notice)
        )

    async def serve(self) -> None:
        """Start the writer, the live hub, the stream consumer (scale mode) and the upkeep."""
        self.writer.start()
        await self.live.start()
        if self.scale:
            self._subscriptions.append(
                await self.bus.stream_consume(
                    INGEST_SUBJECT, WRITERS_DURABLE, self._consume, batch=STREAM_BATCH
                )
            )
        self.maintenance.start()
        self.heap.start()
        self._serving = True

    async def close(self) -> None:
        """Commit what is pending, then stop everything."""
        if self._serving:
            await self.writer.close()
            await self.heap.close()
            await self.maintenance.close()
            await self.live.close()
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions = []
        if self._opened:
            await self.store.close()

    # -- commits -----------------------------------------------------------------------------

    async def _commit_batch(self, batch: DecodedBatch) -> int:
        """Embedded mode: the store commit is the acknowledgement point."""
        committed = await self.store.append(batch)
        try:
            # Announced in parts the bus takes (a group commit can hold megabytes).
            for position, part in split(batch, self.bus.max_payload - _ANNOUNCEMENT_HEADROOM):
                await self.bus.publish(
                    COMMITTED_SUBJECT, announcement(committed.first_offset + position, part)
                )
        except Exception:
            # The data is committed; only live readers miss it (they can query it).
            log.exception("announcing a commit of %d items failed", len(batch))
        return committed.first_offset

    async def _publish_batch(self, batch: DecodedBatch) -> int:
        """Scale mode: JetStream has the batch durably; a writer commits it to the store.

        A group commit larger than the bus's maximum payload goes as several messages, published
        together; the devices are acknowledged once JetStream has every one of them.
        """
        parts = split(batch, self.bus.max_payload - _ANNOUNCEMENT_HEADROOM)
        if len(parts) == 1:
            return await self.bus.stream_publish(INGEST_SUBJECT, batch.encode())
        sequences = await asyncio.gather(
            *(self.bus.stream_publish(INGEST_SUBJECT, part.encode()) for _, part in parts)
        )
        return min(sequences)

    async def _consume(self, messages: Sequence[StreamMessage]) -> None:
        batch = concat([decode(message.data) for message in messages])
        await self._commit_batch(batch)

    # -- registry changes --------------------------------------------------------------------

    async def registry_changed(self, change: RegistryChange) -> None:
        """A committed change here: drop stored series, refresh caches here and elsewhere."""
        if change.deleted_series:
            await self.store.delete_series(list(change.deleted_series))
        self._apply(change.device_pks, change.all_devices, bool(change.deleted_series))
        notice = {
            "origin": self._origin,
            "devices": list(change.device_pks),
            "all": change.all_devices,
            "forget": bool(change.deleted_series),
        }
        await self.bus.publish(REGISTRY_SUBJECT, orjson.dumps(notice))

    async def _record_updated(self, kind: str, _record_id: str) -> None:
        if kind == "device_model":  # auto_create_sensors may have changed for its devices
            await self.registry_changed(RegistryChange(all_devices=True))

    async def _on_registry_notice(self, _subject: str, data: bytes) -> None:
        try:
            notice = orjson.loads(data)
            if notice.get("origin") == self._origin:
                return  # applied here already, when it was made
            self._apply(
                notice.get("devices") or (), bool(notice.get("all")), bool(notice.get("forget"))
            )
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            log.warning("ignored a malformed registry notice")

    def _apply(self, device_pks: Sequence[int], everything: bool, forget: bool) -> None:
        self.ingest.invalidate(None if everything else device_pks)
        if forget:
            self.directory.forget()
