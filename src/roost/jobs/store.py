"""The SQL of jobs: executions moved, cancelled, created from targets, listed and counted.

Shared by the job service (requests of users and devices) and the jobs pass
(:mod:`roost.jobs.passes`). Every function works inside the caller's connection or
transaction; none commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.errors import Conflict, InvalidInput, NotFound, ValidationFailed
from roost.inventory.devices.query import group_condition
from roost.inventory.tables import device_tags, devices, groups
from roost.jobs.lifecycle import ExecutionStatus, execution_move
from roost.jobs.rollout import parse_retries, retry_allowed
from roost.jobs.rules import DeviceUpdate, JobStatus, Targets
from roost.jobs.tables import job_executions, jobs
from roost.store.queries import as_dicts, fetch_one

# Pending executions listed to a device at once (AWS lists up to 100 per notification page).
MAX_LISTED = 100
# SQL IN lists are cut to this many values (well under SQLite's variable limit).
CHUNK = 500

_E = ExecutionStatus


def job_out(row: Mapping[str, Any], counts: Mapping[str, int]) -> dict[str, Any]:
    """A job row as the API answers it, with its execution counts per status."""
    return {
        "id": row["id"],
        "description": row["description"],
        "document": row["document"],
        "targets": row["targets"],
        "target_selection": row["target_selection"],
        "status": row["status"],
        "reason": row["reason"],
        "rollout": row["rollout"],
        "abort": row["abort_rules"],
        "retries": row["retries"],
        "timeout_in_progress_s": row["timeout_in_progress_s"],
        "schedule_at": row["schedule_at"],
        "end_at": row["end_at"],
        "maintenance": row["maintenance"],
        "released_count": row["released_count"],
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "started_at": row["started_at"],
        "completed_at": row["completed_at"],
        "counts": {s.value: counts.get(s.value, 0) for s in ExecutionStatus},
    }


def execution_out(row: Mapping[str, Any]) -> dict[str, Any]:
    """An execution row as the API answers it."""
    return {
        "job_id": row["job_id"],
        "device_id": row["device_id"],
        "status": row["status"],
        "status_details": row["status_details"],
        "version": row["version"],
        "attempt": row["attempt"],
        "queued_at": row["queued_at"],
        "released_at": row["released_at"],
        "started_at": row["started_at"],
        "updated_at": row["updated_at"],
        "completed_at": row["completed_at"],
        "timeout_at": row["timeout_at"],
    }


def device_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """An execution as its device sees it (JSON-ready: timestamps as RFC 3339 text)."""
    view = {
        "job_id": row["job_id"],
        "status": row["status"],
        "document": row["document"],
        "version": row["version"],
        "attempt": row["attempt"],
        "status_details": row["status_details"],
        "queued_at": row["queued_at"],
        "started_at": row["started_at"],
        "updated_at": row["updated_at"],
    }
    plain: dict[str, Any] = orjson.loads(orjson.dumps(view, option=orjson.OPT_UTC_Z))
    return plain


def chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    """``values`` cut into IN-list sized pieces."""
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _requeue(attempt: int, retried: Mapping[str, int], now: datetime) -> dict[str, Any]:
    """The columns of a retry: a new attempt, QUEUED and waiting for release again."""
    return {
        "status": _E.QUEUED.value,
        "attempt": attempt + 1,
        "retried": dict(retried),
        "queued_at": now,
        "released_at": None,
        "started_at": None,
        "completed_at": None,
        "timeout_at": None,
    }


def _query_condition(query: Mapping[str, Any]) -> sa.ColumnElement[bool]:
    parts: list[sa.ColumnElement[bool]] = [
        devices.c[name] == value for name, value in query.items() if name != "tags"
    ]
    for key, value in (query.get("tags") or {}).items():
        cond = sa.and_(device_tags.c.device_pk == devices.c.pk, device_tags.c.key == key)
        if value is not None:
            cond = sa.and_(cond, device_tags.c.value == value)
        parts.append(sa.exists(sa.select(1).select_from(device_tags).where(cond)))
    return sa.and_(*parts)


def rfc3339(value: datetime) -> str:
    """A timestamp as answers carry it: RFC 3339, UTC, with a ``Z``."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def as_utc(value: datetime) -> datetime:
    """A timestamp read back from an aggregate, made timezone-aware (UTC) if it is not."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def apply_update(
    conn: AsyncConnection, row: Mapping[str, Any], update: DeviceUpdate, now: datetime
) -> tuple[dict[str, Any], bool]:
    """Move one execution as the device asks (optimistically); answer the row after and
    whether a retry was queued."""
    if update.expected_version is not None and update.expected_version != row["version"]:
        raise Conflict(
            f"version mismatch: expected {update.expected_version}, "
            f"the execution is at version {row['version']}",
            code="VersionMismatch",
        )
    current = _E(row["status"])
    try:
        target = execution_move(current, update.status)
    except Conflict as exc:
        raise Conflict(exc.detail, code="InvalidStateTransition") from exc
    values: dict[str, Any] = {
        "status": target.value,
        "version": row["version"] + 1,
        "updated_at": now,
    }
    if update.status_details is not None:
        values["status_details"] = update.status_details
    if target == _E.IN_PROGRESS:
        started = row["started_at"] or now
        values["started_at"] = started
        deadlines = []
        if row["timeout_in_progress_s"]:
            deadlines.append(started + timedelta(seconds=row["timeout_in_progress_s"]))
        if update.step_timeout_s is not None:
            deadlines.append(now + timedelta(seconds=update.step_timeout_s))
        elif row["timeout_at"] is not None:
            deadlines.append(row["timeout_at"])
        values["timeout_at"] = min(deadlines) if deadlines else None
    else:
        values["completed_at"] = now
        values["timeout_at"] = None
    retrying = False
    if target in (_E.FAILED, _E.TIMED_OUT) and row["job_status"] == JobStatus.IN_PROGRESS:
        retried = dict(row["retried"] or {})
        if retry_allowed(parse_retries(row["retries"]), target, retried):
            retrying = True
            retried[target.value] = retried.get(target.value, 0) + 1
            values.update(_requeue(row["attempt"], retried, now))
            values["version"] = row["version"] + 2
    result = await conn.execute(
        job_executions.update()
        .where(
            job_executions.c.tenant_id == row["tenant_id"],
            job_executions.c.job_id == row["job_id"],
            job_executions.c.device_pk == row["device_pk"],
            job_executions.c.version == row["version"],
        )
        .values(**values)
    )
    if result.rowcount != 1:
        raise Conflict("the execution changed meanwhile; read it again", code="VersionMismatch")
    return {**row, **values}, retrying


async def cancel_in(
    conn: AsyncConnection,
    job: Mapping[str, Any],
    now: datetime,
    reason: str,
    *,
    force: bool,
) -> list[int]:
    """Cancel a job in the caller's transaction; answer the devices whose executions moved."""
    statuses = [_E.QUEUED] + ([_E.IN_PROGRESS] if force else [])
    for status in statuses:
        execution_move(status, _E.CANCELED)
    await conn.execute(
        jobs.update()
        .where(jobs.c.tenant_id == job["tenant_id"], jobs.c.id == job["id"])
        .values(status=JobStatus.CANCELED.value, reason=reason, completed_at=now, updated_at=now)
    )
    where = (
        job_executions.c.tenant_id == job["tenant_id"],
        job_executions.c.job_id == job["id"],
        job_executions.c.status.in_([s.value for s in statuses]),
    )
    pks = [pk for (pk,) in await conn.execute(sa.select(job_executions.c.device_pk).where(*where))]
    await conn.execute(
        job_executions.update()
        .where(*where)
        .values(
            status=_E.CANCELED.value,
            version=job_executions.c.version + 1,
            updated_at=now,
            completed_at=now,
            timeout_at=None,
        )
    )
    return pks


