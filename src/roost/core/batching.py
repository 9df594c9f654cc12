"""Coalescing concurrent lookups into one query (the "data loader" pattern).

A thousand devices connecting at once each need their registry row. Asked one by one, that is
a thousand read transactions queueing for a handful of pooled connections; gathered, it is a
few ``WHERE key IN (…)`` queries. :class:`BatchLoader` collects the keys asked for during one
turn of the event loop (and while a bulk query runs), then answers every caller from one call.

A key asked for while a bulk query for it is already running gets a query of its own, started
after it was asked: an answer is never older than the question (callers rely on this to take
in a change they were told about).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Keys per bulk query: bounds the size of an IN list (SQLite allows 32,766 variables).
MAX_KEYS = 500


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failed future's exception as seen (its caller may have gone away)."""
    if not future.cancelled():
        future.exception()


class BatchLoader(Generic[K, V]):
    """Answers ``load(key)`` calls from ``bulk(keys) → {key: value}`` calls (missing → None)."""

    def __init__(
        self, bulk: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]], max_keys: int = MAX_KEYS
    ) -> None:
        self._bulk = bulk
        self._max_keys = max_keys
        self._pending: dict[K, asyncio.Future[V | None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def load(self, key: K) -> V | None:
        """The value of ``key``, read after this call began; None when there is none."""
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            self._pending[key] = future
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run())
        return await asyncio.shield(future)

    async def _run(self) -> None:
        await asyncio.sleep(0)  # let the callers of this turn of the loop join
        while self._pending:
            keys = list(self._pending)[: self._max_keys]
            futures = {key: self._pending.pop(key) for key in keys}
            try:
                found = await self._bulk(keys)
            except Exception as exc:
                for future in futures.values():
                    if not future.done():
                        future.set_exception(exc)
                continue
            for key, future in futures.items():
                if not future.done():
                    future.set_result(found.get(key))
