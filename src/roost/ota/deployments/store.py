"""The SQL of deployments: rows read, targets resolved, actions kept in step with their job
executions, and the device's software inventory written on success.

Every function works inside the caller's connection or transaction; none commits. Actions are
kept in step by :func:`sync_actions`, which reads the job executions and moves each action to
the step they show: it is idempotent, so the after-change listener, the deployment pass and a
restart may all run it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.errors import NotFound, ValidationFailed
from roost.inventory.devices.query import group_condition
from roost.inventory.tables import devices, firmware, groups
from roost.jobs import store as job_store
from roost.jobs.rules import Targets
from roost.jobs.tables import job_executions
from roost.ota.artifacts.tables import ota_artifacts
from roost.ota.deployments.phases import Step, step_of
from roost.ota.deployments.tables import ota_actions, ota_deployments, ota_installed
from roost.store.queries import as_dicts, fetch_one

# Characters a firmware id may not hold (the id rule: letters, digits, . _ : -).
_NOT_SLUG = re.compile(r"[^A-Za-z0-9._:-]+")
MAX_FIRMWARE_ID = 128


def targets_of(stored: Mapping[str, Any]) -> Targets:
    """The stored targets as the jobs room takes them."""
    return Targets(
        tuple(stored.get("devices") or ()), tuple(stored.get("groups") or ()), stored.get("query")
    )


async def deployment_row(
    conn: AsyncConnection, tenant_id: str, deployment_id: str
) -> dict[str, Any]:
    """A deployment of the tenant, or NotFound."""
    row = await fetch_one(
        conn,
        sa.select(ota_deployments).where(
            ota_deployments.c.tenant_id == tenant_id, ota_deployments.c.id == deployment_id
        ),
    )
    if row is None:
        raise NotFound(f"no deployment {deployment_id!r}")
    return row


async def artifact_rows(
    conn: AsyncConnection, tenant_id: str, artifact_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """The artifacts, in the order asked; 422 listing the unknown ones."""
    rows = as_dicts(
        await conn.execute(
            sa.select(ota_artifacts).where(
                ota_artifacts.c.tenant_id == tenant_id, ota_artifacts.c.id.in_(artifact_ids)
            )
        )
    )
    by_id = {r["id"]: r for r in rows}
    missing = [a for a in artifact_ids if a not in by_id]
    if missing:
        raise ValidationFailed(
            f"unknown artifacts: {', '.join(missing)}",
            [
                {"field": "artifact_ids", "value": a, "message": f"no artifact {a!r}"}
                for a in missing
            ],
        )
    return [by_id[a] for a in artifact_ids]


async def resolve_targets(conn: AsyncConnection, tenant_id: str, targets: Targets) -> list[str]:
    """The ids of the devices the targets select now (422 for unknown devices or groups)."""
    condition = await job_store.target_condition(conn, tenant_id, targets)
    rows = await conn.execute(sa.select(devices.c.id).where(condition).order_by(devices.c.id))
    return [device_id for (device_id,) in rows]


async def group_members(
    conn: AsyncConnection, tenant_id: str, group_ids: Sequence[str]
) -> dict[str, set[str]]:
    """The member device ids of each group (422 for an unknown group)."""
    rows = as_dicts(
        await conn.execute(
            sa.select(groups).where(groups.c.tenant_id == tenant_id, groups.c.id.in_(group_ids))
        )
    )
    missing = sorted(set(group_ids) - {r["id"] for r in rows})
    if missing:
        raise ValidationFailed(
            f"unknown groups in phases: {', '.join(missing)}",
            [{"field": "phases.groups", "value": g, "message": f"no group {g!r}"} for g in missing],
        )
    members: dict[str, set[str]] = {}
    for row in rows:
        found = await conn.execute(
            sa.select(devices.c.id).where(
                devices.c.tenant_id == tenant_id, group_condition(tenant_id, row)
            )
        )
        members[row["id"]] = {device_id for (device_id,) in found}
    return members


async def insert_missing_actions(
    conn: AsyncConnection, deployment: Mapping[str, Any], phase: int, job_id: str, now: datetime
) -> int:
    """An action for each execution of the phase's job that has none yet."""
    has_one = (
        sa.select(ota_actions.c.action_id)
        .where(
            ota_actions.c.tenant_id == job_executions.c.tenant_id,
            ota_actions.c.job_id == job_executions.c.job_id,
            ota_actions.c.device_pk == job_executions.c.device_pk,
        )
        .exists()
    )
    rows = (
        await conn.execute(
            sa.select(job_executions.c.device_pk, job_executions.c.device_id)
            .where(
                job_executions.c.tenant_id == deployment["tenant_id"],
                job_executions.c.job_id == job_id,
                ~has_one,
            )
            .order_by(job_executions.c.device_pk)
        )
    ).all()
    values = [
        {
            "tenant_id": deployment["tenant_id"],
            "deployment_id": deployment["id"],
            "job_id": job_id,
            "phase": phase,
            "device_pk": pk,
            "device_id": device_id,
            "step": Step.QUEUED.value,
            "step_details": None,
            "version_reported": None,
            "updated_at": now,
        }
        for pk, device_id in rows
    ]
    for chunk in job_store.chunks(values):
        await conn.execute(ota_actions.insert(), list(chunk))
    return len(values)


def _joined() -> sa.Select[Any]:
    return sa.select(
        ota_actions,
        job_executions.c.status.label("execution_status"),
        job_executions.c.status_details,
        job_executions.c.released_at,
        job_executions.c.version.label("execution_version"),
        job_executions.c.attempt,
    ).join(
        job_executions,
        sa.and_(
            job_executions.c.tenant_id == ota_actions.c.tenant_id,
            job_executions.c.job_id == ota_actions.c.job_id,
            job_executions.c.device_pk == ota_actions.c.device_pk,
        ),
    )


