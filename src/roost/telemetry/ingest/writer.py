"""Group commit: messages from every door accumulate in one batch, committed a few ms at a time.

One commit is in flight at a time (SQLite has one writer; PostgreSQL does not mind). While it runs,
the next batch fills up, so the batch size follows the load by itself: a lone device gets its
point committed within ``max_delay_s``, a thousand devices share each commit. Every message of a
batch shares one :class:`CommitTicket`, resolved when the sink has the batch durably.

Pushback: once ``max_buffered_items`` items are accepted and not yet committed (the batch filling
up and the one being committed: every point a device still waits an acknowledgement for)
:meth:`IngestWriter.full` turns true and the doors stop reading (MQTT) or answer 503 (HTTP) until
:meth:`wait_for_capacity` returns. That budget is what bounds ingest's memory under overload.
Nothing is dropped: a message is either in a batch whose ticket will resolve, or it was refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from roost.core import metrics
from roost.core.ingest import CommitTicket
from roost.telemetry.engine.batch import BatchBuilder, DecodedBatch, decode

log = logging.getLogger(__name__)

# How long a small batch waits for company before it is committed. Commits group by themselves
# (items pile up while the previous commit runs); the wait only helps a trickle of senders share
# one commit, and a batch of COMPANY_ITEMS or more does not wait at all.
DEFAULT_MAX_DELAY_S = 0.001
COMPANY_ITEMS = 1000
# Items accepted and not yet committed beyond which the doors push back (the default of
# ROOST_INGEST_MAX_UNACKED_POINTS). 500,000 points are ~33 MB in the builder's arrays and the
# blob, under a second of SQLite's commit rate, and more than 1,000 devices keeping four
# 100-point messages in flight ask for (400,000): at the design load nobody is pushed back
# (200,000 cost that case ~8 % of its msg/s in issue 11.3's runs). The old 1,000,000 in Python
# lists let an overload hold ~1 GB of batches, blobs and their copies.
DEFAULT_MAX_BUFFERED_ITEMS = 500_000
# Non-double values to encode beyond which encoding takes milliseconds (a Python loop over
# them): done off the event loop. Doubles are copied from their arrays at memcpy speed.
_ENCODE_IN_THREAD_ITEMS = 20_000

BACKLOG, BACKLOG_HELP = "roost_ingest_backlog", "Items accepted and waiting for their commit"

Sink = Callable[[DecodedBatch], Awaitable[int]]
CommitListener = Callable[[int, DecodedBatch], None]


class IngestWriter:
    """Collects accepted items and commits them in batches through ``sink``."""

    def __init__(
        self,
        sink: Sink,
        *,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        max_buffered_items: int = DEFAULT_MAX_BUFFERED_ITEMS,
    ) -> None:
        self.sink = sink
        self.max_delay_s = max_delay_s
        self.max_buffered_items = max_buffered_items
        self.builder = BatchBuilder()
        self.ticket = CommitTicket()
        self.listeners: list[CommitListener] = []
        self.committed_batches = 0
        self.committed_items = 0
        self._committing = 0  # items of the batch being committed
        self._wake = asyncio.Event()
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        metrics.gauge_source(BACKLOG, BACKLOG_HELP, (), self, lambda w: {(): len(w.builder)})

    # -- the doors' side ---------------------------------------------------------------------

    def full(self) -> bool:
        """True when the doors must push back instead of adding more."""
        if len(self.builder) + self._committing >= self.max_buffered_items:
            self._capacity.clear()
            return True
        return False

    def appended(self) -> CommitTicket:
        """Say that items were added to :attr:`builder`; answer the ticket they share."""
        if not self._wake.is_set():
            self._wake.set()
            self._idle.clear()
        return self.ticket

    async def wait_for_capacity(self) -> None:
        """Return once the writer takes items again."""
        await self._capacity.wait()

    # -- the commit loop ---------------------------------------------------------------------

    def start(self) -> None:
        """Start committing in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def flush(self) -> None:
        """Wait until everything appended so far is committed (or failed)."""
        while len(self.builder) or not self._idle.is_set():
            self._wake.set()
            await self._idle.wait()
            if len(self.builder):
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Commit what is pending, then stop."""
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not len(self.builder):
                self._wake.clear()
                self._idle.set()
                if self._closing:
                    return
                continue
            if len(self.builder) < COMPANY_ITEMS and self.max_delay_s and not self._closing:
                await asyncio.sleep(self.max_delay_s)
            builder, ticket = self.builder, self.ticket
            self.builder, self.ticket = BatchBuilder(), CommitTicket()
            self._wake.clear()
            self._committing = len(builder)
            try:
                await self._commit(builder, ticket)
            finally:
                self._committing = 0
            self._capacity.set()
            if len(self.builder):
                self._wake.set()
            else:
                self._idle.set()
                if self._closing:
                    return

    async def _commit(self, builder: BatchBuilder, ticket: CommitTicket) -> None:
        try:
            if len(builder.others) > _ENCODE_IN_THREAD_ITEMS:
                blob = await asyncio.to_thread(builder.encode)
            else:
                blob = builder.encode()
            batch = decode(blob)
            first_offset = await self.sink(batch)
        except Exception as exc:
            # The devices were not acknowledged; they resend. Nothing acknowledged is lost.
            log.error("ingest commit of %d items failed: %s", len(builder), exc)
            metrics.commit_failed()
            ticket.resolve(exc)
            return
        self.committed_batches += 1
        self.committed_items += len(batch)
        ticket.resolve(None)
        metrics.batch_committed(batch)
        for listener in self.listeners:
            try:
                listener(first_offset, batch)
            except Exception:
                log.exception("commit listener failed")