async def target_condition(
    conn: AsyncConnection, tenant_id: str, targets: Targets, *, missing_ok: bool = False
) -> sa.ColumnElement[bool]:
    """SQL selecting the job's target devices; unknown devices or groups → 422."""
    parts: list[sa.ColumnElement[bool]] = []
    errors = []
    if targets.devices:
        found = {
            d
            for (d,) in await conn.execute(
                sa.select(devices.c.id).where(
                    devices.c.tenant_id == tenant_id, devices.c.id.in_(targets.devices)
                )
            )
        }
        errors += [
            {"field": "targets.devices", "value": d, "message": f"no device {d!r}"}
            for d in targets.devices
            if d not in found
        ]
        parts.append(devices.c.id.in_(targets.devices))
    if targets.groups:
        rows = as_dicts(
            await conn.execute(
                sa.select(groups).where(
                    groups.c.tenant_id == tenant_id, groups.c.id.in_(targets.groups)
                )
            )
        )
        known = {r["id"] for r in rows}
        errors += [
            {"field": "targets.groups", "value": g, "message": f"no group {g!r}"}
            for g in targets.groups
            if g not in known
        ]
        parts += [group_condition(tenant_id, r) for r in rows]
    if targets.query is not None:
        parts.append(_query_condition(targets.query))
    if errors and not missing_ok:
        names = ", ".join(e["value"] for e in errors)
        raise ValidationFailed(f"unknown targets: {names}", errors)
    if not parts:
        raise InvalidInput("the job has no targets left")
    return sa.and_(devices.c.tenant_id == tenant_id, sa.or_(*parts))