def joined_actions() -> sa.Select[Any]:
    """Actions with their execution's status, details, release and version."""
    return _joined()


async def sync_actions(
    conn: AsyncConnection,
    tenant_id: str,
    job_id: str,
    now: datetime,
    device_id: str | None = None,
) -> list[dict[str, Any]]:
    """Move the job's actions (or one device's) to the step their executions show; answer the
    actions that have just SUCCEEDED (each exactly once)."""
    stmt = _joined().where(ota_actions.c.tenant_id == tenant_id, ota_actions.c.job_id == job_id)
    if device_id is not None:
        stmt = stmt.where(ota_actions.c.device_id == device_id)
    succeeded = []
    for row in as_dicts(await conn.execute(stmt)):
        details = row["status_details"]
        step = step_of(row["execution_status"], details, row["step"])
        same_details = step == Step.CANCELED or details == row["step_details"]
        if step == row["step"] and same_details:
            continue
        values: dict[str, Any] = {"step": step.value, "updated_at": now}
        if step != Step.CANCELED:
            values["step_details"] = details
        if step == Step.SUCCEEDED:
            reported = (details or {}).get("version")
            values["version_reported"] = str(reported) if reported is not None else None
        result = await conn.execute(
            ota_actions.update()
            .where(ota_actions.c.action_id == row["action_id"], ota_actions.c.step == row["step"])
            .values(**values)
        )
        if result.rowcount == 1 and step == Step.SUCCEEDED and row["step"] != Step.SUCCEEDED:
            succeeded.append({**row, **values})
    return succeeded


def firmware_id_for(model_id: str | None, version: str) -> str:
    """The id of the firmware record made for (model, version) when none exists."""
    text = _NOT_SLUG.sub("-", f"{model_id or 'any'}-{version}").strip("-._:")
    return (text or "fw")[:MAX_FIRMWARE_ID]


async def record_installed(
    conn: AsyncConnection,
    action: Mapping[str, Any],
    artifacts: Sequence[Mapping[str, Any]],
    now: datetime,
) -> None:
    """A device's success: its software inventory, and its firmware record for a firmware
    artifact (found or created for the device's model and version)."""
    tenant_id = action["tenant_id"]
    device = await fetch_one(
        conn, sa.select(devices.c.model_id).where(devices.c.pk == action["device_pk"])
    )
    if device is None:  # deleted meanwhile
        return
    reported = action.get("version_reported")
    for artifact in artifacts:
        version = str(artifact["version"])
        await conn.execute(
            ota_installed.delete().where(
                ota_installed.c.device_pk == action["device_pk"],
                ota_installed.c.name == artifact["name"],
            )
        )
        await conn.execute(
            ota_installed.insert().values(
                tenant_id=tenant_id,
                device_pk=action["device_pk"],
                device_id=action["device_id"],
                name=artifact["name"],
                type=artifact["type"],
                version=version,
                artifact_id=artifact["id"],
                deployment_id=action["deployment_id"],
                installed_at=now,
            )
        )
        if artifact["type"] == "firmware":
            fw_version = reported or version
            await _set_firmware(
                conn, tenant_id, action["device_pk"], device["model_id"], fw_version, now
            )


async def _set_firmware(
    conn: AsyncConnection,
    tenant_id: str,
    device_pk: int,
    model_id: str | None,
    version: str,
    now: datetime,
) -> None:
    found = await fetch_one(
        conn,
        sa.select(firmware.c.id)
        .where(
            firmware.c.tenant_id == tenant_id,
            firmware.c.version == version,
            firmware.c.model_id.is_(None) if model_id is None else firmware.c.model_id == model_id,
        )
        .order_by(firmware.c.id)
        .limit(1),
    )
    if found is not None:
        firmware_id = found["id"]
    else:
        firmware_id = firmware_id_for(model_id, version)
        exists = await fetch_one(
            conn,
            sa.select(firmware.c.id).where(
                firmware.c.tenant_id == tenant_id, firmware.c.id == firmware_id
            ),
        )
        if exists is None:
            await conn.execute(
                firmware.insert().values(
                    tenant_id=tenant_id,
                    id=firmware_id,
                    version=version,
                    model_id=model_id,
                    release_notes="",
                    released_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
    await conn.execute(
        devices.update()
        .where(devices.c.pk == device_pk)
        .values(firmware_id=firmware_id, updated_at=now)
    )


async def installed_of(conn: AsyncConnection, device_pk: int) -> list[dict[str, Any]]:
    """A device's software inventory, by name."""
    return as_dicts(
        await conn.execute(
            sa.select(ota_installed)
            .where(ota_installed.c.device_pk == device_pk)
            .order_by(ota_installed.c.name)
        )
    )


async def recipients(conn: AsyncConnection, tenant_id: str, artifact_id: str) -> set[str]:
    """The devices a deployment of the tenant ever sent ``artifact_id`` to (whatever its state:
    a device may fetch again what it was sent, to retry an install)."""
    deployment_ids = [
        deployment_id
        for deployment_id, artifact_ids in await conn.execute(
            sa.select(ota_deployments.c.id, ota_deployments.c.artifact_ids).where(
                ota_deployments.c.tenant_id == tenant_id
            )
        )
        if artifact_id in (artifact_ids or ())
    ]
    if not deployment_ids:
        return set()
    return set(
        (
            await conn.execute(
                sa.select(ota_actions.c.device_id)
                .where(
                    ota_actions.c.tenant_id == tenant_id,
                    ota_actions.c.deployment_id.in_(deployment_ids),
                )
                .distinct()
            )
        ).scalars()
    )
