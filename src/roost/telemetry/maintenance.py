"""Background work on stored telemetry: compaction, log trimming, retention.

Compaction folds the ingest log into per-series blocks behind the writer (reads stay fast);
trimming drops compacted log rows once consumer groups' retention window has passed; retention
deletes each tenant's data older than its ``retention_days``, in small batches so that ingest
never waits long on the store's write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import sqlalchemy as sa

from roost.core import metrics
from roost.identity.tables import tenants
from roost.store.database import Database
from roost.telemetry.engine.base import TimeSeriesStore

log = logging.getLogger(__name__)

# Compaction runs again at once while it finds work, else sleeps this long: the uncompacted
# tail that queries must scan stays around a second of ingest.
COMPACT_IDLE_S = 1.0
# Log rows one compaction pass takes: bounds how long it holds the store's write lock.
COMPACT_ROWS = 500
TRIM_EVERY_S = 60.0
RETENTION_EVERY_S = 3600.0
_DAY_NS = 86_400_000_000_000


class TelemetryMaintenance:
    """Runs compaction, trimming and retention as background tasks."""

    def __init__(
        self,
        store: TimeSeriesStore,
        db: Database,
        *,
        log_retention_s: float,
        compact_idle_s: float = COMPACT_IDLE_S,
        retention_every_s: float = RETENTION_EVERY_S,
    ) -> None:
        self.store = store
        self.db = db
        self.log_retention_s = log_retention_s
        self.compact_idle_s = compact_idle_s
        self.retention_every_s = retention_every_s
        self._tasks: list[asyncio.Task[None]] = []
        self.compacted_points = 0  # points folded into blocks so far (the heap keeper watches)
        # When the last compaction pass that left nothing behind began: all data older than
        # this is in blocks, so now minus this bounds the age of the oldest uncompacted data.
        self.caught_up_at = time.time()
        metrics.gauge_source(
            "roost_compaction_lag_seconds",
            "Age bound of the oldest telemetry not yet compacted into blocks",
            (),
            self,
            lambda upkeep: {(): max(0.0, time.time() - upkeep.caught_up_at)},
        )

    def start(self) -> None:
        """Start the loops."""
        self._tasks = [
            asyncio.create_task(self._loop(self.compact_once, 0.0), name="ts-compaction"),
            asyncio.create_task(self._loop(self.trim_once, TRIM_EVERY_S), name="ts-trim"),
            asyncio.create_task(
                self._loop(self.retention_once, self.retention_every_s), name="ts-retention"
            ),
        ]

    async def close(self) -> None:
        """Stop the loops (a pass in progress is cancelled; its transaction rolls back)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _loop(self, step: Callable[[], Awaitable[float]], period: float) -> None:
        while True:
            try:
                wait = await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("telemetry maintenance step failed")
                wait = max(period, self.compact_idle_s)
            await asyncio.sleep(wait if wait else period)

    async def compact_once(self) -> float:
        """One compaction pass; answers how long to wait before the next."""
        began = time.time()
        report = await self.store.compact(COMPACT_ROWS)
        self.compacted_points += report.points
        # Again at once while the pass stopped at a limit (rows or points) with work behind it.
        if report.more:
            return 0.0
        self.caught_up_at = began
        return self.compact_idle_s

    async def trim_once(self) -> float:
        """Drop compacted log rows older than the consumer-group retention window."""
        cutoff = time.time_ns() - int(self.log_retention_s * 1e9)
        dropped = await self.store.trim_log(cutoff)
        if dropped:
            log.debug("trimmed %d log rows", dropped)
        return TRIM_EVERY_S

    async def retention_once(self) -> float:
        """Delete every tenant's data older than its retention, in small batches."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(tenants.c.id, tenants.c.retention_days).where(
                        tenants.c.retention_days.is_not(None)
                    )
                )
            ).all()
        now = time.time_ns()
        for tenant_id, days in rows:
            cutoff = now - days * _DAY_NS
            total = 0
            while (dropped := await self.store.drop_before(tenant_id, cutoff)) > 0:
                total += dropped
                await asyncio.sleep(0)  # let ingest in between batches
            if total:
                log.info(
                    "retention: dropped %d rows of tenant %s older than %d days",
                    total,
                    tenant_id,
                    days,
                )
        return self.retention_every_s