async def add_executions(
    conn: AsyncConnection,
    dialect: str,
    tenant_id: str,
    job_id: str,
    condition: sa.ColumnElement[bool],
    now: datetime,
    *,
    limit: int | None,
) -> int:
    """Create QUEUED executions for target devices that have none yet (an anti-join)."""
    has_one = (
        sa.select(job_executions.c.device_pk)
        .where(
            job_executions.c.tenant_id == tenant_id,
            job_executions.c.job_id == job_id,
            job_executions.c.device_pk == devices.c.pk,
        )
        .exists()
    )
    stmt = sa.select(devices.c.pk, devices.c.id).where(condition, ~has_one).order_by(devices.c.pk)
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = (await conn.execute(stmt)).all()
    if not rows:
        return 0
    insert = (
        pg_insert(job_executions) if dialect == "postgresql" else sqlite_insert(job_executions)
    ).on_conflict_do_nothing(index_elements=["tenant_id", "job_id", "device_pk"])
    values = [
        {
            "tenant_id": tenant_id,
            "job_id": job_id,
            "device_pk": pk,
            "device_id": device_id,
            "status": _E.QUEUED.value,
            "status_details": None,
            "version": 1,
            "attempt": 1,
            "retried": None,
            "queued_at": now,
            "released_at": None,
            "started_at": None,
            "updated_at": now,
            "completed_at": None,
            "timeout_at": None,
        }
        for pk, device_id in rows
    ]
    for chunk in chunks(values):
        await conn.execute(insert, list(chunk))
    return len(rows)


async def remove_departed(
    conn: AsyncConnection,
    tenant_id: str,
    job_id: str,
    condition: sa.ColumnElement[bool],
    now: datetime,
) -> list[int]:
    """Move the QUEUED executions of devices the targets no longer select to REMOVED; answer
    those devices."""
    execution_move(_E.QUEUED, _E.REMOVED)
    still_targeted = (
        sa.select(devices.c.pk)
        .where(condition, devices.c.pk == job_executions.c.device_pk)
        .exists()
    )
    pks = [
        pk
        for (pk,) in await conn.execute(
            sa.select(job_executions.c.device_pk).where(
                job_executions.c.tenant_id == tenant_id,
                job_executions.c.job_id == job_id,
                job_executions.c.status == _E.QUEUED,
                ~still_targeted,
            )
        )
    ]
    for chunk in chunks(pks):
        await conn.execute(
            job_executions.update()
            .where(
                job_executions.c.tenant_id == tenant_id,
                job_executions.c.job_id == job_id,
                job_executions.c.status == _E.QUEUED,
                job_executions.c.device_pk.in_(chunk),
            )
            .values(
                status=_E.REMOVED.value,
                status_details={"reason": "the device left the job's targets"},
                version=job_executions.c.version + 1,
                updated_at=now,
                completed_at=now,
            )
        )
    return pks


