"""Jobs as data (pure): a job's specification and a device's execution update, checked.

The job service stores what :func:`parse_job_spec` answers and applies what
:func:`parse_device_update` answers; both raise :class:`~roost.errors.InvalidInput` with the
field at fault, the same over HTTP and MQTT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from roost.errors import InvalidInput, PayloadTooLarge
from roost.inventory.rules import FILTER_FIELDS
from roost.jobs.lifecycle import DEVICE_EXECUTION_STATUSES, ExecutionStatus
from roost.jobs.rollout import (
    AbortRule,
    RetryRule,
    Rollout,
    parse_abort,
    parse_retries,
    parse_rollout,
)
from roost.jobs.windows import Window, parse_maintenance

# AWS IoT's job document limit: a document travels in every notification of every device.
MAX_DOCUMENT_BYTES = 32 * 1024
# Ids named in one job's targets: a larger fleet is targeted through groups or a query.
MAX_TARGET_IDS = 1000
# AWS bounds an in-progress / step timeout at 7 days (10,080 minutes).
MAX_TIMEOUT_S = 7 * 24 * 3600
MAX_DESCRIPTION = 2000
MAX_STATUS_DETAILS_BYTES = 8 * 1024


class JobStatus(StrEnum):
    """A job's own status (its executions have theirs)."""

    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"


JOB_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.CANCELED})


class TargetSelection(StrEnum):
    """SNAPSHOT: the targets when the job is created; CONTINUOUS: also devices that join later."""

    SNAPSHOT = "SNAPSHOT"
    CONTINUOUS = "CONTINUOUS"


PENDING = frozenset({ExecutionStatus.QUEUED, ExecutionStatus.IN_PROGRESS})


@dataclass(frozen=True, slots=True)
class JobChange:
    """A committed change, announced on the bus (``roost.jobs.changed``): a job's new
    ``status``, one device's ``execution_status``, or neither (executions of the job changed,
    e.g. released or cancelled together)."""

    tenant_id: str
    job_id: str
    status: str | None = None
    device_id: str | None = None
    execution_status: str | None = None

    def notice(self) -> dict[str, str]:
        """The bus message: the fields that are set."""
        return {
            name: value
            for name in ("tenant_id", "job_id", "status", "device_id", "execution_status")
            if (value := getattr(self, name)) is not None
        }


@dataclass(frozen=True, slots=True)
class Targets:
    """Devices by id, groups by id, and a device query (a dynamic group's filter shape)."""

    devices: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    query: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The stored / answered form."""
        return {"devices": list(self.devices), "groups": list(self.groups), "query": self.query}


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A checked job creation request."""

    document: dict[str, Any]
    targets: Targets
    target_selection: TargetSelection = TargetSelection.SNAPSHOT
    description: str = ""
    rollout: Rollout = field(default_factory=Rollout)
    rollout_raw: dict[str, Any] | None = None
    abort: tuple[AbortRule, ...] = ()
    abort_raw: list[Any] | None = None
    retries: tuple[RetryRule, ...] = ()
    retries_raw: list[Any] | None = None
    timeout_in_progress_s: int | None = None
    schedule_at: datetime | None = None
    end_at: datetime | None = None
    maintenance: tuple[Window, ...] = ()
    maintenance_raw: list[Any] | None = None


