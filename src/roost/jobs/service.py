"""Jobs over many devices (AWS IoT Jobs model): executions, rollout, abort, timeouts, retries.

A job names its targets (devices, groups, a device query); creating it makes one execution per
target device, QUEUED (a snapshot of the targets when the job is created, scheduled or not).
Executions are *released* (shown to their device) at the job's rollout rate; the device starts
one (IN_PROGRESS) and ends it (SUCCEEDED, FAILED, REJECTED). Everything that happens later than
the request that caused it happens in the jobs pass (:mod:`roost.jobs.passes`), driven
only by rows, so a restart resumes every job where it was; the (job, device) primary key means
a device never gets a job twice. The SQL both share is in :mod:`roost.jobs.store`.

Semantics chosen where AWS IoT Jobs leaves room: a retry is a new attempt of the same execution
(``attempt`` + 1, QUEUED, released again at the rollout rate), so abort rules count the outcome
of each execution's latest attempt; ``end_at`` stops releases and CANCELs executions never
released (AWS's STOP_ROLLOUT, then the job can complete); when a device leaves a continuous
job's targets its QUEUED execution becomes REMOVED, an IN_PROGRESS one runs on.

The device side (pending list, start-next, updates) is one set of functions for every door: the
HTTP device routes and the MQTT topics of :mod:`roost.jobs.mqtt`, which also sends each device
its pending list after every change.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core import metrics
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.core.device_identity import DeviceIdentity
from roost.core.ids import generate_id
from roost.errors import Conflict, InvalidInput, NotFound
from roost.inventory.service import check_id
from roost.jobs import store
from roost.jobs.lifecycle import EXECUTION_TERMINAL, ExecutionStatus
from roost.jobs.mqtt import JobsOverMQTT
from roost.jobs.passes import JobPasses
from roost.jobs.rules import (
    JOB_TERMINAL,
    PENDING,
    DeviceUpdate,
    JobChange,
    JobStatus,
    parse_device_update,
    parse_job_spec,
    parse_start_options,
)
from roost.jobs.tables import job_executions, jobs
from roost.store.queries import Page, PageRequest, as_dicts, fetch_one

log = logging.getLogger(__name__)

TIMER = "jobs"
CHANGED_SUBJECT = "roost.jobs.changed"

#: A check of a device's execution update before it applies; it raises (e.g. InvalidInput) to
#: refuse it. Given the execution joined with its job (``document``, …) and the update.
UpdateCheck = Callable[[AsyncConnection, Mapping[str, Any], DeviceUpdate], Awaitable[None]]
#: Told of every committed change (device updates, cancels, the pass's moves), after the notices.
ChangeListener = Callable[[Sequence[JobChange]], Awaitable[None]]

_E = ExecutionStatus
EXECUTION_SORTS = ("device_id", "job_id", "status", "queued_at", "updated_at")
JOB_SORTS = ("id", "status", "created_at", "updated_at")


def _statuses(values: Iterable[str]) -> list[str]:
    out = []
    for value in values:
        if value not in ExecutionStatus.__members__:
            raise InvalidInput(
                f"unknown execution status {value!r}; use one of {[s.value for s in _E]}"
            )
        out.append(value)
    return out


def _exec_order(sort: str | None, default: str) -> list[sa.ColumnElement[Any]]:
    spec = sort or default
    descending = spec.startswith("-")
    name = spec.lstrip("-")
    if name not in EXECUTION_SORTS:
        raise InvalidInput(
            f"cannot sort by {name!r}; sortable fields: {', '.join(EXECUTION_SORTS)}"
        )
    column = job_executions.c[name]
    first = column.desc() if descending else column.asc()
    return [first, job_executions.c.job_id.asc(), job_executions.c.device_id.asc()]


class JobService:
    """Jobs, their executions, and the device side of both (see the module docstring)."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps
        self.db = deps.db
        self.clock = deps.clock
        self.passes = JobPasses(self.db, self.clock, self._after_pass)
        metrics.table_gauge(
            "roost_job_executions", "Job executions by status", self.db, job_executions.c.status
        )
        self.mqtt = JobsOverMQTT(self)
        # Hooks of rooms built on jobs (e.g. OTA deployments); jobs stay generic.
        self.update_checks: builtins.list[UpdateCheck] = []
        self.change_listeners: builtins.list[ChangeListener] = []

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Register MQTT routes, hooks and the jobs timer (server only)."""
        self.mqtt.register()
        self.deps.scheduler.every(TIMER, self.deps.settings.timer_check_s, self.passes.run_pass)

    async def close(self) -> None:
        """Nothing to stop: the timer and hook tasks belong to the scheduler and the link."""

    # -- user side: jobs ----------------------------------------------------------------------

    async def create(self, actor: Actor, data: Mapping[str, Any]) -> dict[str, Any]:
        """Create a job and its executions (QUEUED); releases follow in the jobs pass."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        spec = parse_job_spec(data, now)
        job_id = data.get("id")
        job_id = check_id(job_id, "job") if job_id is not None else generate_id("job")
        scheduled = spec.schedule_at is not None and spec.schedule_at > now
        status = (JobStatus.SCHEDULED if scheduled else JobStatus.IN_PROGRESS).value
        async with self.db.write() as conn:
            exists = await fetch_one(
                conn,
                sa.select(jobs.c.id).where(
                    jobs.c.tenant_id == actor.tenant_id, jobs.c.id == job_id
                ),
            )
            if exists:
                raise Conflict(f"a job {job_id!r} exists")
            condition = await store.target_condition(conn, actor.tenant_id, spec.targets)
            row = {
                "tenant_id": actor.tenant_id,
                "id": job_id,
                "description": spec.description,
                "document": spec.document,
                "targets": spec.targets.as_json(),
                "target_selection": spec.target_selection.value,
                "status": status,
                "reason": None,
                "rollout": spec.rollout_raw,
                "abort_rules": spec.abort_raw,
                "retries": spec.retries_raw,
                "timeout_in_progress_s": spec.timeout_in_progress_s,
                "schedule_at": spec.schedule_at,
                "end_at": spec.end_at,
                "maintenance": spec.maintenance_raw,
                "release_tat": None,
                "released_count": 0,
                "created_by": actor.name,
                "created_at": now,
                "updated_at": now,
                "started_at": None if scheduled else now,
                "completed_at": None,
            }
            await conn.execute(jobs.insert().values(**row))
            await store.add_executions(
                conn, self.db.dialect, actor.tenant_id, job_id, condition, now, limit=None
            )
            await audit.record(conn, actor, "create", "job", job_id, after=row, at=now)
            counts = await store.counts(conn, actor.tenant_id, job_id)
        self.deps.scheduler.wake(TIMER)
        self._publish([JobChange(actor.tenant_id, job_id, status=status)])
        return store.job_out(row, counts)

    async def get(self, actor: Actor, job_id: str) -> dict[str, Any]:
        """One job with its execution counts per status."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            row = await store.job_row(conn, actor.tenant_id, job_id)
            return store.job_out(row, await store.counts(conn, actor.tenant_id, job_id))

    async def list(
        self, actor: Actor, statuses: Sequence[str], page: PageRequest
    ) -> Page[dict[str, Any]]:
        """A page of jobs, newest first unless sorted otherwise, optionally by status."""
        actor.require(Role.VIEWER)
        for value in statuses:
            if value not in JobStatus.__members__:
                raise InvalidInput(f"unknown job status {value!r}; use one of {list(JobStatus)}")
        stmt = sa.select(jobs).where(jobs.c.tenant_id == actor.tenant_id)
        if statuses:
            stmt = stmt.where(jobs.c.status.in_(statuses))
        spec = page.sort or "-created_at"
        name = spec.lstrip("-")
        if name not in JOB_SORTS:
            raise InvalidInput(f"cannot sort by {name!r}; sortable fields: {', '.join(JOB_SORTS)}")
        column = jobs.c[name]
        order = [column.desc() if spec.startswith("-") else column.asc(), jobs.c.id.asc()]
        async with self.db.read() as conn:
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
            ).scalar_one()
            rows = as_dicts(
                await conn.execute(stmt.order_by(*order).limit(page.limit).offset(page.offset))
            )
            counts = await store.counts_many(conn, actor.tenant_id, [r["id"] for r in rows])
        items = [store.job_out(r, counts.get(r["id"], {})) for r in rows]
        return Page(items, int(total), page.limit, page.offset)

    async def cancel(
        self, actor: Actor, job_id: str, *, force: bool = False, reason: str | None = None
    ) -> dict[str, Any]:
        """Cancel a job: its QUEUED executions (and with ``force`` IN_PROGRESS ones) too."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        async with self.db.write() as conn:
            row = await store.job_row(conn, actor.tenant_id, job_id)
            if row["status"] in JOB_TERMINAL:
                raise Conflict(f"job {job_id!r} is {row['status']}: it cannot be cancelled")
            text = reason or ("cancelled by " + actor.name)
            touched = await store.cancel_in(conn, row, now, text, force=force)
            await audit.record(
                conn,
                actor,
                "cancel",
                "job",
                job_id,
                before={"status": row["status"]},
                after={"status": JobStatus.CANCELED.value, "force": force, "reason": text},
                at=now,
            )
            after = await store.job_row(conn, actor.tenant_id, job_id)
            counts = await store.counts(conn, actor.tenant_id, job_id)
        await self._after_change(
            touched, [JobChange(actor.tenant_id, job_id, JobStatus.CANCELED.value)]
        )
        return store.job_out(after, counts)

    # -- user side: executions ----------------------------------------------------------------

    async def list_executions(
        self,
        actor: Actor,
        job_id: str,
        statuses: Sequence[str],
        pending: bool | None,
        page: PageRequest,
    ) -> Page[dict[str, Any]]:
        """A job's executions, filtered by status and/or pending (QUEUED or IN_PROGRESS)."""
        actor.require(Role.VIEWER)
        stmt = sa.select(job_executions).where(
            job_executions.c.tenant_id == actor.tenant_id, job_executions.c.job_id == job_id
        )
        stmt = self._filter(stmt, statuses, pending)
        async with self.db.read() as conn:
            await store.job_row(conn, actor.tenant_id, job_id)
            return await self._page(conn, stmt, _exec_order(page.sort, "device_id"), page)

    async def device_executions(
        self,
        actor: Actor,
        device_id: str,
        statuses: Sequence[str],
        pending: bool | None,
        page: PageRequest,
    ) -> Page[dict[str, Any]]:
        """A device's executions of every job, filtered like :meth:`list_executions`."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            pk = await store.device_pk(conn, actor.tenant_id, device_id)
            stmt = sa.select(job_executions).where(job_executions.c.device_pk == pk)
            stmt = self._filter(stmt, statuses, pending)
            return await self._page(conn, stmt, _exec_order(page.sort, "-queued_at"), page)

    async def get_execution(self, actor: Actor, job_id: str, device_id: str) -> dict[str, Any]:
        """One execution of a job."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            await store.job_row(conn, actor.tenant_id, job_id)
            row = await fetch_one(
                conn,
                sa.select(job_executions).where(
                    job_executions.c.tenant_id == actor.tenant_id,
                    job_executions.c.job_id == job_id,
                    job_executions.c.device_id == device_id,
                ),
            )
        if row is None:
            raise NotFound(f"job {job_id!r} has no execution for device {device_id!r}")
        return store.execution_out(row)

    @staticmethod
    def _filter(
        stmt: sa.Select[Any], statuses: Sequence[str], pending: bool | None
    ) -> sa.Select[Any]:
        if statuses:
            stmt = stmt.where(job_executions.c.status.in_(_statuses(statuses)))
        if pending is not None:
            column = job_executions.c.status
            values = [s.value for s in PENDING]
            stmt = stmt.where(column.in_(values) if pending else column.not_in(values))
        return stmt

    @staticmethod
    async def _page(
        conn: AsyncConnection,
        stmt: sa.Select[Any],
        order: builtins.list[sa.ColumnElement[Any]],
        page: PageRequest,
    ) -> Page[dict[str, Any]]:
        total = (
            await conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
        ).scalar_one()
        rows = as_dicts(
            await conn.execute(stmt.order_by(*order).limit(page.limit).offset(page.offset))
        )
        return Page([store.execution_out(r) for r in rows], int(total), page.limit, page.offset)

    # -- device side --------------------------------------------------------------------------

    async def pending(self, identity: DeviceIdentity) -> dict[str, Any]:
        """``{"jobs": [...]}``: the device's IN_PROGRESS and released QUEUED executions."""
        async with self.db.read() as conn:
            lists = await store.pending_lists(conn, [identity.device_pk])
        return {"jobs": lists.get(identity.device_pk, [])}

    async def wait_pending(self, identity: DeviceIdentity, wait_s: float) -> dict[str, Any]:
        """:meth:`pending`, waiting up to ``wait_s`` for one when there is none (long-poll)."""
        answer = await self.pending(identity)
        if answer["jobs"] or wait_s <= 0:
            return answer
        await self.deps.link.wait(identity.device_pk, wait_s)
        return await self.pending(identity)

    async def describe(self, identity: DeviceIdentity, job_id: str) -> dict[str, Any]:
        """One of the device's released executions, with the job document."""
        async with self.db.read() as conn:
            row = await self._device_execution(conn, identity, job_id)
        return {"execution": store.device_view(row)}

    async def start_next(self, identity: DeviceIdentity, raw: Any) -> dict[str, Any]:
        """Start the device's next execution: an IN_PROGRESS one as it is, else the oldest
        released QUEUED one moved to IN_PROGRESS. ``{"execution": null}`` when none waits."""
        options = parse_start_options(raw)
        now = self.clock()
        async with self.db.write() as conn:
            rows = await store.pending_rows(conn, [identity.device_pk], limit=1)
            if not rows:
                return self._answer({"execution": None}, options.client_token)
            row = rows[0]
            if row["status"] == _E.IN_PROGRESS:
                return self._answer({"execution": store.device_view(row)}, options.client_token)
            update = DeviceUpdate(
                _E.IN_PROGRESS, options.status_details, None, options.step_timeout_s
            )
            after, _ = await store.apply_update(conn, row, update, now)
        await self._after_change(
            [identity.device_pk],
            [
                JobChange(
                    identity.tenant_id,
                    row["job_id"],
                    device_id=identity.device_id,
                    execution_status=_E.IN_PROGRESS.value,
                )
            ],
            wake=False,
        )
        return self._answer({"execution": store.device_view(after)}, options.client_token)

    async def update(self, identity: DeviceIdentity, job_id: str, raw: Any) -> dict[str, Any]:
        """Apply a device's execution update; answer ``{status, version, …}``.

        Conflict (409) for an illegal move or a stale ``expected_version``, NotFound for a job
        the device has no released execution of, InvalidInput for a malformed update.
        """
        update = parse_device_update(raw)
        now = self.clock()
        async with self.db.write() as conn:
            row = await self._device_execution(conn, identity, job_id)
            for check in self.update_checks:
                await check(conn, row, update)
            after, retrying = await store.apply_update(conn, row, update, now)
        await self._after_change(
            [identity.device_pk],
            [
                JobChange(
                    identity.tenant_id,
                    job_id,
                    device_id=identity.device_id,
                    execution_status=update.status.value,
                )
            ],
            wake=update.status in EXECUTION_TERMINAL,
        )
        answer: dict[str, Any] = {
            "job_id": job_id,
            "status": update.status.value,
            "version": after["version"],
            "attempt": row["attempt"],
            "status_details": after["status_details"],
            "updated_at": store.rfc3339(now),
        }
        if retrying:
            answer["retry"] = {"attempt": after["attempt"], "status": after["status"]}
        return self._answer(answer, update.client_token)

    @staticmethod
    def _answer(answer: dict[str, Any], client_token: str | None) -> dict[str, Any]:
        if client_token is not None:
            answer["client_token"] = client_token
        return answer

    async def _device_execution(
        self, conn: AsyncConnection, identity: DeviceIdentity, job_id: str
    ) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            store.joined().where(
                job_executions.c.tenant_id == identity.tenant_id,
                job_executions.c.job_id == job_id,
                job_executions.c.device_pk == identity.device_pk,
            ),
        )
        if row is None:
            raise NotFound(f"no job {job_id!r} for device {identity.device_id!r}")
        if row["status"] == _E.QUEUED and row["released_at"] is None:
            raise NotFound(
                f"job {job_id!r} is not released to device {identity.device_id!r} yet: the"
                " rollout releases it later (wait for it on jobs/notify)"
            )
        return row

    # -- after a change -----------------------------------------------------------------------

    async def _after_pass(self, device_pks: Iterable[int], changes: Iterable[JobChange]) -> None:
        await self._after_change(device_pks, changes, wake=False)

    async def _after_change(
        self,
        device_pks: Iterable[int],
        changes: Iterable[JobChange],
        *,
        wake: bool = True,
    ) -> None:
        """After a commit: tell devices, publish notices, and run the pass when asked."""
        pks = set(device_pks)
        if pks:
            await self.mqtt.notify(pks)
        unique = list(dict.fromkeys(changes))
        self._publish(unique)
        for listener in self.change_listeners if unique else ():
            try:
                await listener(unique)
            except Exception:  # a listener's failure must not fail the change (committed)
                log.exception("a job change listener failed")
        if wake:
            self.deps.scheduler.wake(TIMER)

    def _publish(self, notices: builtins.list[JobChange]) -> None:
        if notices:
            self.deps.link.spawn(self._publish_notices(notices))

    async def _publish_notices(self, notices: builtins.list[JobChange]) -> None:
        for notice in notices:
            try:
                await self.deps.bus.publish(CHANGED_SUBJECT, orjson.dumps(notice.notice()))
            except Exception as exc:  # best effort: readers poll the API anyway
                log.warning("could not publish a job change notice: %s", exc)
                return