def joined() -> sa.Select[Any]:
    """Executions with the job fields an update needs."""
    return sa.select(
        job_executions,
        jobs.c.status.label("job_status"),
        jobs.c.document,
        jobs.c.retries,
        jobs.c.timeout_in_progress_s,
    ).join(
        jobs,
        sa.and_(
            jobs.c.tenant_id == job_executions.c.tenant_id, jobs.c.id == job_executions.c.job_id
        ),
    )


async def pending_rows(
    conn: AsyncConnection, pks: Sequence[int], *, limit: int | None = None
) -> list[dict[str, Any]]:
    """The pending executions (IN_PROGRESS first, then released QUEUED) of devices.

    ``limit`` bounds the rows of each query (meant for one device: its next executions).
    """
    in_progress_first = sa.case((job_executions.c.status == _E.IN_PROGRESS, 0), else_=1)
    rows: list[dict[str, Any]] = []
    for chunk in chunks(list(pks)):
        stmt = (
            joined()
            .where(
                job_executions.c.device_pk.in_(chunk),
                sa.or_(
                    job_executions.c.status == _E.IN_PROGRESS,
                    sa.and_(
                        job_executions.c.status == _E.QUEUED,
                        job_executions.c.released_at.is_not(None),
                    ),
                ),
            )
            .order_by(
                job_executions.c.device_pk,
                in_progress_first,
                job_executions.c.released_at,
                job_executions.c.job_id,
            )
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        rows += as_dicts(await conn.execute(stmt))
    return rows


async def pending_lists(
    conn: AsyncConnection, pks: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """Each device's pending list as the device sees it (at most MAX_LISTED items)."""
    lists: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in await pending_rows(conn, pks):
        if len(lists[row["device_pk"]]) < MAX_LISTED:
            lists[row["device_pk"]].append(device_view(row))
    return lists


async def counts(conn: AsyncConnection, tenant_id: str, job_id: str) -> dict[str, int]:
    """A job's executions counted per status."""
    return (await counts_many(conn, tenant_id, [job_id])).get(job_id, {})


async def counts_many(
    conn: AsyncConnection, tenant_id: str, job_ids: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Several jobs' executions counted per status (job id → status → number)."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for chunk in chunks(list(job_ids)):
        for job_id, status, n in await conn.execute(
            sa.select(job_executions.c.job_id, job_executions.c.status, sa.func.count())
            .where(job_executions.c.tenant_id == tenant_id, job_executions.c.job_id.in_(chunk))
            .group_by(job_executions.c.job_id, job_executions.c.status)
        ):
            counts[job_id][status] = int(n)
    return counts


async def job_row(conn: AsyncConnection, tenant_id: str, job_id: str) -> dict[str, Any]:
    """A job of the tenant, or NotFound."""
    row = await fetch_one(
        conn, sa.select(jobs).where(jobs.c.tenant_id == tenant_id, jobs.c.id == job_id)
    )
    if row is None:
        raise NotFound(f"no job {job_id!r}")
    return row


async def device_pk(conn: AsyncConnection, tenant_id: str, device_id: str) -> int:
    """The key of a device of the tenant, or NotFound."""
    pk = (
        await conn.execute(
            sa.select(devices.c.pk).where(
                devices.c.tenant_id == tenant_id, devices.c.id == device_id
            )
        )
    ).scalar_one_or_none()
    if pk is None:
        raise NotFound(f"no device {device_id!r}")
    return int(pk)