def parse_job_spec(data: Mapping[str, Any], now: datetime) -> JobSpec:
    """Check a job creation body (already JSON-decoded; datetimes already parsed)."""
    document = data.get("document")
    if not isinstance(document, Mapping):
        raise InvalidInput("document must be a JSON object")
    if len(orjson.dumps(document)) > MAX_DOCUMENT_BYTES:
        raise PayloadTooLarge(f"a job document is at most {MAX_DOCUMENT_BYTES} bytes of JSON")
    description = data.get("description") or ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"description must be text of at most {MAX_DESCRIPTION} characters")
    targets = parse_targets(data.get("targets"))
    selection = data.get("target_selection") or TargetSelection.SNAPSHOT.value
    if selection not in TargetSelection.__members__:
        raise InvalidInput("target_selection must be SNAPSHOT or CONTINUOUS")
    rollout_raw = data.get("rollout")
    abort_raw = data.get("abort")
    retries_raw = data.get("retries")
    timeout = data.get("timeout_in_progress_s")
    if timeout is not None:
        timeout = check_timeout(timeout, "timeout_in_progress_s")
    schedule_at = data.get("schedule_at")
    end_at = data.get("end_at")
    maintenance_raw = data.get("maintenance")
    for label, value in (("schedule_at", schedule_at), ("end_at", end_at)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise InvalidInput(f"{label} must be a timestamp with a time zone")
    if end_at is not None and end_at <= max(now, schedule_at or now):
        raise InvalidInput("end_at must be later than now and than schedule_at")
    return JobSpec(
        document=dict(document),
        targets=targets,
        target_selection=TargetSelection(selection),
        description=description,
        rollout=parse_rollout(rollout_raw),
        rollout_raw=dict(rollout_raw) if rollout_raw is not None else None,
        abort=tuple(parse_abort(abort_raw)),
        abort_raw=list(abort_raw) if abort_raw is not None else None,
        retries=tuple(parse_retries(retries_raw)),
        retries_raw=list(retries_raw) if retries_raw is not None else None,
        timeout_in_progress_s=timeout,
        schedule_at=schedule_at,
        end_at=end_at,
        maintenance=parse_maintenance(maintenance_raw),
        maintenance_raw=list(maintenance_raw) if maintenance_raw is not None else None,
    )


def parse_targets(raw: Any) -> Targets:
    """Check ``targets``: at least one of devices, groups, query."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("targets must be an object with devices, groups and/or query")
    unknown = set(raw) - {"devices", "groups", "query"}
    if unknown:
        raise InvalidInput(f"targets has unknown fields {sorted(unknown)}")
    lists = {}
    for name in ("devices", "groups"):
        value = raw.get(name) or []
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise InvalidInput(f"targets.{name} must be a list of ids")
        if len(value) > MAX_TARGET_IDS:
            raise InvalidInput(f"targets.{name} names at most {MAX_TARGET_IDS} ids")
        lists[name] = tuple(dict.fromkeys(value))
    query = parse_query(raw["query"]) if raw.get("query") is not None else None
    if not lists["devices"] and not lists["groups"] and query is None:
        raise InvalidInput("targets must name at least one device, group or a query")
    return Targets(lists["devices"], lists["groups"], query)


def parse_query(raw: Any) -> dict[str, Any]:
    """A target query: ``site_id``, ``model_id``, ``firmware_id``, ``customer_id``, ``tags``
    (``{key: value}``) and ``tag`` (``"key:value"`` or ``"key"``, or a list of them), as the
    device list filters them. Every given part must hold."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("targets.query must be an object")
    unknown = set(raw) - {*FILTER_FIELDS, "tags", "tag"}
    if unknown:
        raise InvalidInput(
            f"targets.query has unknown keys {sorted(unknown)}; "
            f"allowed: {[*FILTER_FIELDS, 'tags', 'tag']}"
        )
    clean: dict[str, Any] = {}
    for name in FILTER_FIELDS:
        value = raw.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise InvalidInput(f"targets.query.{name} must be a string")
            clean[name] = value
    tags: dict[str, str | None] = {}
    given = raw.get("tags") or {}
    if not isinstance(given, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in given.items()
    ):
        raise InvalidInput("targets.query.tags must map tag names to string values")
    tags.update(given)
    tag = raw.get("tag")
    for item in [tag] if isinstance(tag, str) else (tag or []):
        if not isinstance(item, str) or not item or item.startswith(":"):
            raise InvalidInput("targets.query.tag must be 'key:value' or 'key' (or a list)")
        key, sep, value = item.partition(":")
        tags[key] = value if sep else None
    if tags:
        clean["tags"] = tags
    if not clean:
        raise InvalidInput("targets.query must select on at least one field or tag")
    return clean


def check_timeout(value: Any, label: str) -> int:
    """A timeout in whole seconds, 1 s to 7 days."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TIMEOUT_S:
        raise InvalidInput(f"{label} must be a whole number of seconds from 1 to {MAX_TIMEOUT_S}")
    return value


@dataclass(frozen=True, slots=True)
class DeviceUpdate:
    """A device's update of one of its executions."""

    status: ExecutionStatus
    status_details: dict[str, Any] | None = None
    expected_version: int | None = None
    step_timeout_s: int | None = None
    client_token: str | None = None


def parse_device_update(raw: Any) -> DeviceUpdate:
    """Check ``{"status", "status_details"?, "expected_version"?, "step_timeout_s"?,
    "client_token"?}``: the status must be one a device may set."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("an execution update must be a JSON object")
    unknown = set(raw) - {
        "status",
        "status_details",
        "expected_version",
        "step_timeout_s",
        "client_token",
    }
    if unknown:
        raise InvalidInput(f"unknown fields {sorted(unknown)} in the execution update")
    status = raw.get("status")
    allowed = sorted(s.value for s in DEVICE_EXECUTION_STATUSES)
    if status not in allowed:
        raise InvalidInput(f"status must be one of {allowed}, not {status!r}")
    start = parse_start_options(
        {k: v for k, v in raw.items() if k in ("status_details", "step_timeout_s", "client_token")}
    )
    version = raw.get("expected_version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        raise InvalidInput("expected_version must be an integer")
    return DeviceUpdate(
        ExecutionStatus(status),
        start.status_details,
        version,
        start.step_timeout_s,
        start.client_token,
    )


@dataclass(frozen=True, slots=True)
class StartOptions:
    """What a device may send with start-next."""

    status_details: dict[str, Any] | None = None
    step_timeout_s: int | None = None
    client_token: str | None = None


def parse_start_options(raw: Any) -> StartOptions:
    """Check a start-next body ``{"status_details"?, "step_timeout_s"?, "client_token"?}``."""
    if raw is None:
        return StartOptions()
    if not isinstance(raw, Mapping):
        raise InvalidInput("the body must be a JSON object")
    unknown = set(raw) - {"status_details", "step_timeout_s", "client_token"}
    if unknown:
        raise InvalidInput(f"unknown fields {sorted(unknown)}")
    details = raw.get("status_details")
    if details is not None:
        if not isinstance(details, Mapping):
            raise InvalidInput("status_details must be a JSON object")
        if len(orjson.dumps(details)) > MAX_STATUS_DETAILS_BYTES:
            raise InvalidInput(f"status_details is at most {MAX_STATUS_DETAILS_BYTES} bytes")
        details = dict(details)
    step = raw.get("step_timeout_s")
    if step is not None:
        step = check_timeout(step, "step_timeout_s")
    token = raw.get("client_token")
    if token is not None and (not isinstance(token, str) or len(token) > 64):
        raise InvalidInput("client_token must be text of at most 64 characters")
    return StartOptions(details, step, token)
