"""The rules engine: rules evaluated over committed data, incrementally and durably.

It reads two feeds in order — the ingest log (telemetry and events, by offset) and presence
history (by id) — from where ``rule_cursors`` says it stopped, and runs the clock for ``for_s``
and no-data windows. Each chunk it processes ends in ONE transaction that writes the rule states
it changed, the alarms they raise or clear, the notifications decided (the outbox), the commands
queued and the other actions (``rule_actions``), and moves the cursor, with a compare-and-set so
that two processes never both apply a chunk. A restart therefore neither loses a pending alarm
nor fires one twice: what was not committed is evaluated again from the same cursor.

Cheap on the hot path: commits are announced on the bus with their batch, so the engine reads
the log only to catch up. A plain threshold or range on one sensor (the common rule) is
evaluated over the whole batch with numpy (:mod:`roost.alarms.rules.vector`); only points whose
outcome differs from the rule's state for that device reach Python.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from roost.alarms.notify.service import NotificationService
from roost.alarms.reference.service import ReferenceService
from roost.alarms.rules.evaluation import (
    Chunk,
    RuleBook,
    State,
    run_effects,
)
from roost.alarms.rules.feeds import FEEDS, Feed, start_position
from roost.alarms.rules.fleet import Fleet
from roost.alarms.rules.tables import rule_cursors, rule_states, rules
from roost.alarms.service import AlarmChange, AlarmService
from roost.commands.service import CommandService
from roost.core import metrics
from roost.core.context import ServiceDeps
from roost.presence.service import PRESENCE_SUBJECT
from roost.telemetry.engine.base import TimeSeriesStore
from roost.telemetry.engine.batch import DecodedBatch, decode
from roost.telemetry.live.service import COMMITTED_SUBJECT

log = logging.getLogger(__name__)

LOG_FEED: Final = "log"
#: Log rows (each a group commit) read per catch-up step: a few thousand to a few hundred
#: thousand items, one transaction.
LOG_ROWS_PER_STEP: Final = 20
#: The engine looks at the clock at least this often (for_s and no-data windows): alarms are
#: raised within this of their due time.
TICK_S: Final = 0.25
#: Announced commits kept while the engine is busy; beyond, it reads the log instead.
MAX_QUEUED_COMMITS: Final = 256
#: A chunk that changed nothing moves its feed's stored cursor at most this often (it moves in
#: memory at once). Evaluating such a chunk again after a crash changes nothing either, so this
#: costs no correctness, and saves the store a write transaction per ingest commit.
CURSOR_SAVE_S: Final = 1.0
#: Feeds ordered by completion time (commands, jobs) are read at most this often: their rows
#: wait SETTLE_S anyway, and each read is an index range scan.
TIMED_FEED_EVERY_S: Final = 1.0
#: Rule targets (groups, queries) are resolved again this often.
TARGETS_REFRESH_S: Final = 30.0
#: How often the engine looks for rules changed by another process (another server of the
#: same store, or `roost rules apply` beside a server): one small query.
RULES_POLL_S: Final = 2.0
_OFFSET = struct.Struct("<q")

EVALUATED = metrics.tally(
    "roost_rules_evaluated", "Items (points, events, presence changes) rules looked at", ("feed",)
)
FIRED = metrics.tally("roost_rules_fired", "Times a rule fired or resolved", ("transition",))
LAG = metrics.tally("roost_rules_catch_up_reads", "Log reads the engine made to catch up", ())


class Conflict(Exception):
    """Another process moved the cursor first: this chunk's work is dropped."""


