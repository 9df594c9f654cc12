"""The device side of deployments: a device's actions as it sees them, and its reports.

Every door calls these through :class:`~roost.ota.deployments.service.DeploymentService`: the
HTTP device routes (``/ota/actions``), hawkBit's DDI (actions by number, feedback) — and a
report goes through the jobs update (:meth:`roost.jobs.service.JobService.update`), so the
rules (moves, the version check) are the same as over MQTT and the HTTP jobs door.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.core import metrics
from roost.core.context import ServiceDeps
from roost.core.device_identity import DeviceIdentity
from roost.errors import Conflict, InvalidInput, NotFound
from roost.jobs import store as job_store
from roost.jobs.lifecycle import ExecutionStatus
from roost.jobs.rules import DeviceUpdate
from roost.jobs.service import JobService
from roost.ota.artifacts.tables import ota_artifacts
from roost.ota.deployments import store
from roost.ota.deployments.phases import FAILURE_STEPS, OPERATION, RUNNING_STEPS, Step
from roost.ota.deployments.tables import ota_actions
from roost.store.queries import as_dicts, fetch_one

if TYPE_CHECKING:
    from roost.ota.deployments.service import Artifacts

#: What a report may say: a device's execution statuses, and CANCELED (the device acknowledges
#: a cancellation).
REPORT_STATUSES = ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED", "CANCELED")

_E = ExecutionStatus

REPORTS = metrics.tally(
    "roost_ota_step_reports", "OTA steps and outcomes reported by devices", ["step"]
)


def _ota_document(document: Any) -> bool:
    return isinstance(document, Mapping) and document.get("operation") == OPERATION


class DeviceSide:
    """A device's actions and reports (see the module docstring)."""

    def __init__(self, deps: ServiceDeps, jobs: JobService, artifacts: Artifacts) -> None:
        self.db = deps.db
        self.clock = deps.clock
        self.jobs = jobs
        self.artifacts = artifacts

    async def actions(self, identity: DeviceIdentity) -> builtins.list[dict[str, Any]]:
        """The device's current actions, oldest first: released and not finished, or cancelled
        while the device had them and not yet acknowledged (``cancel_requested``)."""
        async with self.db.read() as conn:
            rows = as_dicts(
                await conn.execute(
                    store.joined_actions()
                    .where(
                        ota_actions.c.device_pk == identity.device_pk,
                        ota_actions.c.tenant_id == identity.tenant_id,
                    )
                    .order_by(ota_actions.c.action_id)
                )
            )
            current = [r for r in rows if _state(r) in ("pending", "running", "cancel_requested")]
            return [await self._device_view(conn, identity, r) for r in current]

    async def action(self, identity: DeviceIdentity, action_id: int) -> dict[str, Any]:
        """One of the device's actions (any state); NotFound for another device's or none."""
        async with self.db.read() as conn:
            row = await self._device_action(conn, identity, action_id)
            return await self._device_view(conn, identity, row)

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
        SUCCEEDED (``version`` must be one sent), FAILED (``step`` FAILED/ROLLED_BACK), REJECTED,
        or CANCELED (acknowledges a requested cancellation). A QUEUED action is started first
        when the report ends it. Answers the action as :meth:`action_for_device` does."""
        if status not in REPORT_STATUSES:
            raise InvalidInput(f"status must be one of {list(REPORT_STATUSES)}, not {status!r}")
        async with self.db.read() as conn:
            row = await self._device_action(conn, identity, action_id)
        if status == "CANCELED":
            await self._acknowledge_cancel(row)
            return await self.action(identity, action_id)
        raw: dict[str, Any] = dict(details or {})
        if step is not None:
            raw["step"] = step
        if version is not None:
            raw["version"] = version
        if progress is not None:
            raw["progress"] = progress
        if row["execution_status"] == _E.QUEUED and status != "IN_PROGRESS":
            if status != "REJECTED":
                await self.jobs.update(identity, row["job_id"], {"status": "IN_PROGRESS"})
        await self.jobs.update(
            identity, row["job_id"], {"status": status, "status_details": raw or None}
        )
        return await self.action(identity, action_id)

    async def _acknowledge_cancel(self, row: Mapping[str, Any]) -> None:
        if row["execution_status"] != _E.CANCELED:
            raise Conflict(f"action {row['action_id']} was not cancelled")
        details = {**(row["step_details"] or {}), "cancel_acknowledged": True}
        async with self.db.write() as conn:
            await conn.execute(
                ota_actions.update()
                .where(ota_actions.c.action_id == row["action_id"])
                .values(step=Step.CANCELED.value, step_details=details, updated_at=self.clock())
            )

    async def _device_action(
        self, conn: AsyncConnection, identity: DeviceIdentity, action_id: int
    ) -> dict[str, Any]:
        row = await fetch_one(
            conn,
            store.joined_actions().where(
                ota_actions.c.action_id == action_id,
                ota_actions.c.device_pk == identity.device_pk,
                ota_actions.c.tenant_id == identity.tenant_id,
            ),
        )
        if row is None:
            raise NotFound(f"no action {action_id} for device {identity.device_id!r}")
        return row

    async def _device_view(
        self, conn: AsyncConnection, identity: DeviceIdentity, row: Mapping[str, Any]
    ) -> dict[str, Any]:
        deployment = await store.deployment_row(conn, identity.tenant_id, row["deployment_id"])
        artifacts = as_dicts(
            await conn.execute(
                sa.select(ota_artifacts).where(
                    ota_artifacts.c.tenant_id == identity.tenant_id,
                    ota_artifacts.c.id.in_(deployment["artifact_ids"]),
                )
            )
        )
        by_id = {a["id"]: a for a in artifacts}
        state = _state(row)
        view = {
            "action_id": row["action_id"],
            "deployment_id": row["deployment_id"],
            "deployment_name": deployment["name"],
            "job_id": row["job_id"],
            "phase": row["phase"],
            "device_id": row["device_id"],
            "execution_status": row["execution_status"],
            "execution_version": row["execution_version"],
            "step": row["step"],
            "step_details": row["step_details"],
            "version_reported": row["version_reported"],
            "state": state,
            "cancel_requested": state == "cancel_requested",
            "maintenance": deployment["maintenance"],
            # The device's view of each artifact (signed URL included), with what DDI needs.
            "artifacts": [
                {
                    **self.artifacts.device_view(by_id[a], identity),
                    "module_id": by_id[a]["module_id"],
                    "sha1": by_id[a]["sha1"],
                    "md5": by_id[a]["md5"],
                }
                for a in deployment["artifact_ids"]
                if a in by_id
            ],
            "updated_at": job_store.rfc3339(row["updated_at"]),
        }
        return view

    # -- the jobs room's pre-update check -----------------------------------------------------

    async def check_update(
        self, conn: AsyncConnection, row: Mapping[str, Any], update: DeviceUpdate
    ) -> None:
        """Refuse an OTA report that does not fit: an unknown step, or success for a version
        the deployment did not send."""
        document = row["document"]
        if not _ota_document(document):
            return
        details = update.status_details or {}
        step = details.get("step")
        if update.status == _E.IN_PROGRESS and step is not None and step not in RUNNING_STEPS:
            raise InvalidInput(
                f"step {step!r} is not one of {sorted(s.value for s in RUNNING_STEPS)}"
            )
        if update.status == _E.FAILED and step is not None and step not in FAILURE_STEPS:
            raise InvalidInput(
                f"a failure's step is one of {sorted(s.value for s in FAILURE_STEPS)}, not {step!r}"
            )
        if update.status == _E.SUCCEEDED:
            sent = sorted({str(a.get("version")) for a in document.get("artifacts") or ()})
            version = details.get("version")
            if version is None:
                raise InvalidInput(
                    f"a success reports the installed version in status_details.version "
                    f"(this deployment sent {sent})"
                )
            if str(version) not in sent:
                raise InvalidInput(
                    f"version {version!r} was not sent to this device: this deployment sent "
                    f"{sent}; the report is refused"
                )
        REPORTS.inc((str(step or update.status.value),))


def _state(row: Mapping[str, Any]) -> str:
    """An action as a device sees it: waiting (not released), pending, running, finished, or
    cancel_requested (cancelled while the device had it, not yet acknowledged)."""
    status = row["execution_status"]
    if status == _E.QUEUED:
        return "pending" if row["released_at"] is not None else "waiting"
    if status == _E.IN_PROGRESS:
        return "running"
    acknowledged = (row["step_details"] or {}).get("cancel_acknowledged")
    if status == _E.CANCELED and row["released_at"] is not None and not acknowledged:
        return "cancel_requested"
    return "finished"
