"""Deployments as data (pure): the request checked, the phases planned, steps and verdicts.

A deployment's targets are resolved once, when it is created, into a plan: each phase names the
devices it updates (``device_ids``). A phase selects by ``devices``, ``groups`` (members among
the targets), ``percent`` (of all targets, taken in the order of a hash of the device id, so the
split is deterministic and spread across sites and models) or nothing (every target not yet
planned); targets no phase selects go with the last phase.

Each phase runs as one job; a phase *passes* when its job is done (or, with ``min_executed``,
once that many executions ended) and the share of executions that ended in success reaches its
``success_threshold_pct``. A device's *step* is read from its execution: its status, and the
``step`` the device reported in ``status_details``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from roost.errors import InvalidInput, ValidationFailed
from roost.jobs.lifecycle import ExecutionStatus
from roost.jobs.rollout import EXECUTED, parse_abort, parse_retries, parse_rollout
from roost.jobs.rules import JOB_TERMINAL, MAX_TARGET_IDS, check_timeout, parse_targets
from roost.jobs.windows import parse_maintenance

# Phases of one deployment: hawkBit rollouts rarely use more than a handful of groups.
MAX_PHASES = 10
# Artifacts of one deployment (a firmware image and a few packages).
MAX_ARTIFACTS = 20
MAX_NAME = 200
# A deployment id leaves room for the job ids "ota-<id>-<n>" (job ids are at most 128 long).
MAX_ID = 100
DEFAULT_THRESHOLD_PCT = 100.0
OPERATION = "ota.install"


class DeploymentStatus(StrEnum):
    """A deployment's own status."""

    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN_PROGRESS"
    PAUSED = "PAUSED"
    HALTED = "HALTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


DEPLOYMENT_ACTIVE = frozenset(
    {
        DeploymentStatus.SCHEDULED,
        DeploymentStatus.IN_PROGRESS,
        DeploymentStatus.PAUSED,
        DeploymentStatus.HALTED,
    }
)
#: Statuses the deployment pass drives forward.
DEPLOYMENT_RUNNING = frozenset({DeploymentStatus.SCHEDULED, DeploymentStatus.IN_PROGRESS})


class Step(StrEnum):
    """A device's step in a deployment."""

    QUEUED = "QUEUED"
    DOWNLOADING = "DOWNLOADING"
    INSTALLING = "INSTALLING"
    REBOOTING = "REBOOTING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    CANCELED = "CANCELED"


#: Steps a device reports while it works (IN_PROGRESS).
RUNNING_STEPS = frozenset({Step.DOWNLOADING, Step.INSTALLING, Step.REBOOTING})
#: Steps a device reports when it fails (FAILED).
FAILURE_STEPS = frozenset({Step.FAILED, Step.ROLLED_BACK})
FINAL_STEPS = frozenset({Step.SUCCEEDED, Step.FAILED, Step.ROLLED_BACK, Step.CANCELED})

_E = ExecutionStatus


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """One phase as asked (before its devices are resolved)."""

    name: str
    devices: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    percent: float | None = None
    success_threshold_pct: float = DEFAULT_THRESHOLD_PCT
    min_executed: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The stored form (``device_ids`` are added by :func:`plan`)."""
        return {
            "name": self.name,
            "devices": list(self.devices) or None,
            "groups": list(self.groups) or None,
            "percent": self.percent,
            "success_threshold_pct": self.success_threshold_pct,
            "min_executed": self.min_executed,
        }


def parse_phases(raw: Any) -> list[PhaseSpec]:
    """Check ``phases`` (None: one phase ``all``)."""
    if raw is None:
        return [PhaseSpec("all")]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_PHASES:
        raise InvalidInput(f"phases must be a list of 1 to {MAX_PHASES} phases")
    phases: list[PhaseSpec] = []
    for i, item in enumerate(raw):
        label = f"phases[{i}]"
        if not isinstance(item, Mapping):
            raise InvalidInput(f"{label} must be an object")
        unknown = set(item) - {
            "name",
            "devices",
            "groups",
            "percent",
            "success_threshold_pct",
            "min_executed",
        }
        if unknown:
            raise InvalidInput(f"{label} has unknown fields {sorted(unknown)}")
        name = item.get("name") or f"phase-{i + 1}"
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise InvalidInput(f"{label}.name must be text of at most {MAX_NAME} characters")
        ids: dict[str, tuple[str, ...]] = {}
        for field in ("devices", "groups"):
            value = item.get(field) or []
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise InvalidInput(f"{label}.{field} must be a list of ids")
            ids[field] = tuple(dict.fromkeys(value))
        percent = item.get("percent")
        if percent is not None and (
            not isinstance(percent, int | float)
            or isinstance(percent, bool)
            or not 0 < percent <= 100
        ):
            raise InvalidInput(f"{label}.percent must be a number above 0, at most 100")
        if percent is not None and (ids["devices"] or ids["groups"]):
            raise InvalidInput(f"{label}: percent cannot be combined with devices or groups")
        threshold = item.get("success_threshold_pct", DEFAULT_THRESHOLD_PCT)
        if (
            not isinstance(threshold, int | float)
            or isinstance(threshold, bool)
            or not 0 <= threshold <= 100
        ):
            raise InvalidInput(f"{label}.success_threshold_pct must be a number from 0 to 100")
        min_executed = item.get("min_executed")
        if min_executed is not None and (
            not isinstance(min_executed, int) or isinstance(min_executed, bool) or min_executed < 1
        ):
            raise InvalidInput(f"{label}.min_executed must be a positive integer")
        phases.append(
            PhaseSpec(
                name,
                ids["devices"],
                ids["groups"],
                float(percent) if percent is not None else None,
                float(threshold),
                min_executed,
            )
        )
    return phases


def check_job_options(data: Mapping[str, Any]) -> dict[str, Any]:
    """The job options a deployment passes to each phase's job, checked as jobs check them."""
    options: dict[str, Any] = {}
    parse_targets(data.get("targets"))
    if data.get("rollout") is not None:
        parse_rollout(data["rollout"])
        options["rollout"] = dict(data["rollout"])
    if data.get("abort") is not None:
        parse_abort(data["abort"])
        options["abort"] = list(data["abort"])
    if data.get("retries") is not None:
        parse_retries(data["retries"])
        options["retries"] = list(data["retries"])
    if data.get("timeout_in_progress_s") is not None:
        options["timeout_in_progress_s"] = check_timeout(
            data["timeout_in_progress_s"], "timeout_in_progress_s"
        )
    if data.get("maintenance") is not None:
        parse_maintenance(data["maintenance"])
        options["maintenance"] = list(data["maintenance"])
    return options


