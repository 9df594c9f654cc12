"""The in-memory copy of reference tables that the rules engine's lookups read.

A table is loaded whole on its first lookup (one query) and answered from memory after that,
missing keys included; a table that does not exist is remembered as empty. A replace or delete
drops the copy in the process that made it at once, and in every other process when the bus
notification :data:`CHANGED_SUBJECT` arrives. Notifications are at most once, so a copy older
than :data:`RECHECK_S` checks its version with one small query before it answers again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from roost.core import metrics

log = logging.getLogger(__name__)

#: Bus subject of "this table changed" (payload: ``{"tenant_id", "table", "version"}``).
CHANGED_SUBJECT = "roost.reference.changed"
# How stale a copy may be when no notification came: lost (a NATS restart, a full queue) or never
# sent here (`roost reference upload` beside a server on the in-process bus). One primary-key
# query per table per period: cheap, and soon enough for an operator who just uploaded.
RECHECK_S = 10.0
# Rows held across every cached table; the least recently used tables go first past it (a few
# hundred MB at most; one table is at most parse.MAX_ROWS rows).
MAX_CACHED_ROWS = 500_000

LOOKUPS = metrics.tally("roost_reference_lookups", "Reference table lookups (rules engine)")
CACHE_HITS = metrics.tally(
    "roost_reference_cache_hits", "Reference table lookups answered from memory"
)

TableKey = tuple[str, str]  # (tenant id, table name)
#: Loads a table's current version and rows: ``(version, {key: row})``, (0, {}) when there is none.
Loader = Callable[[str, str], Awaitable[tuple[int, dict[str, dict[str, Any]]]]]
#: The current version of a table (0 when there is none).
VersionReader = Callable[[str, str], Awaitable[int]]


@dataclass(slots=True)
class _Copy:
    version: int
    rows: dict[str, dict[str, Any]]
    checked_at: float  # time.monotonic() of the load or the last version check


class TableCache:
    """Whole tables in memory, dropped on change (see the module docstring)."""

    def __init__(self, load: Loader, current_version: VersionReader) -> None:
        self._load = load
        self._current_version = current_version
        self._copies: OrderedDict[TableKey, _Copy] = OrderedDict()
        self._rows = 0
        self._loading: dict[TableKey, asyncio.Task[_Copy]] = {}
        # Bumped by every drop: a load that began before a drop does not keep what it read.
        self._drops = 0

    async def rows(
        self, tenant_id: str, table: str, *, lookup: bool = False
    ) -> tuple[int, dict[str, dict[str, Any]]]:
        """The table's current version and rows by key ((0, {}) for a table that is not).

        ``lookup``: count the call in :data:`LOOKUPS` (and :data:`CACHE_HITS` when no load was
        needed, a version recheck aside).
        """
        if lookup:
            LOOKUPS.inc(())
        key = (tenant_id, table)
        copy = self._copies.get(key)
        if copy is not None and time.monotonic() - copy.checked_at > RECHECK_S:
            if await self._current_version(tenant_id, table) == copy.version:
                copy.checked_at = time.monotonic()
            else:
                self.drop(tenant_id, table)
                copy = None
        if copy is not None:
            self._copies.move_to_end(key)
            if lookup:
                CACHE_HITS.inc(())
            return copy.version, copy.rows
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._fill(key), name="roost-reference-load")
            self._loading[key] = task
            task.add_done_callback(lambda done: self._loaded(key, done))
        copy = await asyncio.shield(task)
        return copy.version, copy.rows

    def _loaded(self, key: TableKey, task: asyncio.Task[_Copy]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled() and task.exception() is not None:
            # Its waiters got the error; noted here too in case every waiter was cancelled.
            log.debug("loading reference table %s failed: %s", key, task.exception())

    async def _fill(self, key: TableKey) -> _Copy:
        drops = self._drops
        version, rows = await self._load(*key)
        copy = _Copy(version, rows, time.monotonic())
        if drops == self._drops:  # nothing changed meanwhile: keep it
            self._put(key, copy)
        return copy

    def _put(self, key: TableKey, copy: _Copy) -> None:
        self._forget(key)
        self._copies[key] = copy
        self._rows += len(copy.rows)
        while self._rows > MAX_CACHED_ROWS and len(self._copies) > 1:
            oldest = next(iter(self._copies))
            self._forget(oldest)

    def _forget(self, key: TableKey) -> None:
        old = self._copies.pop(key, None)
        if old is not None:
            self._rows -= len(old.rows)

    def drop(self, tenant_id: str, table: str) -> None:
        """Forget a table's copy (it changed); the next lookup loads it again."""
        self._drops += 1
        self._forget((tenant_id, table))
        # A load begun before the change must not serve lookups made after it.
        self._loading.pop((tenant_id, table), None)

    def clear(self) -> None:
        """Forget every copy."""
        self._drops += 1
        self._loading.clear()
        self._copies.clear()
        self._rows = 0

    @property
    def cached_tables(self) -> int:
        """How many tables are held now."""
        return len(self._copies)
