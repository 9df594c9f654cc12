"""What notifications are made of: the notice the rules engine hands over, and the pure rules
(labels, group keys, silence matching, retry backoff) the rest of this part applies."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

#: Channel kinds and what each sends (see :mod:`roost.alarms.notify.senders`).
KINDS = ("email", "webhook", "slack")
SEVERITIES = ("critical", "major", "minor", "warning", "info")
#: Labels a channel may group alerts by (``group_by``) and a silence may match on.
GROUP_LABELS = ("type", "site_id", "device_id", "severity", "rule_id")
MATCHER_LABELS = ("device_id", "group_id", "site_id", "type", "severity")
#: As Alertmanager groups by default for us: one message per site and alarm type.
DEFAULT_GROUP_BY = ("site_id", "type")
#: Alertmanager's defaults: wait briefly so that a burst becomes one message, then batch
#: later changes of a group, and remind of an unchanged firing group every few hours.
DEFAULT_GROUP_WAIT_S = 30.0
DEFAULT_GROUP_INTERVAL_S = 300.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0
#: Eight attempts with doubling waits span about two minutes before a message is given up.
DEFAULT_MAX_ATTEMPTS = 8
MAX_ATTEMPTS_LIMIT = 20
#: Retries wait 1 s, 2 s, 4 s … at most five minutes (a relay back after an outage is used
#: within five minutes, and a dead receiver costs one attempt per five minutes at worst).
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 300.0


class DeliveryStatus(StrEnum):
    """Where one notification (a message to one channel) stands."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AlarmNotice:
    """An alarm change a rule decided to notify (``NotificationService.enqueue_in`` takes it)."""

    tenant_id: str
    alarm_id: int
    type: str  # alarm type, e.g. "offline", "overheat"
    device_id: str
    site_id: str | None
    group_ids: tuple[str, ...]
    severity: str  # critical major minor warning info
    status: str  # "firing" | "resolved"
    summary: str  # one line, human
    details: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None
    rule_id: str | None
    channel_ids: tuple[str, ...]  # channels the rule's notify action names


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one send attempt."""

    delivered: bool
    error: str | None = None
    # False: retrying cannot help (a 4xx of the receiver, a refused address).
    retry: bool = True


def labels_of(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The labels of an alert (a notice or a stored alert row) that grouping and silences read."""
    return {
        "type": alert["type"],
        "site_id": alert.get("site_id"),
        "device_id": alert["device_id"],
        "severity": alert["severity"],
        "rule_id": alert.get("rule_id"),
    }


def group_labels(alert: Mapping[str, Any], group_by: Sequence[str]) -> dict[str, Any]:
    """The values of ``group_by`` of an alert: alerts with equal values share a message."""
    labels = labels_of(alert)
    return {name: labels[name] for name in group_by}


def group_key(labels: Mapping[str, Any]) -> str:
    """A fixed-length key of a group's labels (indexable whatever the values' length)."""
    return hashlib.sha256(orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)).hexdigest()


def silence_matches(matchers: Mapping[str, str], alert: Mapping[str, Any]) -> bool:
    """Whether every matcher of a silence holds for the alert (``group_id``: one of its groups)."""
    for name, wanted in matchers.items():
        if name == "group_id":
            if wanted not in (alert.get("group_ids") or ()):
                return False
        elif alert.get(name) != wanted:
            return False
    return True


def silence_state(starts_at: datetime, ends_at: datetime, now: datetime) -> str:
    """``pending`` before it starts, ``active`` while it runs, ``expired`` after."""
    if now < starts_at:
        return "pending"
    return "active" if now < ends_at else "expired"


def backoff_s(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1, 2, 4 … capped)."""
    return float(min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_CAP_S))
