"""The feeds besides the ingest log that rules watch, each read in order from a stored position.

* ``presence``: presence history, by id (a device going online or offline, and why);
* ``state``: state document history, by id — reports of the device itself (``reported``);
* ``command``: commands that reached a final status, by completion time;
* ``job``: job executions that reached a final status, by completion time.

Ids grow with each commit on SQLite and almost so on PostgreSQL; completion times are taken
before the commit that stores them, so the time-ordered feeds only read rows older than
:data:`SETTLE_S`: a row committed a moment after a later-stamped one is not skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import sqlalchemy as sa

from roost.commands.tables import commands
from roost.inventory.tables import devices
from roost.jobs.tables import job_executions
from roost.presence.tables import presence_history
from roost.state.tables import device_state_history
from roost.store.database import Database

#: Rows read per feed per step (one transaction of the engine).
ROWS_PER_STEP: Final = 2000
#: Time-ordered feeds read rows completed at least this long ago (see the module docstring).
SETTLE_S: Final = 1.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FeedMessage:
    """One item of a feed: whose, the value conditions look at, the message, when (epoch s)."""

    tenant_id: str
    device_pk: int
    value: Any
    msg: dict[str, Any]
    at: float


Reader = Callable[[Database, int, datetime], Any]


def _us(when: datetime) -> int:
    return int((when - _EPOCH) / timedelta(microseconds=1))


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def read_presence(
    db: Database, position: int, now: datetime
) -> tuple[list[FeedMessage], int, bool]:
    """Presence changes after history id ``position``."""
    del now
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    presence_history.c.id,
                    presence_history.c.device_pk,
                    presence_history.c.at,
                    presence_history.c.status,
                    presence_history.c.reason,
                    devices.c.tenant_id,
                    devices.c.id,
                )
                .join(devices, devices.c.pk == presence_history.c.device_pk)
                .where(presence_history.c.id > position)
                .order_by(presence_history.c.id)
                .limit(ROWS_PER_STEP)
            )
        ).all()
    out = [
        FeedMessage(
            tenant,
            pk,
            status,
            {"status": status, "reason": reason, "at": _iso(at), "device_id": did},
            at.timestamp(),
        )  # fmt: skip
        for _id, pk, at, status, reason, tenant, did in rows
    ]
    last = int(rows[-1][0]) if rows else position
    return out, last, len(rows) == ROWS_PER_STEP


async def read_state(
    db: Database, position: int, now: datetime
) -> tuple[list[FeedMessage], int, bool]:
    """Reports of devices (their ``reported`` state) after history id ``position``."""
    del now
    h = device_state_history
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    h.c.id,
                    h.c.device_pk,
                    h.c.at,
                    h.c.name,
                    h.c.patch,
                    h.c.reported,
                    h.c.desired,
                    h.c.actor_type,
                    devices.c.tenant_id,
                    devices.c.id,
                )  # fmt: skip
                .join(devices, devices.c.pk == h.c.device_pk)
                .where(h.c.id > position)
                .order_by(h.c.id)
                .limit(ROWS_PER_STEP)
            )
        ).all()
    out = []
    for _id, pk, at, name, patch, reported, desired, actor_type, tenant, did in rows:
        if actor_type != "device" or not isinstance(patch, dict) or "reported" not in patch:
            continue
        msg = {
            "device_id": did,
            "name": name,
            "reported": reported,
            "desired": desired,
            "changed": patch["reported"],
            "at": _iso(at),
        }
        out.append(FeedMessage(tenant, pk, reported, msg, at.timestamp()))
    last = int(rows[-1][0]) if rows else position
    return out, last, len(rows) == ROWS_PER_STEP


async def read_commands(
    db: Database, position: int, now: datetime
) -> tuple[list[FeedMessage], int, bool]:
    """Commands completed after ``position`` (µs since the epoch), settled ones only."""
    c = commands
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    c.c.id,
                    c.c.device_pk,
                    c.c.completed_at,
                    c.c.name,
                    c.c.status,
                    c.c.result,
                    c.c.created_by,
                    c.c.tenant_id,
                    devices.c.id,
                )  # fmt: skip
                .join(devices, devices.c.pk == c.c.device_pk)
                .where(
                    c.c.completed_at > _from_us(position),
                    c.c.completed_at <= now - timedelta(seconds=SETTLE_S),
                )
                .order_by(c.c.completed_at, c.c.id)
                .limit(ROWS_PER_STEP)
            )
        ).all()
    rows = _whole_instants(rows, 2)
    out = [
        FeedMessage(
            tenant,
            pk,
            status,
            {
                "command_id": cid,
                "name": name,
                "status": status,
                "result": result,
                "created_by": by,
                "device_id": did,
                "at": _iso(done),
            },
            done.timestamp(),
        )  # fmt: skip
        for cid, pk, done, name, status, result, by, tenant, did in rows
    ]
    last = _us(rows[-1][2]) if rows else position
    return out, last, len(rows) >= ROWS_PER_STEP - 1


async def read_jobs(
    db: Database, position: int, now: datetime
) -> tuple[list[FeedMessage], int, bool]:
    """Job executions completed after ``position`` (µs since the epoch), settled ones only."""
    e = job_executions
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    e.c.job_id,
                    e.c.device_pk,
                    e.c.completed_at,
                    e.c.status,
                    e.c.status_details,
                    e.c.attempt,
                    e.c.tenant_id,
                    e.c.device_id,
                )  # fmt: skip
                .where(
                    e.c.completed_at > _from_us(position),
                    e.c.completed_at <= now - timedelta(seconds=SETTLE_S),
                )
                .order_by(e.c.completed_at, e.c.job_id)
                .limit(ROWS_PER_STEP)
            )
        ).all()
    rows = _whole_instants(rows, 2)
    out = [
        FeedMessage(
            tenant,
            pk,
            status,
            {
                "job_id": job,
                "status": status,
                "status_details": details,
                "attempt": attempt,
                "device_id": did,
                "at": _iso(done),
            },
            done.timestamp(),
        )  # fmt: skip
        for job, pk, done, status, details, attempt, tenant, did in rows
    ]
    last = _us(rows[-1][2]) if rows else position
    return out, last, len(rows) >= ROWS_PER_STEP - 1


def _whole_instants(rows: Sequence[Any], column: int) -> Sequence[Any]:
    """A full page cut at a time boundary: rows of the page's last instant wait for the next
    read (which takes every row of that instant), unless the whole page is one instant."""
    if len(rows) < ROWS_PER_STEP:
        return rows
    last = rows[-1][column]
    kept = [r for r in rows if r[column] != last]
    return kept or rows


@dataclass(frozen=True, slots=True)
class Feed:
    """A feed rules watch: its name (the cursor's) and how to read it."""

    name: str
    read: Callable[[Database, int, datetime], Any]
    timed: bool  # positions are times (µs), not ids


FEEDS: Final = (
    Feed("presence", read_presence, timed=False),
    Feed("state", read_state, timed=False),
    Feed("command", read_commands, timed=True),
    Feed("job", read_jobs, timed=True),
)


FEED_BY_NAME: Final = {feed.name: feed for feed in FEEDS}


def feed_of(source: str) -> str:
    """The feed a rule of this source reads: its own, or the ingest log (``log``)."""
    return source if source in FEED_BY_NAME else "log"


async def start_position(db: Database, feed: Feed, now: datetime) -> int:
    """Where a new installation's rules start reading a feed: its present end."""
    if feed.timed:
        return _us(now)
    table = presence_history if feed.name == "presence" else device_state_history
    async with db.read() as conn:
        last = (await conn.execute(sa.select(sa.func.max(table.c.id)))).scalar()
    return int(last or 0)
