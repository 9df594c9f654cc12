"""Durable timers: periodic passes over due rows, woken early when new work is due.

Every timer of Roost (a command's timeout or expiry, a scheduled command, a job's next release,
an execution's in-progress timeout, a device going offline) is a *due time stored in a row*. A
service registers a pass with :meth:`Scheduler.every`: the pass reads what is due, acts, and may
answer when it next needs to run. Nothing lives only in memory, so after a restart the first pass
of each timer picks up exactly where the last process stopped (durability, issue 4).

Passes run one at a time per name (never concurrently with themselves), each at least every
``interval_s`` seconds, sooner when the pass answers an earlier time or someone calls
:meth:`wake` (a service that just queued work due now). A failing pass is logged and retried at
its next turn; it never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from roost.store.database import Database

log = logging.getLogger(__name__)

#: A pass: do what is due; answer the epoch seconds of the next due time when known, else None.
MIN_DELAY_S = 0.005

Pass = Callable[[], Awaitable[float | None]]


@dataclass
class _Timer:
    name: str
    interval_s: float
    run: Pass
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    passes: int = 0


class Scheduler:
    """Runs registered passes (see the module docstring)."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self.wall_clock = wall_clock
        self._timers: dict[str, _Timer] = {}
        self._running = False

    def every(self, name: str, interval_s: float, run: Pass) -> None:
        """Register ``run`` under ``name``, at most ``interval_s`` seconds apart."""
        if name in self._timers:
            raise ValueError(f"a timer named {name!r} exists")
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        timer = _Timer(name, interval_s, run)
        self._timers[name] = timer
        if self._running:
            timer.task = asyncio.get_running_loop().create_task(self._loop(timer))

    def wake(self, name: str) -> None:
        """Run ``name``'s pass soon (e.g. work due now was just added). Unknown names: no-op."""
        timer = self._timers.get(name)
        if timer is not None:
            timer.woken.set()

    def passes(self, name: str) -> int:
        """How many passes of ``name`` completed (for tests and metrics)."""
        return self._timers[name].passes

    async def start(self) -> None:
        """Start every registered timer (and any registered later)."""
        if self._running:
            return
        self._running = True
        loop = asyncio.get_running_loop()
        for timer in self._timers.values():
            timer.task = loop.create_task(self._loop(timer))

    async def close(self) -> None:
        """Stop every timer (a pass in progress is cancelled; its rows stay due)."""
        self._running = False
        tasks = [t.task for t in self._timers.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for timer in self._timers.values():
            timer.task = None

    async def _loop(self, timer: _Timer) -> None:
        while True:
            timer.woken.clear()
            next_due: float | None = None
            try:
                next_due = await timer.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer %s failed; retrying in %.1f s", timer.name, timer.interval_s)
            timer.passes += 1
            delay = timer.interval_s
            if next_due is not None:
                # A floor, so that a pass answering a past time (work it could not finish)
                # cannot spin the loop.
                delay = max(MIN_DELAY_S, min(delay, next_due - self.wall_clock()))
            try:
                await asyncio.wait_for(timer.woken.wait(), delay)
            except TimeoutError:
                pass


async def earliest(db: Database, column: sa.Column[Any]) -> float | None:
    """The earliest time in a due-time column (epoch seconds), or None: a pass's next due time."""
    async with db.read() as conn:
        first = (
            await conn.execute(
                sa.select(column).where(column.is_not(None)).order_by(column).limit(1)
            )
        ).scalar()
    return None if first is None else float(first.timestamp())