class RuleEngine:
    """Evaluates every enabled rule over committed data (see the module docstring)."""

    def __init__(
        self,
        deps: ServiceDeps,
        *,
        store: TimeSeriesStore,
        alarms: AlarmService,
        notifications: NotificationService,
        reference: ReferenceService,
        commands: CommandService,
    ) -> None:
        self.deps = deps
        self.db = deps.db
        self.store = store
        self.alarms = alarms
        self.notifications = notifications
        self.commands = commands
        self.fleet = Fleet(deps.db)
        self.book = RuleBook(self.fleet, reference)
        self.cursors: dict[str, int] = {}
        self._commits: deque[tuple[int, DecodedBatch | bytes]] = deque()
        self._wake = asyncio.Event()
        self._reload = True
        self._task: asyncio.Task[None] | None = None
        self._subscriptions: list[Any] = []
        self.processed = asyncio.Event()  # set after each pass (tests and benchmarks wait on it)
        self.passes = 0
        self._targets_at = 0.0
        self._refresh_task: asyncio.Task[Any] | None = None
        self._polled_at = 0.0
        self._feed_read_at: dict[str, float] = {}
        # The cursors as stored (self.cursors may be ahead by chunks that changed nothing).
        self._stored: dict[str, int] = {}
        self._stored_at: dict[str, float] = {}
        self._signature: tuple[Any, ...] | None = None
        self.actions_hook: Any = None  # called after a commit that queued rule_actions

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load rules, states and cursors; follow commits and presence; run."""
        await self._init_cursors()
        await self._load()
        self._subscriptions = [
            await self.deps.bus.subscribe(COMMITTED_SUBJECT, self._on_commit),
            await self.deps.bus.subscribe(PRESENCE_SUBJECT, self._on_presence),
        ]
        self._task = asyncio.create_task(self._run(), name="rules-engine")

    async def close(self) -> None:
        """Stop (work not committed is done again by the next start)."""
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions = []
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def rules_changed(self) -> None:
        """A rule was created, changed or deleted: load them again before the next step."""
        self._reload = True
        self._wake.set()

    async def _init_cursors(self) -> None:
        _first, next_offset = await self.store.log_bounds()
        async with self.db.write() as conn:
            rows = dict(
                (await conn.execute(sa.select(rule_cursors.c.feed, rule_cursors.c.position))).all()
            )
            now = self.deps.clock()
            if LOG_FEED not in rows:
                # A new installation's rules look at what is committed from now on.
                rows[LOG_FEED] = next_offset - 1
                await conn.execute(
                    rule_cursors.insert().values(
                        feed=LOG_FEED, position=rows[LOG_FEED], updated_at=now
                    )
                )
            for feed in FEEDS:
                if feed.name not in rows:
                    rows[feed.name] = await start_position(self.db, feed, now)
                    await conn.execute(
                        rule_cursors.insert().values(
                            feed=feed.name, position=rows[feed.name], updated_at=now
                        )
                    )
        self.cursors = {k: int(v) for k, v in rows.items()}
        self._stored = dict(self.cursors)

    async def _rules_signature(self, conn: Any) -> tuple[Any, ...]:
        row = (
            await conn.execute(
                sa.select(
                    sa.func.count(), sa.func.max(rules.c.updated_at), sa.func.sum(rules.c.version)
                )
            )
        ).one()
        return tuple(row)

    async def _signature_changed(self) -> bool:
        async with self.db.read() as conn:
            return await self._rules_signature(conn) != self._signature

    async def _load(self) -> None:
        """Rules and their committed states, from the database."""
        # Cleared first: a change made while this load reads is loaded by the next one.
        self._reload = False
        async with self.db.read() as conn:
            self._signature = await self._rules_signature(conn)
            # A rule saved since may have moved a cursor (to the present, for a feed nobody
            # watched before): the stored positions are the truth between chunks.
            self.cursors = {
                k: int(v)
                for k, v in (
                    await conn.execute(sa.select(rule_cursors.c.feed, rule_cursors.c.position))
                ).all()
            }
            self._stored = dict(self.cursors)
            rule_rows = (
                (await conn.execute(sa.select(rules).where(rules.c.enabled.is_(True))))
                .mappings()
                .all()
            )
            state_rows = (await conn.execute(sa.select(rule_states))).mappings().all()
        states: dict[tuple[str, str], dict[int, State]] = {}
        for row in state_rows:
            states.setdefault((row["tenant_id"], row["rule_id"]), {})[row["device_pk"]] = State(
                row["phase"], row["since"], row["due_at"], row["last_value"], row["last_ts"]
            )
        await self.book.load([dict(r) for r in rule_rows], states)
        self._targets_at = asyncio.get_running_loop().time()

    # -- feeding ------------------------------------------------------------------------------

    async def _on_commit(self, _subject: str, data: bytes) -> None:
        if not self.book.watches_log:
            return
        (first_offset,) = _OFFSET.unpack_from(data, 0)
        if len(self._commits) < MAX_QUEUED_COMMITS:
            self._commits.append((first_offset, data))
        self._wake.set()

    async def _on_presence(self, _subject: str, _data: bytes) -> None:
        if self.book.feed_rules.get("presence"):
            self._wake.set()

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if not self._reload and loop.time() - self._polled_at > RULES_POLL_S:
                    self._polled_at = loop.time()
                    # Only ever set here: a change announced while the poll reads stays loaded.
                    if await self._signature_changed():
                        self._reload = True
                if self._reload:
                    await self._load()
                self._refresh(loop.time())
                more = await self.step()
            except Exception:
                log.exception("the rules engine's step failed; it retries from its cursors")
                self._commits.clear()
                self._reload = True
                await asyncio.sleep(1.0)
                continue
            self.passes += 1
            self.processed.set()
            if more:
                self._wake.set()

    def _refresh(self, now: float) -> None:
        """Start reading targets, series and facts again in the background every
        TARGETS_REFRESH_S, and apply what was read between steps (reads wait for the loop
        under heavy ingest: the engine must not)."""
        task = self._refresh_task
        if task is not None and task.done():
            self._refresh_task = None
            if not task.cancelled() and task.exception() is None:
                self.book.apply_refresh(task.result())
            elif not task.cancelled():
                log.warning("refreshing the rules' targets failed: %s", task.exception())
        elif task is None and now - self._targets_at > TARGETS_REFRESH_S:
            self._targets_at = now
            self._refresh_task = asyncio.create_task(self.book.read_refresh(), name="rules-refresh")

    async def step(self) -> bool:
        """One round over every feed and the clock; True when more is waiting."""
        more = False
        for feed in FEEDS:
            more = await self._feed_step(feed) or more
        if self._reload:
            return True
        more = await self._log_step() or more
        if not more:
            await self._clock_step()
        return more

    async def _log_step(self) -> bool:
        if not self.book.watches_log:
            # Nothing watches the log: no read, no write (the first rule that watches it moves
            # the cursor to the log's end when it is saved: RuleService.create).
            self._commits.clear()
            return False
        cursor = self.cursors[LOG_FEED]
        entries: list[tuple[int, DecodedBatch]] = []
        while self._commits:
            first, item = self._commits[0]
            batch = (
                item if isinstance(item, DecodedBatch) else decode(memoryview(item)[_OFFSET.size :])
            )
            end = first + len(batch) - 1
            if end <= cursor:
                self._commits.popleft()
                continue
            if first != cursor + 1 and entries == [] and first > cursor + 1:
                break  # a gap: read it from the log below
            if first != (entries[-1][0] + len(entries[-1][1]) if entries else cursor + 1):
                break
            self._commits.popleft()
            entries.append((first, batch))
        more = False
        if not entries:
            _first, next_offset = await self.store.log_bounds()
            if next_offset - 1 <= cursor:
                return False

            LAG.inc(())
            logged = await self.store.read_log(cursor, LOG_ROWS_PER_STEP)
            entries = [(e.first_offset, e.batch) for e in logged]
            more = len(logged) == LOG_ROWS_PER_STEP
            if not entries:
                return False
        if self._reload:
            # A rule changed while this step read: what was read after the change must meet
            # the changed rules (the cursor has not moved, so it is read again after the load).
            self._commits.clear()
            return True
        chunk = Chunk()
        new_cursor = cursor
        evaluated = 0
        for first, batch in entries:
            skip = max(0, cursor + 1 - first)
            if self.book.rules:
                await self.book.evaluate_batch(chunk, batch, skip, self.deps.clock())
            evaluated += len(batch) - skip
            new_cursor = max(new_cursor, first + len(batch) - 1)
        await self._commit(chunk, LOG_FEED, cursor, new_cursor)
        # Counted once committed: a reader that sees every item evaluated sees their alarms.
        EVALUATED.inc((LOG_FEED,), evaluated)
        return more or bool(self._commits)

    async def _feed_step(self, feed: Feed) -> bool:
        if not self.book.feed_rules.get(feed.name):
            return False  # nobody watches it: its cursor moves when a rule does
        if feed.timed:
            now = asyncio.get_running_loop().time()
            if now - self._feed_read_at.get(feed.name, 0.0) < TIMED_FEED_EVERY_S:
                return False
            self._feed_read_at[feed.name] = now
        cursor = self.cursors[feed.name]
        messages, position, more = await feed.read(self.db, cursor, self.deps.clock())
        if position == cursor:
            return False
        if self._reload:
            return True  # a rule changed while this read: evaluate it after the load
        chunk = Chunk()
        await self.book.evaluate_feed(chunk, feed.name, messages)
        await self._commit(chunk, feed.name, cursor, position)
        EVALUATED.inc((feed.name,), len(messages))
        return bool(more)

    async def _clock_step(self) -> None:
        now = self.deps.clock()
        chunk = Chunk()
        await self.book.evaluate_clock(chunk, now)
        if chunk.dirty:
            await self._commit(chunk, None, 0, 0)

    # -- committing a chunk -------------------------------------------------------------------

    async def _commit(self, chunk: Chunk, feed: str | None, old: int, new: int) -> None:
        """Write a chunk's states and effects and move the feed's cursor, all or nothing."""
        if feed is not None and not (chunk.dirty or chunk.effects or chunk.stopped):
            clock = asyncio.get_running_loop().time()
            if clock - self._stored_at.get(feed, 0.0) < CURSOR_SAVE_S:
                self.cursors[feed] = new
                return
            self._stored_at[feed] = clock
        if feed is not None:
            old = self._stored.get(feed, old)
        now = self.deps.clock()
        alarm_changes: list[AlarmChange] = []
        queued_commands: list[tuple[str, int, dict[str, Any]]] = []
        actions = 0
        try:
            async with self.db.write() as conn:
                if feed is not None and new != old:
                    moved = await conn.execute(
                        rule_cursors.update()
                        .where(rule_cursors.c.feed == feed, rule_cursors.c.position == old)
                        .values(position=new, updated_at=now)
                    )
                    if moved.rowcount != 1:
                        raise Conflict(feed)
                await self._write_states(conn, chunk, now)
                if chunk.effects:
                    outcome = await run_effects(
                        conn, chunk.effects, alarms=self.alarms, commands=self.commands, now=now
                    )
                    alarm_changes, notices, queued_commands, actions = outcome
                    if notices:
                        await self.notifications.enqueue_in(conn, notices)
        except Conflict:
            # Rules, states and cursors are read again before the next step (_load).
            log.info("another process evaluated the %s feed first; reloading", feed)
            self._commits.clear()
            self._reload = True
            return
        except Exception:
            chunk.discard()
            raise
        if feed is not None:
            self.cursors[feed] = self._stored[feed] = new
        self.book.apply(chunk)
        for effect in chunk.effects:
            FIRED.inc((effect.kind,))
        if alarm_changes:
            await self.alarms.announce(alarm_changes)
            self.notifications.wake()
        for tenant_id, device_pk, record in queued_commands:
            await self.commands.queued(tenant_id, device_pk, [record])
        if actions and self.actions_hook is not None:
            self.actions_hook()
        for key, reason in chunk.stopped.items():
            await self._stop_rule(key, reason)

    async def _write_states(self, conn: Any, chunk: Chunk, now: datetime) -> None:
        if not chunk.dirty:
            return
        keys = list(chunk.dirty)
        gone = [(t, r, d) for (t, r, d) in keys if chunk.dirty[(t, r, d)] is None]
        kept = [
            (t, r, d, chunk.dirty[(t, r, d)])
            for (t, r, d) in keys
            if chunk.dirty[(t, r, d)] is not None
        ]
        for tenant_id, rule_id, device_pk in gone:
            await conn.execute(
                rule_states.delete().where(
                    rule_states.c.tenant_id == tenant_id,
                    rule_states.c.rule_id == rule_id,
                    rule_states.c.device_pk == device_pk,
                )
            )
        if kept:
            # Delete-then-insert: one portable upsert for SQLite and PostgreSQL.
            for start in range(0, len(kept), 500):
                part = kept[start : start + 500]
                await conn.execute(
                    rule_states.delete().where(
                        sa.tuple_(
                            rule_states.c.tenant_id, rule_states.c.rule_id, rule_states.c.device_pk
                        ).in_([(t, r, d) for t, r, d, _ in part])
                    )
                )
                await conn.execute(
                    rule_states.insert(),
                    [
                        {
                            "tenant_id": t, "rule_id": r, "device_pk": d, "phase": s.phase,
                            "since": s.since, "due_at": s.due_at, "last_value": s.last_value,
                            "last_ts": s.last_ts, "updated_at": now,
                        }
                        for t, r, d, s in part
                        if s is not None
                    ],
                )  # fmt: skip

    async def _stop_rule(self, key: tuple[str, str], reason: str) -> None:
        tenant_id, rule_id = key
        log.warning("rule %s/%s stopped: %s", tenant_id, rule_id, reason)
        async with self.db.write() as conn:
            await conn.execute(
                rules.update()
                .where(rules.c.tenant_id == tenant_id, rules.c.id == rule_id)
                .values(enabled=False, error=reason, updated_at=self.deps.clock())
            )
        self.rules_changed()

    # -- for tests and benchmarks -------------------------------------------------------------

    async def settled(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until the engine has evaluated everything committed so far."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            _first, next_offset = await self.store.log_bounds()
            if self.cursors.get(LOG_FEED, -1) >= next_offset - 1 and not self._reload:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the rules engine did not catch up")
            self.processed.clear()
            self._wake.set()
            try:
                await asyncio.wait_for(self.processed.wait(), 0.5)
            except TimeoutError:
                pass
