"""Request and response bodies of the notification routes (they are the OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from roost.alarms.notify import model
from roost.alarms.notify.channels import MAX_INTERVAL_S, MAX_REPEAT_INTERVAL_S
from roost.http import params as p
from roost.http import schemas as s

Kind = Literal["email", "webhook", "slack"]
GroupLabel = Literal["type", "site_id", "device_id", "severity", "rule_id"]
Status = Literal["queued", "sending", "delivered", "failed"]
SilenceState = Literal["active", "pending", "expired"]

_CONFIG_HELP = (
    "email: {to: [addresses], subject_template?, body_template?}; "
    "webhook: {url, secret?, headers?, timeout_s?}; slack: {url, text_template?}. "
    "Templates are Jinja2 (sandboxed)."
)
_WEBHOOK_EXAMPLE: dict[str, Any] = {
    "name": "ops-webhook",
    "kind": "webhook",
    "config": {"url": "https://ops.example.com/roost", "secret": "s3cret", "timeout_s": 10},
    "group_by": ["site_id", "type"],
}


def _default_group_by() -> list[GroupLabel]:
    return ["site_id", "type"]


class ChannelIn(s.Body):
    """A notification channel: where messages go and how alerts are grouped into them."""

    model_config = ConfigDict(json_schema_extra={"examples": [_WEBHOOK_EXAMPLE]})

    name: str = Field(min_length=1, max_length=128, examples=["ops-mail"])
    kind: Kind
    config: dict[str, Any] = Field(description=_CONFIG_HELP)
    group_by: list[GroupLabel] = Field(default_factory=_default_group_by, max_length=5)
    group_wait_s: float = Field(model.DEFAULT_GROUP_WAIT_S, ge=0, le=MAX_INTERVAL_S)
    group_interval_s: float = Field(model.DEFAULT_GROUP_INTERVAL_S, gt=0, le=MAX_INTERVAL_S)
    repeat_interval_s: float = Field(
        model.DEFAULT_REPEAT_INTERVAL_S, gt=0, le=MAX_REPEAT_INTERVAL_S
    )
    send_resolved: bool = True
    max_attempts: int = Field(model.DEFAULT_MAX_ATTEMPTS, ge=1, le=model.MAX_ATTEMPTS_LIMIT)
    enabled: bool = True


class ChannelPatch(s.Body):
    """Changes to a channel; ``config`` replaces the whole config (a webhook secret left out of
    it stays, ``secret: null`` removes it)."""

    name: str | None = Field(None, min_length=1, max_length=128, json_schema_extra=s.never_null)
    kind: Kind | None = Field(None, json_schema_extra=s.never_null)
    config: dict[str, Any] | None = Field(None, json_schema_extra=s.never_null)
    group_by: list[GroupLabel] | None = Field(None, max_length=5, json_schema_extra=s.never_null)
    group_wait_s: float | None = Field(
        None, ge=0, le=MAX_INTERVAL_S, json_schema_extra=s.never_null
    )
    group_interval_s: float | None = Field(
        None, gt=0, le=MAX_INTERVAL_S, json_schema_extra=s.never_null
    )
    repeat_interval_s: float | None = Field(
        None, gt=0, le=MAX_REPEAT_INTERVAL_S, json_schema_extra=s.never_null
    )
    send_resolved: bool | None = Field(None, json_schema_extra=s.never_null)
    max_attempts: int | None = Field(
        None, ge=1, le=model.MAX_ATTEMPTS_LIMIT, json_schema_extra=s.never_null
    )
    enabled: bool | None = Field(None, json_schema_extra=s.never_null)


class ChannelOut(s.Out):
    """A notification channel (a webhook's secret only as ``secret_set``)."""

    id: str
    name: str
    kind: Kind
    config: dict[str, Any]
    secret_set: bool
    group_by: list[str]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    send_resolved: bool
    max_attempts: int
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime


class TestResult(s.Out):
    """The outcome of a test message."""

    channel_id: str
    notification_id: str = Field(description="The attempt's entry in the delivery log")
    kind: Kind
    delivered: bool
    error: str | None
    duration_ms: float


class Matchers(s.Body):
    """Labels an alert must carry to be silenced (every one given must hold)."""

    device_id: str | None = Field(None, min_length=1, max_length=128)
    group_id: str | None = Field(None, min_length=1, max_length=128)
    site_id: str | None = Field(None, min_length=1, max_length=128)
    type: str | None = Field(None, min_length=1, max_length=128, examples=["offline"])
    severity: Literal["critical", "major", "minor", "warning", "info"] | None = None


class SilenceIn(s.Body):
    """A silence: matching alerts stay out of messages from ``starts_at`` (default now) to
    ``ends_at``."""

    matchers: Matchers
    starts_at: s.Rfc3339Time | None = None
    ends_at: s.Rfc3339Time
    comment: str = Field("", max_length=1000, examples=["site visit, power work"])


class SilencePatch(s.Body):
    """Changes to a silence (end it early by setting ``ends_at``)."""

    matchers: Matchers | None = Field(None, json_schema_extra=s.never_null)
    starts_at: s.Rfc3339Time | None = Field(None, json_schema_extra=s.never_null)
    ends_at: s.Rfc3339Time | None = Field(None, json_schema_extra=s.never_null)
    comment: str | None = Field(None, max_length=1000, json_schema_extra=s.never_null)


class SilenceOut(s.Out):
    """A silence and its state now."""

    id: str
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    comment: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    state: SilenceState


class Attempt(s.Out):
    """One delivery attempt (error null for the one that delivered)."""

    attempt: int
    at: datetime
    error: str | None


class NotificationOut(s.Out):
    """One message to one channel and its delivery."""

    id: str
    channel_id: str
    channel_name: str
    kind: Kind
    status: Status
    group_labels: dict[str, Any]
    alarm_ids: list[int]
    firing: int
    resolved: int
    subject: str
    attempts: int
    max_attempts: int
    last_error: str | None
    attempt_log: list[Attempt]
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ChannelListParams(p.PageParams):
    """Paging, sorting and a kind filter."""

    kind: Kind | None = None


class SilenceListParams(p.PageParams):
    """Paging, sorting and a state filter."""

    state: SilenceState | None = None


class NotificationListParams(p.PageParams):
    """Paging, sorting and filters by channel and status."""

    channel_id: str | None = Field(None, max_length=32)
    status: Status | None = None
