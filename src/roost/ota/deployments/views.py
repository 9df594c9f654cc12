"""How deployments and actions are answered: rows as the API shows them, and the overview's
counts (per step, per phase, per site) and failures."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.inventory.tables import devices
from roost.jobs import store as job_store
from roost.jobs.lifecycle import ExecutionStatus
from roost.ota.deployments.phases import FAILURE_STEPS, Step, success_pct
from roost.ota.deployments.tables import ota_actions
from roost.store.queries import as_dicts

# Failures listed in a deployment's overview (the devices route pages through all of them).
MAX_FAILURES_SHOWN = 50
NO_SITE = ""


def job_id_of(deployment_id: str, phase: int) -> str:
    """The job of a deployment's phase."""
    return f"ota-{deployment_id}-{phase}"


def deployment_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """A deployment row as the API answers it (without the overview's counts)."""
    return {
        "id": row["id"],
        "name": row["name"],
        "artifact_ids": row["artifact_ids"],
        "targets": row["targets"],
        "status": row["status"],
        "current_phase": row["current_phase"],
        "reason": row["reason"],
        "rollout": row["rollout"],
        "abort": row["abort_rules"],
        "retries": row["retries"],
        "timeout_in_progress_s": row["timeout_in_progress_s"],
        "maintenance": row["maintenance"],
        "schedule_at": row["schedule_at"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "completed_at": row["completed_at"],
    }


def action_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """An action (joined with its execution and device site) as the user API answers it."""
    return {
        "action_id": row["action_id"],
        "deployment_id": row["deployment_id"],
        "job_id": row["job_id"],
        "phase": row["phase"],
        "device_id": row["device_id"],
        "site_id": row.get("site_id"),
        "step": row["step"],
        "step_details": row["step_details"],
        "execution_status": row["execution_status"],
        "attempt": row["attempt"],
        "version_reported": row["version_reported"],
        "updated_at": row["updated_at"],
    }


def _zeros() -> dict[str, int]:
    return {s.value: 0 for s in Step}


async def overview(
    conn: AsyncConnection, row: Mapping[str, Any], job_counts: Mapping[str, Mapping[str, int]]
) -> dict[str, Any]:
    """The deployment with its counts per step, per phase and per site, and its failures.

    ``job_counts``: each started phase's job executions counted per status.
    """
    tenant_id, deployment_id = row["tenant_id"], row["id"]
    mine = (ota_actions.c.tenant_id == tenant_id, ota_actions.c.deployment_id == deployment_id)
    steps = _zeros()
    by_phase: dict[int, dict[str, int]] = defaultdict(_zeros)
    by_site: dict[str, dict[str, int]] = defaultdict(_zeros)
    counted = await conn.execute(
        sa.select(ota_actions.c.phase, devices.c.site_id, ota_actions.c.step, sa.func.count())
        .select_from(ota_actions.join(devices, devices.c.pk == ota_actions.c.device_pk))
        .where(*mine)
        .group_by(ota_actions.c.phase, devices.c.site_id, ota_actions.c.step)
    )
    for phase, site_id, step, n in counted:
        steps[step] = steps.get(step, 0) + int(n)
        by_phase[int(phase)][step] += int(n)
        by_site[site_id or NO_SITE][step] += int(n)
    failures = as_dicts(
        await conn.execute(
            sa.select(
                ota_actions.c.action_id,
                ota_actions.c.device_id,
                ota_actions.c.phase,
                ota_actions.c.step,
                ota_actions.c.step_details,
                ota_actions.c.updated_at,
                devices.c.site_id,
            )
            .select_from(ota_actions.join(devices, devices.c.pk == ota_actions.c.device_pk))
            .where(*mine, ota_actions.c.step.in_([s.value for s in FAILURE_STEPS]))
            .order_by(ota_actions.c.updated_at.desc(), ota_actions.c.action_id)
            .limit(MAX_FAILURES_SHOWN)
        )
    )
    phases = []
    for i, phase in enumerate(row["phases"]):
        counts = job_counts.get(job_id_of(deployment_id, i))
        pct = success_pct(counts) if counts is not None else None
        phases.append(
            {
                "index": i,
                "name": phase["name"],
                "job_id": job_id_of(deployment_id, i) if counts is not None else None,
                "devices": len(phase["device_ids"]),
                "success_threshold_pct": phase["success_threshold_pct"],
                "min_executed": phase.get("min_executed"),
                "success_pct": pct,
                "steps": by_phase.get(i, _zeros()),
                "executions": {s.value: (counts or {}).get(s.value, 0) for s in ExecutionStatus},
            }
        )
    return {
        **deployment_out(row),
        "devices": sum(len(p["device_ids"]) for p in row["phases"]),
        "steps": steps,
        "phases": phases,
        "sites": [
            {"site_id": site or None, "steps": counts} for site, counts in sorted(by_site.items())
        ],
        "failures": [
            {
                "action_id": f["action_id"],
                "device_id": f["device_id"],
                "site_id": f["site_id"],
                "phase": f["phase"],
                "step": f["step"],
                "details": f["step_details"],
                "updated_at": job_store.rfc3339(f["updated_at"]),
            }
            for f in failures
        ],
    }