def spread_key(device_id: str) -> bytes:
    """The order percent phases take devices in: a hash, stable and spread across the fleet."""
    return hashlib.sha256(device_id.encode()).digest()


def plan(
    phases: Sequence[PhaseSpec],
    target_ids: Sequence[str],
    group_members: Mapping[str, set[str]],
) -> list[dict[str, Any]]:
    """Each phase's stored form with its ``device_ids``; 422 for phase devices that are not
    targets."""
    remaining = list(dict.fromkeys(target_ids))
    total = len(remaining)
    planned: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for i, phase in enumerate(phases):
        if phase.devices or phase.groups:
            outside = [d for d in phase.devices if d not in remaining and d not in target_ids]
            errors += [
                {"field": f"phases[{i}].devices", "value": d, "message": "not a target"}
                for d in outside
            ]
            wanted = set(phase.devices)
            for group_id in phase.groups:
                wanted |= group_members.get(group_id, set())
            chosen = [d for d in remaining if d in wanted]
        elif phase.percent is not None:
            count = math.ceil(phase.percent * total / 100)
            chosen = sorted(remaining, key=spread_key)[:count]
        else:
            chosen = list(remaining)
        taken = set(chosen)
        remaining = [d for d in remaining if d not in taken]
        planned.append({**phase.as_json(), "device_ids": sorted(chosen)})
    if errors:
        names = ", ".join(e["value"] for e in errors)
        raise ValidationFailed(f"phase devices that are not targets: {names}", errors)
    if remaining and planned:
        planned[-1]["device_ids"] = sorted([*planned[-1]["device_ids"], *remaining])
    for i, phase_json in enumerate(planned):
        if len(phase_json["device_ids"]) > MAX_TARGET_IDS:
            raise InvalidInput(
                f"phases[{i}] has {len(phase_json['device_ids'])} devices; a phase has at most "
                f"{MAX_TARGET_IDS} (split the deployment in more phases)"
            )
    return planned


def step_of(status: str, details: Mapping[str, Any] | None, current: str) -> Step:
    """A device's step, from its execution's status and details (``current``: the stored one)."""
    reported = (details or {}).get("step")
    execution = _E(status)
    if execution == _E.QUEUED:
        return Step.QUEUED
    if execution == _E.IN_PROGRESS:
        if reported in RUNNING_STEPS:
            return Step(reported)
        return Step(current) if current in RUNNING_STEPS else Step.DOWNLOADING
    if execution == _E.SUCCEEDED:
        return Step.SUCCEEDED
    if execution == _E.FAILED:
        return Step.ROLLED_BACK if reported == Step.ROLLED_BACK else Step.FAILED
    if execution in (_E.TIMED_OUT, _E.REJECTED):
        return Step.FAILED
    return Step.CANCELED


class Verdict(StrEnum):
    """What the deployment pass does with a phase."""

    WAIT = "WAIT"
    PASS = "PASS"
    HALT = "HALT"


def success_pct(counts: Mapping[str, int]) -> float | None:
    """The share of executions that ended in success among those that ended (None: none)."""
    executed = sum(counts.get(s.value, 0) for s in EXECUTED)
    if executed == 0:
        return None
    return counts.get(_E.SUCCEEDED.value, 0) * 100 / executed


def judge(phase: Mapping[str, Any], job_status: str, counts: Mapping[str, int]) -> Verdict:
    """Whether a phase passed, failed its threshold, or is still running."""
    executed = sum(counts.get(s.value, 0) for s in EXECUTED)
    pct = success_pct(counts)
    threshold = float(phase.get("success_threshold_pct", DEFAULT_THRESHOLD_PCT))
    done = job_status in JOB_TERMINAL
    minimum = phase.get("min_executed")
    if not done and not (minimum and executed >= minimum):
        return Verdict.WAIT
    if pct is None:  # nothing ran to an outcome (all cancelled or removed)
        return Verdict.PASS if threshold == 0 else Verdict.HALT
    if pct >= threshold:
        return Verdict.PASS
    return Verdict.HALT if done else Verdict.WAIT
