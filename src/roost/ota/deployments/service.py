"""Deployments: artifacts sent to devices in phases, built on jobs — the one logic every door calls.

A deployment resolves its targets once (checking every device's model against the artifacts:
422 listing the devices that do not suit), plans its phases (:mod:`.phases`) and runs each phase
as a job ``ota-<deployment>-<n>`` whose document is ``{"operation": "ota.install",
"deployment_id", "phase", "artifacts": [manifest + url …]}``. Devices report their steps through
the jobs update door (MQTT ``devices/{id}/jobs/{job}/update``, the HTTP device jobs route, and
DDI through :meth:`DeploymentService.report`): ``IN_PROGRESS`` with ``status_details.step``
DOWNLOADING / INSTALLING / REBOOTING, then ``SUCCEEDED`` with ``status_details.version`` (one of
the versions sent, else refused 422) or ``FAILED`` with ``step`` FAILED / ROLLED_BACK and
``error``. Two hooks of the job service keep it in step: a pre-update check (the version rule)
and an after-change listener that moves each action (``ota_actions``) to the step its execution
shows and, on success, writes the device's software inventory and firmware.

The deployment pass (timer ``ota-deployments``) starts a phase's job, and the next phase when
the current one passes its success threshold; below it the deployment HALTS (``resume`` goes on
anyway) — or FAILS after its last phase. Everything is read from rows: a restart resumes.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.audit import service as audit
from roost.core import metrics
from roost.core.access import Actor, Role
from roost.core.context import ServiceDeps
from roost.core.device_identity import DeviceIdentity
from roost.core.ids import generate_id
from roost.errors import Conflict, InvalidInput, NotFound, RoostError, ValidationFailed
from roost.inventory.service import check_id
from roost.inventory.tables import devices
from roost.jobs import store as job_store
from roost.jobs.lifecycle import ExecutionStatus
from roost.jobs.rules import JOB_TERMINAL, JobChange, JobStatus, parse_targets
from roost.jobs.service import JobService
from roost.jobs.tables import jobs
from roost.ota.deployments import store
from roost.ota.deployments.device import DeviceSide
from roost.ota.deployments.phases import (
    DEPLOYMENT_ACTIVE,
    DEPLOYMENT_RUNNING,
    MAX_ARTIFACTS,
    MAX_ID,
    MAX_NAME,
    OPERATION,
    DeploymentStatus,
    Step,
    Verdict,
    check_job_options,
    judge,
    parse_phases,
    plan,
    success_pct,
)
from roost.ota.deployments.tables import ota_actions, ota_deployments
from roost.ota.deployments.views import action_out, deployment_out, job_id_of, overview
from roost.store.queries import Page, PageRequest, as_dicts, fetch_one

log = logging.getLogger(__name__)

TIMER = "ota-deployments"
CHANGED_SUBJECT = "roost.ota.changed"
SORTS = ("id", "name", "status", "created_at", "updated_at")
ACTION_SORTS = ("action_id", "device_id", "phase", "step", "updated_at")


_D = DeploymentStatus
_E = ExecutionStatus


InUseCheck = Callable[[AsyncConnection, str, str], Awaitable[str | None]]
Recipients = Callable[[AsyncConnection, str, str], Awaitable[set[str]]]


class Artifacts(Protocol):
    """What deployments use of the artifact service."""

    in_use_checks: builtins.list[InUseCheck]
    recipients: builtins.list[Recipients]

    def recipients_changed(self, tenant_id: str, artifact_ids: Sequence[str]) -> None: ...

    async def incompatible(
        self,
        conn: AsyncConnection | None,
        tenant_id: str,
        artifact_ids: Sequence[str],
        device_ids: Sequence[str],
    ) -> builtins.list[str]: ...

    def manifest(self, row: Mapping[str, Any]) -> dict[str, Any]: ...

    def device_view(
        self, row: Mapping[str, Any], device: DeviceIdentity | str | None = None
    ) -> dict[str, Any]: ...


class DeploymentService:
    """Deployments of every tenant (see the module docstring)."""

    def __init__(self, deps: ServiceDeps, *, jobs: JobService, artifacts: Artifacts) -> None:
        self.deps = deps
        self.db = deps.db
        self.clock = deps.clock
        self.jobs = jobs
        self.artifacts = artifacts
        self.device = DeviceSide(deps, jobs, artifacts)
        jobs.update_checks.append(self.device.check_update)
        jobs.change_listeners.append(self._on_job_changes)
        artifacts.in_use_checks.append(self._artifact_in_use)
        artifacts.recipients.append(store.recipients)  # a device fetches what it was sent
        metrics.table_gauge(
            "roost_ota_deployments",
            "OTA deployments by status",
            self.db,
            ota_deployments.c.status,
            [s.value for s in _D],
        )
        metrics.table_gauge(
            "roost_ota_actions", "OTA device actions by step", self.db, ota_actions.c.step
        )

    async def start(self) -> None:
        """Register the deployment pass (server only)."""
        self.deps.scheduler.every(TIMER, self.deps.settings.timer_check_s, self.run_pass)

    async def close(self) -> None:
        """Nothing to stop: the timer belongs to the scheduler."""

    # -- user side --------------------------------------------------------------------------

    async def create(self, actor: Actor, data: Mapping[str, Any]) -> dict[str, Any]:
        """Create a deployment (422 for unknown artifacts or targets, or devices whose model
        an artifact does not suit); its first phase's job starts at once (or at schedule_at)."""
        actor.require(Role.OPERATOR)
        now = self.clock()
        deployment_id = data.get("id")
        if deployment_id is None:
            deployment_id = generate_id("dep")
        elif len(check_id(deployment_id, "deployment")) > MAX_ID:
            raise InvalidInput(f"a deployment id has at most {MAX_ID} characters")
        name = data.get("name") or deployment_id
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise InvalidInput(f"name must be text of at most {MAX_NAME} characters")
        artifact_ids = data.get("artifact_ids")
        if (
            not isinstance(artifact_ids, list)
            or not 1 <= len(artifact_ids) <= MAX_ARTIFACTS
            or not all(isinstance(a, str) and a for a in artifact_ids)
        ):
            raise InvalidInput(f"artifact_ids must list 1 to {MAX_ARTIFACTS} artifact ids")
        artifact_ids = list(dict.fromkeys(artifact_ids))
        targets = parse_targets(data.get("targets"))
        phases = parse_phases(data.get("phases"))
        options = check_job_options(data)
        schedule_at = data.get("schedule_at")
        if schedule_at is not None and (
            not isinstance(schedule_at, datetime) or schedule_at.tzinfo is None
        ):
            raise InvalidInput("schedule_at must be a timestamp with a time zone")
        scheduled = schedule_at is not None and schedule_at > now
        async with self.db.write() as conn:
            exists = await fetch_one(
                conn,
                sa.select(ota_deployments.c.id).where(
                    ota_deployments.c.tenant_id == actor.tenant_id,
                    ota_deployments.c.id == deployment_id,
                ),
            )
            if exists:
                raise Conflict(f"a deployment {deployment_id!r} exists")
            artifacts = await store.artifact_rows(conn, actor.tenant_id, artifact_ids)
            target_ids = await store.resolve_targets(conn, actor.tenant_id, targets)
            if not target_ids:
                raise InvalidInput("the targets select no device")
            unsuited = await self.artifacts.incompatible(
                conn, actor.tenant_id, artifact_ids, target_ids
            )
            if unsuited:
                raise ValidationFailed(
                    f"{len(unsuited)} target devices are of a model the artifacts do not suit: "
                    + ", ".join(sorted(unsuited)[:20]),
                    [
                        {"field": "targets", "value": d, "message": "incompatible device model"}
                        for d in sorted(unsuited)
                    ],
                )
            group_ids = sorted({g for p in phases for g in p.groups})
            members = await store.group_members(conn, actor.tenant_id, group_ids)
            planned = plan(phases, target_ids, members)
            row = {
                "tenant_id": actor.tenant_id,
                "id": deployment_id,
                "name": name,
                "artifact_ids": [a["id"] for a in artifacts],
                "targets": targets.as_json(),
                "phases": planned,
                "status": (_D.SCHEDULED if scheduled else _D.IN_PROGRESS).value,
                "current_phase": 0,
                "reason": None,
                "rollout": options.get("rollout"),
                "abort_rules": options.get("abort"),
                "retries": options.get("retries"),
                "timeout_in_progress_s": options.get("timeout_in_progress_s"),
                "maintenance": options.get("maintenance"),
                "schedule_at": schedule_at,
                "created_by": actor.name,
                "created_at": now,
                "updated_at": now,
                "completed_at": None,
            }
            await conn.execute(ota_deployments.insert().values(**row))
            await audit.record(
                conn, actor, "create", "deployment", deployment_id, after=row, at=now
            )
        try:
            await self._start_phase(row, 0)
        except RoostError as exc:
            await self._finish(row, _D.FAILED, f"the first phase could not start: {exc.detail}")
        self.deps.scheduler.wake(TIMER)
        self._publish({"tenant_id": actor.tenant_id, "deployment_id": deployment_id})
        return await self.get(actor, deployment_id)

    async def get(self, actor: Actor, deployment_id: str) -> dict[str, Any]:
        """A deployment with its overview: counts per step, per phase, per site, failures."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            row = await store.deployment_row(conn, actor.tenant_id, deployment_id)
            job_ids = [job_id_of(deployment_id, i) for i in range(len(row["phases"]))]
            counts = await job_store.counts_many(conn, actor.tenant_id, job_ids)
            started = {
                j
                for (j,) in await conn.execute(
                    sa.select(jobs.c.id).where(
                        jobs.c.tenant_id == actor.tenant_id, jobs.c.id.in_(job_ids)
                    )
                )
            }
            return await overview(conn, row, {j: counts.get(j, {}) for j in started})

    async def list(
        self, actor: Actor, statuses: Sequence[str], page: PageRequest
    ) -> Page[dict[str, Any]]:
        """A page of deployments, newest first unless sorted otherwise."""
        actor.require(Role.VIEWER)
        for value in statuses:
            if value not in _D.__members__:
                raise InvalidInput(f"unknown deployment status {value!r}; use one of {list(_D)}")
        stmt = sa.select(ota_deployments).where(ota_deployments.c.tenant_id == actor.tenant_id)
        if statuses:
            stmt = stmt.where(ota_deployments.c.status.in_(statuses))
        order = _order(page.sort or "-created_at", SORTS, ota_deployments, "id")
        async with self.db.read() as conn:
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
            ).scalar_one()
            rows = as_dicts(
                await conn.execute(stmt.order_by(*order).limit(page.limit).offset(page.offset))
            )
        return Page([deployment_out(r) for r in rows], int(total), page.limit, page.offset)

    async def actions(
        self,
        actor: Actor,
        deployment_id: str,
        *,
        step: Sequence[str] = (),
        site_id: str | None = None,
        phase: int | None = None,
        page: PageRequest,
    ) -> Page[dict[str, Any]]:
        """The deployment's devices (actions) with their step and failure details, filtered."""
        actor.require(Role.VIEWER)
        for value in step:
            if value not in Step.__members__:
                raise InvalidInput(f"unknown step {value!r}; use one of {[s.value for s in Step]}")
        stmt = (
            store.joined_actions()
            .add_columns(devices.c.site_id)
            .join(devices, devices.c.pk == ota_actions.c.device_pk)
            .where(
                ota_actions.c.tenant_id == actor.tenant_id,
                ota_actions.c.deployment_id == deployment_id,
            )
        )
        if step:
            stmt = stmt.where(ota_actions.c.step.in_(step))
        if site_id is not None:
            stmt = stmt.where(devices.c.site_id == site_id)
        if phase is not None:
            stmt = stmt.where(ota_actions.c.phase == phase)
        order = _order(page.sort or "device_id", ACTION_SORTS, ota_actions, "action_id")
        async with self.db.read() as conn:
            await store.deployment_row(conn, actor.tenant_id, deployment_id)
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery()))
            ).scalar_one()
            rows = as_dicts(
                await conn.execute(stmt.order_by(*order).limit(page.limit).offset(page.offset))
            )
        return Page([action_out(r) for r in rows], int(total), page.limit, page.offset)

    async def cancel(
        self, actor: Actor, deployment_id: str, *, reason: str | None = None
    ) -> dict[str, Any]:
        """Cancel a deployment: its running phase jobs are cancelled, in-progress executions
        too (a DDI client then sees a cancelAction)."""
        actor.require(Role.OPERATOR)
        text = reason or f"cancelled by {actor.name}"
        async with self.db.write() as conn:
            row = await store.deployment_row(conn, actor.tenant_id, deployment_id)
            if row["status"] not in DEPLOYMENT_ACTIVE:
                raise Conflict(f"deployment {deployment_id!r} is {row['status']}: it is over")
            await self._set_status(conn, row, _D.CANCELED, text, final=True)
            await audit.record(
                conn,
                actor,
                "cancel",
                "deployment",
                deployment_id,
                before={"status": row["status"]},
                after={"status": _D.CANCELED.value, "reason": text},
                at=self.clock(),
            )
        for n in range(row["current_phase"] + 1):
            try:
                await self.jobs.cancel(actor, job_id_of(deployment_id, n), force=True, reason=text)
            except (Conflict, NotFound):  # already over, or never started
                continue
        self._publish({"tenant_id": actor.tenant_id, "deployment_id": deployment_id})
        return await self.get(actor, deployment_id)

    async def resume(self, actor: Actor, deployment_id: str) -> dict[str, Any]:
        """Go on with a HALTED deployment: its next phase starts despite the threshold."""
        actor.require(Role.OPERATOR)
        async with self.db.write() as conn:
            row = await store.deployment_row(conn, actor.tenant_id, deployment_id)
            if row["status"] != _D.HALTED:
                raise Conflict(
                    f"deployment {deployment_id!r} is {row['status']}: only a HALTED one resumes"
                )
            nxt = row["current_phase"] + 1
            await conn.execute(
                _where(row).values(
                    status=_D.IN_PROGRESS.value,
                    current_phase=nxt,
                    reason=None,
                    updated_at=self.clock(),
                )
            )
            await audit.record(
                conn,
                actor,
                "resume",
                "deployment",
                deployment_id,
                before={"status": row["status"], "current_phase": row["current_phase"]},
                after={"status": _D.IN_PROGRESS.value, "current_phase": nxt},
                at=self.clock(),
            )
        row = {**row, "current_phase": nxt, "status": _D.IN_PROGRESS.value}
        try:
            await self._start_phase(row, nxt)
        except RoostError as exc:
            await self._finish(row, _D.FAILED, f"phase {nxt} could not start: {exc.detail}")
        self.deps.scheduler.wake(TIMER)
        self._publish({"tenant_id": actor.tenant_id, "deployment_id": deployment_id})
        return await self.get(actor, deployment_id)

    async def installed(self, actor: Actor, device_id: str) -> builtins.list[dict[str, Any]]:
        """A device's software inventory (what deployments installed on it)."""
        actor.require(Role.VIEWER)
        async with self.db.read() as conn:
            pk = await job_store.device_pk(conn, actor.tenant_id, device_id)
            return await store.installed_of(conn, pk)

    # -- device side (every door: HTTP, MQTT via jobs, DDI): see roost.ota.deployments.device

    async def device_actions(self, identity: DeviceIdentity) -> builtins.list[dict[str, Any]]:
        """The device's current actions, oldest first: released and not finished, or cancelled
        while the device had them and not yet acknowledged (``cancel_requested``)."""
        return await self.device.actions(identity)

    async def action_for_device(self, identity: DeviceIdentity, action_id: int) -> dict[str, Any]:
        """One of the device's actions (any state); NotFound for another device's or none."""
        return await self.device.action(identity, action_id)

    async def report(
        self,
        identity: DeviceIdentity,
        action_id: int,
        status: str,
        *,
        step: str | None = None,
        details: Mapping[str, Any] | None = None,
        version: str | None = None,
        progress: float | None = None,
    ) -> dict[str, Any]:
        """A device's feedback on an action, applied through the jobs update (one logic for
        every door): ``status`` IN_PROGRESS (``step`` DOWNLOADING/INSTALLING/REBOOTING),
        SUCCEEDED (``version`` must be one sent, else 422), FAILED (``step`` FAILED or
        ROLLED_BACK, ``details`` e.g. ``{"error": …}``), REJECTED, or CANCELED (acknowledges a
        requested cancellation; 409 when none was). A QUEUED action is started first when the
        report ends it. Answers the action as :meth:`action_for_device` does."""
        return await self.device.report(
            identity,
            action_id,
            status,
            step=step,
            details=details,
            version=version,
            progress=progress,
        )

    # -- hooks on jobs ----------------------------------------------------------------------

    async def _on_job_changes(self, changes: Sequence[JobChange]) -> None:
        """Keep the actions of OTA jobs in step with their executions (after each commit)."""
        wanted: dict[tuple[str, str], set[str | None]] = {}
        for change in changes:
            if change.job_id.startswith("ota-"):
                wanted.setdefault((change.tenant_id, change.job_id), set()).add(change.device_id)
        if not wanted:
            return
        for (tenant_id, job_id), device_ids in wanted.items():
            one = next(iter(device_ids)) if len(device_ids) == 1 else None
            await self._sync(tenant_id, job_id, one)
        if any(c.status is not None or c.execution_status in _ENDS for c in changes):
            self.deps.scheduler.wake(TIMER)
        for tenant_id, job_id in wanted:
            self._publish({"tenant_id": tenant_id, "job_id": job_id})

    async def _sync(self, tenant_id: str, job_id: str, device_id: str | None = None) -> None:
        now = self.clock()
        async with self.db.write() as conn:
            succeeded = await store.sync_actions(conn, tenant_id, job_id, now, device_id)
            if not succeeded:
                return
            job = await job_store.job_row(conn, tenant_id, job_id)
            artifacts = job["document"].get("artifacts") or []
            for action in succeeded:
                await store.record_installed(conn, action, artifacts, now)

    async def _artifact_in_use(
        self, conn: AsyncConnection, tenant_id: str, artifact_id: str
    ) -> str | None:
        rows = await conn.execute(
            sa.select(ota_deployments.c.id, ota_deployments.c.artifact_ids).where(
                ota_deployments.c.tenant_id == tenant_id,
                ota_deployments.c.status.in_([s.value for s in DEPLOYMENT_ACTIVE]),
            )
        )
        for deployment_id, artifact_ids in rows:
            if artifact_id in (artifact_ids or ()):
                return f"deployment {deployment_id!r}"
        return None

    # -- the deployment pass ----------------------------------------------------------------

    async def run_pass(self) -> float | None:
        """Drive every running deployment: start phases, judge them, halt or finish."""
        async with self.db.read() as conn:
            rows = as_dicts(
                await conn.execute(
                    sa.select(ota_deployments).where(
                        ota_deployments.c.status.in_([s.value for s in DEPLOYMENT_RUNNING])
                    )
                )
            )
        for row in rows:
            try:
                await self._advance(row)
            except RoostError as exc:
                log.warning("deployment %s of %s failed: %s", row["id"], row["tenant_id"], exc)
                await self._finish(row, _D.FAILED, exc.detail)
        return None

    async def _advance(self, row: dict[str, Any]) -> None:
        n = row["current_phase"]
        phase = row["phases"][n]
        job_id = job_id_of(row["id"], n)
        verdict = Verdict.PASS
        job_done = True
        if phase["device_ids"]:
            async with self.db.read() as conn:
                job = await fetch_one(
                    conn,
                    sa.select(jobs).where(
                        jobs.c.tenant_id == row["tenant_id"], jobs.c.id == job_id
                    ),
                )
            if job is None:
                await self._start_phase(row, n)
                return
            async with self.db.write() as conn:
                await store.insert_missing_actions(conn, row, n, job_id, self.clock())
            await self._sync(row["tenant_id"], job_id)
            async with self.db.read() as conn:
                counts = await job_store.counts(conn, row["tenant_id"], job_id)
            if job["status"] == JobStatus.SCHEDULED:
                return
            if row["status"] == _D.SCHEDULED:
                async with self.db.write() as conn:
                    await self._set_status(conn, row, _D.IN_PROGRESS, None)
            if job["status"] == JobStatus.CANCELED:
                await self._finish(row, _D.FAILED, f"phase {phase['name']!r}: {job['reason']}")
                return
            verdict = judge(phase, job["status"], counts)
            job_done = job["status"] in JOB_TERMINAL
            pct = success_pct(counts)
        else:
            pct = None
        if verdict == Verdict.WAIT:
            return
        last = n + 1 >= len(row["phases"])
        if verdict == Verdict.PASS:
            if last:
                if not job_done:
                    return  # the last phase passes only once its job is done
                await self._finish(row, _D.SUCCEEDED, None)
                return
            async with self.db.write() as conn:
                moved = await conn.execute(
                    _where(row)
                    .where(ota_deployments.c.current_phase == n)
                    .values(current_phase=n + 1, updated_at=self.clock())
                )
            if moved.rowcount == 1:
                await self._start_phase({**row, "current_phase": n + 1}, n + 1)
                self._publish({"tenant_id": row["tenant_id"], "deployment_id": row["id"]})
            return
        reason = (
            f"phase {phase['name']!r}: {pct or 0:.0f}% of its executed devices succeeded, "
            f"below its threshold of {phase['success_threshold_pct']:g}%"
        )
        await self._finish(row, _D.FAILED if last else _D.HALTED, reason)

    async def _start_phase(self, row: Mapping[str, Any], n: int) -> None:
        """Create phase ``n``'s job (once) and its actions."""
        phase = row["phases"][n]
        if not phase["device_ids"]:
            return
        job_id = job_id_of(row["id"], n)
        async with self.db.read() as conn:
            artifacts = await store.artifact_rows(conn, row["tenant_id"], row["artifact_ids"])
        document = {
            "operation": OPERATION,
            "deployment_id": row["id"],
            "phase": n,
            "phase_name": phase["name"],
            # Device-independent (no signed URL): devices get theirs from the actions route/DDI.
            "artifacts": [self.artifacts.device_view(a) for a in artifacts],
        }
        data: dict[str, Any] = {
            "id": job_id,
            "description": f"deployment {row['name']}, phase {phase['name']}",
            "document": document,
            "targets": {"devices": phase["device_ids"]},
        }
        for column, key in (
            ("rollout", "rollout"),
            ("abort_rules", "abort"),
            ("retries", "retries"),
            ("timeout_in_progress_s", "timeout_in_progress_s"),
            ("maintenance", "maintenance"),
        ):
            if row[column] is not None:
                data[key] = row[column]
        if n == 0 and row["schedule_at"] is not None and row["schedule_at"] > self.clock():
            data["schedule_at"] = row["schedule_at"]
        actor = Actor(row["tenant_id"], row["created_by"] or "ota", Role.OPERATOR)
        try:
            await self.jobs.create(actor, data)
        except Conflict:
            log.debug("the job %s exists already", job_id)
        async with self.db.write() as conn:
            await store.insert_missing_actions(conn, row, n, job_id, self.clock())
        self.artifacts.recipients_changed(row["tenant_id"], row["artifact_ids"])

    async def _finish(
        self, row: Mapping[str, Any], status: DeploymentStatus, reason: str | None
    ) -> None:
        async with self.db.write() as conn:
            await self._set_status(conn, row, status, reason, final=status != _D.HALTED)
        log.info("deployment %s of %s is %s: %s", row["id"], row["tenant_id"], status, reason)
        self._publish({"tenant_id": row["tenant_id"], "deployment_id": row["id"], "status": status})

    async def _set_status(
        self,
        conn: AsyncConnection,
        row: Mapping[str, Any],
        status: DeploymentStatus,
        reason: str | None,
        *,
        final: bool = False,
    ) -> None:
        now = self.clock()
        values: dict[str, Any] = {"status": status.value, "reason": reason, "updated_at": now}
        if final:
            values["completed_at"] = now
        await conn.execute(_where(row).values(**values))

    def _publish(self, notice: Mapping[str, Any]) -> None:
        self.deps.link.spawn(self._publish_notice(dict(notice)))

    async def _publish_notice(self, notice: dict[str, Any]) -> None:
        try:
            await self.deps.bus.publish(CHANGED_SUBJECT, orjson.dumps(notice))
        except Exception as exc:  # best effort: readers poll the API anyway
            log.warning("could not publish an OTA change notice: %s", exc)


_ENDS = frozenset(
    s.value for s in (_E.SUCCEEDED, _E.FAILED, _E.TIMED_OUT, _E.REJECTED, _E.CANCELED)
)


def _where(row: Mapping[str, Any]) -> sa.Update:
    return ota_deployments.update().where(
        ota_deployments.c.tenant_id == row["tenant_id"], ota_deployments.c.id == row["id"]
    )


def _order(
    spec: str, allowed: Sequence[str], table: sa.Table, tie: str
) -> builtins.list[sa.ColumnElement[Any]]:
    name = spec.lstrip("-")
    if name not in allowed:
        raise InvalidInput(f"cannot sort by {name!r}; sortable fields: {', '.join(allowed)}")
    column = table.c[name]
    return [column.desc() if spec.startswith("-") else column.asc(), table.c[tie].asc()]
