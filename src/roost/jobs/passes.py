"""The jobs pass: everything about jobs that is due later than the request that caused it.

One Scheduler pass (``jobs``) reads due rows and acts: scheduled starts, in-progress and step
timeouts (with retries), devices joining continuous jobs (an anti-join of targets against
executions), ``end_at``, releases at the rollout rate (the rate state is the stored
``jobs.release_tat``), abort rules and completion. Nothing lives only in memory, so a restart
resumes every job where it was. A job with maintenance windows releases an execution only
while its device is inside one (:mod:`roost.jobs.windows`, in the device's site's time zone).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.errors import Conflict, RoostError
from roost.inventory.tables import devices, sites
from roost.jobs import store
from roost.jobs.lifecycle import ExecutionStatus, execution_move
from roost.jobs.rollout import (
    abort_rule_hit,
    next_release_at,
    parse_abort,
    parse_rollout,
    releases_due,
)
from roost.jobs.rules import (
    PENDING,
    DeviceUpdate,
    JobChange,
    JobStatus,
    Targets,
    TargetSelection,
)
from roost.jobs.tables import job_executions, jobs
from roost.jobs.windows import is_open, next_opening, parse_maintenance
from roost.store.database import Database
from roost.store.queries import as_dicts

log = logging.getLogger(__name__)

# Executions released, timed out or added per job and pass: bounds one transaction's length
# (SQLite holds its write lock meanwhile); a pass that hit a bound runs again at once.
BATCH = 500

_E = ExecutionStatus
#: Told after each pass which devices' pending lists and which jobs changed.
AfterChange = Callable[[Iterable[int], Iterable[JobChange]], Awaitable[None]]


class JobPasses:
    """The jobs pass (see the module docstring); register :meth:`run_pass` with a Scheduler."""

    def __init__(
        self, db: Database, clock: Callable[[], datetime], after_change: AfterChange
    ) -> None:
        self.db = db
        self.clock = clock
        self.after_change = after_change

    async def run_pass(self) -> float | None:
        """Do what is due for every job; answer when the next thing is due (epoch seconds)."""
        now = self.clock()
        devices_touched: set[int] = set()
        changes: list[JobChange] = []
        due: list[float] = []
        more = False
        async with self.db.read() as conn:
            if not await self._anything_to_do(conn):
                return None
        async with self.db.write() as conn:
            changes += await self._start_scheduled(conn, now)
            more |= await self._time_out(conn, now, devices_touched, changes)
            more |= await self._follow_continuous(conn, now, devices_touched, changes)
            await self._stop_ended(conn, now, devices_touched, changes)
        async with self.db.write() as conn:
            more |= await self._release(conn, now, devices_touched, changes, due)
        async with self.db.write() as conn:
            await self._settle(conn, now, devices_touched, changes)
        async with self.db.read() as conn:
            due += await self._next_due(conn)
        await self.after_change(devices_touched, changes)
        if more:
            return now.timestamp()
        return min(due) if due else None

    @staticmethod
    async def _anything_to_do(conn: AsyncConnection) -> bool:
        """Whether any job is scheduled or running, or any execution has a timeout: an idle
        Roost then takes no write lock for this pass (SQLite has one for the whole store)."""
        active = sa.select(jobs.c.id).where(
            jobs.c.status.in_([JobStatus.SCHEDULED.value, JobStatus.IN_PROGRESS.value])
        )
        timing = sa.select(job_executions.c.job_id).where(
            job_executions.c.timeout_at.is_not(None),
            job_executions.c.status == _E.IN_PROGRESS,
        )
        found = await conn.execute(sa.select(sa.or_(active.exists(), timing.exists())))
        return bool(found.scalar())

    async def _start_scheduled(self, conn: AsyncConnection, now: datetime) -> list[JobChange]:
        rows = (
            await conn.execute(
                sa.select(jobs.c.tenant_id, jobs.c.id).where(
                    jobs.c.status == JobStatus.SCHEDULED, jobs.c.schedule_at <= now
                )
            )
        ).all()
        for tenant_id, job_id in rows:
            await conn.execute(
                jobs.update()
                .where(jobs.c.tenant_id == tenant_id, jobs.c.id == job_id)
                .values(status=JobStatus.IN_PROGRESS.value, started_at=now, updated_at=now)
            )
        return [JobChange(t, j, status=JobStatus.IN_PROGRESS.value) for t, j in rows]

    async def _time_out(
        self,
        conn: AsyncConnection,
        now: datetime,
        touched: set[int],
        changes: list[JobChange],
    ) -> bool:
        rows = as_dicts(
            await conn.execute(
                store.joined()
                .where(
                    job_executions.c.status == _E.IN_PROGRESS,
                    job_executions.c.timeout_at <= now,
                )
                .limit(BATCH)
            )
        )
        for row in rows:
            try:
                await store.apply_update(conn, row, DeviceUpdate(_E.TIMED_OUT), now)
            except Conflict:  # the device updated it meanwhile: the next pass looks again
                continue
            touched.add(row["device_pk"])
            changes.append(
                JobChange(
                    row["tenant_id"],
                    row["job_id"],
                    device_id=row["device_id"],
                    execution_status=_E.TIMED_OUT.value,
                )
            )
        return len(rows) == BATCH

    async def _follow_continuous(
        self,
        conn: AsyncConnection,
        now: datetime,
        touched: set[int],
        changes: list[JobChange],
    ) -> bool:
        """Continuous jobs: executions for devices that joined the targets, and REMOVED for
        QUEUED ones of devices that left them (IN_PROGRESS ones run on)."""
        rows = as_dicts(
            await conn.execute(
                sa.select(jobs.c.tenant_id, jobs.c.id, jobs.c.targets).where(
                    jobs.c.status == JobStatus.IN_PROGRESS,
                    jobs.c.target_selection == TargetSelection.CONTINUOUS,
                    sa.or_(jobs.c.end_at.is_(None), jobs.c.end_at > now),
                )
            )
        )
        more = False
        for job in rows:
            stored = job["targets"] or {}
            targets = Targets(
                tuple(stored.get("devices") or ()),
                tuple(stored.get("groups") or ()),
                stored.get("query"),
            )
            condition: sa.ColumnElement[bool]
            try:
                condition = await store.target_condition(
                    conn, job["tenant_id"], targets, missing_ok=True
                )
            except RoostError as exc:  # e.g. every target group was deleted: nobody is left
                log.debug("continuous job %s has no usable targets: %s", job["id"], exc)
                condition = sa.false()
            added = await store.add_executions(
                conn, self.db.dialect, job["tenant_id"], job["id"], condition, now, limit=BATCH
            )
            more |= added == BATCH
            removed = await store.remove_departed(conn, job["tenant_id"], job["id"], condition, now)
            if removed:
                touched.update(removed)
                changes.append(JobChange(job["tenant_id"], job["id"]))
        return more

    async def _stop_ended(
        self,
        conn: AsyncConnection,
        now: datetime,
        touched: set[int],
        changes: list[JobChange],
    ) -> None:
        """After ``end_at`` nothing more is released: never-released executions are CANCELED."""
        rows = (
            await conn.execute(
                sa.select(jobs.c.tenant_id, jobs.c.id).where(
                    jobs.c.status == JobStatus.IN_PROGRESS, jobs.c.end_at <= now
                )
            )
        ).all()
        for tenant_id, job_id in rows:
            where = (
                job_executions.c.tenant_id == tenant_id,
                job_executions.c.job_id == job_id,
                job_executions.c.status == _E.QUEUED,
                job_executions.c.released_at.is_(None),
            )
            pks = (await conn.execute(sa.select(job_executions.c.device_pk).where(*where))).all()
            if not pks:
                continue
            execution_move(_E.QUEUED, _E.CANCELED)
            await conn.execute(
                job_executions.update()
                .where(*where)
                .values(
                    status=_E.CANCELED.value,
                    status_details={"reason": "the job's end_at passed before release"},
                    version=job_executions.c.version + 1,
                    updated_at=now,
                    completed_at=now,
                )
            )
            touched.update(pk for (pk,) in pks)
            changes.append(JobChange(tenant_id, job_id))

    async def _release(
        self,
        conn: AsyncConnection,
        now: datetime,
        touched: set[int],
        changes: list[JobChange],
        due: list[float],
    ) -> bool:
        waiting = (
            sa.select(job_executions.c.device_pk)
            .where(
                job_executions.c.tenant_id == jobs.c.tenant_id,
                job_executions.c.job_id == jobs.c.id,
                job_executions.c.status == _E.QUEUED,
                job_executions.c.released_at.is_(None),
            )
            .exists()
        )
        rows = as_dicts(
            await conn.execute(
                sa.select(
                    jobs.c.tenant_id,
                    jobs.c.id,
                    jobs.c.rollout,
                    jobs.c.release_tat,
                    jobs.c.released_count,
                    jobs.c.maintenance,
                )
                .where(
                    jobs.c.status == JobStatus.IN_PROGRESS,
                    sa.or_(jobs.c.end_at.is_(None), jobs.c.end_at > now),
                    waiting,
                )
                # Two processes' passes never release for one job at once (PostgreSQL).
                .with_for_update(of=jobs, skip_locked=True)
            )
        )
        more = False
        for job in rows:
            rollout = parse_rollout(job["rollout"])
            wanted = BATCH
            tat = job["release_tat"]
            succeeded = 0
            if rollout.succeeded_step:
                succeeded = (await store.counts(conn, job["tenant_id"], job["id"])).get(
                    _E.SUCCEEDED.value, 0
                )
            rate = rollout.rate(job["released_count"], succeeded)  # None: unlimited
            if rate is not None:
                wanted, tat = releases_due(now.timestamp(), tat, rate, BATCH)
            if wanted <= 0:
                nxt = next_release_at(tat, rate) if rate else None
                if nxt is not None:
                    due.append(nxt)
                continue
            unreleased = (
                job_executions.c.tenant_id == job["tenant_id"],
                job_executions.c.job_id == job["id"],
                job_executions.c.status == _E.QUEUED,
                job_executions.c.released_at.is_(None),
            )
            in_window = await self._in_window(conn, job, unreleased, now, due)
            if in_window is None:
                continue
            pks = [
                pk
                for (pk,) in await conn.execute(
                    sa.select(job_executions.c.device_pk)
                    .where(*unreleased, in_window)
                    .order_by(job_executions.c.queued_at, job_executions.c.device_pk)
                    .limit(wanted)
                )
            ]
            if rate is not None and len(pks) < wanted:
                # Fewer waited than the rate allowed: charge only the releases made.
                _, tat = releases_due(now.timestamp(), job["release_tat"], rate, len(pks))
            for chunk in store.chunks(pks):
                await conn.execute(
                    job_executions.update()
                    .where(
                        job_executions.c.tenant_id == job["tenant_id"],
                        job_executions.c.job_id == job["id"],
                        job_executions.c.device_pk.in_(chunk),
                        job_executions.c.released_at.is_(None),
                    )
                    .values(released_at=now, updated_at=now)
                )
            await conn.execute(
                jobs.update()
                .where(jobs.c.tenant_id == job["tenant_id"], jobs.c.id == job["id"])
                .values(
                    release_tat=tat,
                    released_count=jobs.c.released_count + len(pks),
                    updated_at=now,
                )
            )
            touched.update(pks)
            changes.append(JobChange(job["tenant_id"], job["id"]))
            if rate is not None:
                # An exponential rollout may have just reached a higher rate.
                rate = rollout.rate(job["released_count"] + len(pks), succeeded) or rate
                nxt = next_release_at(tat, rate)
                if nxt is not None:
                    due.append(nxt)
            elif len(pks) == BATCH:
                more = True
        return more

    @staticmethod
    async def _in_window(
        conn: AsyncConnection,
        job: Mapping[str, Any],
        unreleased: Sequence[sa.ColumnElement[bool]],
        now: datetime,
        due: list[float],
    ) -> sa.ColumnElement[bool] | None:
        """SQL selecting the waiting executions whose device is inside one of the job's
        maintenance windows now (true without windows); None when no device is. Each closed
        time zone's next opening goes to ``due``."""
        found = parse_maintenance(job["maintenance"])
        if not found:
            return sa.true()
        local_zone = sa.func.coalesce(sites.c.timezone, "UTC")
        placed = devices.outerjoin(
            sites,
            sa.and_(sites.c.tenant_id == devices.c.tenant_id, sites.c.id == devices.c.site_id),
        )
        zones = [
            name
            for (name,) in await conn.execute(
                sa.select(local_zone)
                .select_from(
                    job_executions.join(placed, devices.c.pk == job_executions.c.device_pk)
                )
                .where(*unreleased)
                .distinct()
            )
        ]
        open_zones = [name for name in zones if is_open(found, now, name)]
        closed = [name for name in zones if name not in open_zones]
        openings = [next_opening(found, now, name) for name in closed]
        due.extend(at.timestamp() for at in openings if at is not None)
        if not open_zones:
            return None
        return job_executions.c.device_pk.in_(
            sa.select(devices.c.pk).select_from(placed).where(local_zone.in_(open_zones))
        )

    async def _settle(
        self,
        conn: AsyncConnection,
        now: datetime,
        touched: set[int],
        changes: list[JobChange],
    ) -> None:
        """Abort jobs whose abort rules are met; complete snapshot jobs with nothing pending."""
        rows = as_dicts(
            await conn.execute(
                sa.select(jobs.c.tenant_id, jobs.c.id, jobs.c.target_selection, jobs.c.abort_rules)
                .where(jobs.c.status == JobStatus.IN_PROGRESS)
                # Another process's pass settling the same job skips it (PostgreSQL; SQLite
                # serialises writers anyway).
                .with_for_update(skip_locked=True)
            )
        )
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for job in rows:
            by_tenant[job["tenant_id"]].append(job["id"])
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for tenant_id, ids in by_tenant.items():
            for job_id, job_counts in (await store.counts_many(conn, tenant_id, ids)).items():
                counts[(tenant_id, job_id)] = job_counts
        for job in rows:
            job_counts = counts.get((job["tenant_id"], job["id"]), {})
            rule = abort_rule_hit(parse_abort(job["abort_rules"]), job_counts)
            if rule is not None:
                touched.update(await store.cancel_in(conn, job, now, rule.describe(), force=False))
                changes.append(JobChange(job["tenant_id"], job["id"], JobStatus.CANCELED.value))
                continue
            pending = sum(job_counts.get(s.value, 0) for s in PENDING)
            if job["target_selection"] == TargetSelection.SNAPSHOT and pending == 0:
                await conn.execute(
                    jobs.update()
                    .where(jobs.c.tenant_id == job["tenant_id"], jobs.c.id == job["id"])
                    .values(status=JobStatus.COMPLETED.value, completed_at=now, updated_at=now)
                )
                changes.append(JobChange(job["tenant_id"], job["id"], JobStatus.COMPLETED.value))

    async def _next_due(self, conn: AsyncConnection) -> list[float]:
        queries = (
            sa.select(sa.func.min(jobs.c.schedule_at)).where(jobs.c.status == JobStatus.SCHEDULED),
            sa.select(sa.func.min(jobs.c.end_at)).where(jobs.c.status == JobStatus.IN_PROGRESS),
            sa.select(sa.func.min(job_executions.c.timeout_at)).where(
                job_executions.c.status == _E.IN_PROGRESS
            ),
        )
        values = [(await conn.execute(q)).scalar_one() for q in queries]
        return [store.as_utc(v).timestamp() for v in values if v is not None]
