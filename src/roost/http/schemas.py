"""Request and response bodies of the REST API (they are the OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
)

T = TypeVar("T")


def contains_nul(value: Any) -> bool:
    """True when a string, or any key or value inside lists and objects, holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(v) for v in value)
    return False


class Body(BaseModel):
    """A request body: unknown fields are refused rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _refuse_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL; refuse it on every backend so both store the same data.
        if contains_nul(value):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return value


class Out(BaseModel):
    """A response body."""

    model_config = ConfigDict(extra="ignore")


class Page(Out, Generic[T]):
    """One page of a collection."""

    items: list[T]
    total: int = Field(description="Number of items matching the filters, across all pages")
    limit: int
    offset: int


class Problem(Out):
    """An RFC 9457 problem document."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Per-field or per-item faults"
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` declaring problem+json answers with these statuses."""
    return {status: {"model": Problem} for status in statuses}


# -- identity ---------------------------------------------------------------------------------

RoleName = Literal["viewer", "operator", "admin"]


class LoginIn(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(Out):
    id: int
    tenant_id: str
    username: str
    role: RoleName
    is_superuser: bool
    disabled: bool
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime


class LoginOut(Out):
    token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: datetime
    user: UserOut


class TenantAdminIn(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)


class TenantIn(Body):
    id: str = Field(min_length=1, max_length=64, description="Lower-case letters, digits and -")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=20_000)
    admin: TenantAdminIn | None = Field(default=None, description="Create the tenant's first admin")


class TenantPatch(Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)
    retention_days: StrictInt | None = Field(
        default=None, description="Delete telemetry and events older than this; null: keep forever"
    )


class TenantOut(Out):
    id: str
    name: str
    description: str
    retention_days: int | None = None
    created_at: datetime
    updated_at: datetime


class UserIn(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: RoleName
    tenant: str | None = Field(default=None, description="Superuser only: the tenant's id")


class UserPatch(Body):
    password: str | None = Field(default=None, min_length=8, max_length=1024)
    role: RoleName | None = None
    disabled: bool | None = None


class ApiKeyIn(Body):
    name: str = Field(min_length=1, max_length=200)
    role: RoleName | None = Field(default=None, description="At most your own role (the default)")
    expires_at: AwareDatetime | None = None


class ApiKeyOut(Out):
    id: str
    user_id: int
    username: str | None = None
    name: str
    role: RoleName
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The key itself: shown this once, send it as a Bearer token")


# -- inventory --------------------------------------------------------------------------------


class CustomerIn(Body):
    id: str | None = Field(default=None, min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=200)
    contact_email: str | None = Field(default=None, max_length=320)
    notes: str | None = Field(default=None, max_length=20_000)


class CustomerPatch(Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    contact_email: str | None = Field(default=None, max_length=320)
    notes: str | None = Field(default=None, max_length=20_000)


class CustomerOut(Out):
    id: str
    name: str
    contact_email: str | None
    notes: str
    created_at: datetime
    updated_at: datetime


class SiteIn(Body):
    id: str | None = Field(default=None, min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=200)
    customer_id: str | None = None
    address: str | None = Field(default=None, max_length=2000)
    city: str | None = Field(default=None, max_length=200)
    postal_code: str | None = Field(default=None, max_length=32)
    country: str | None = Field(default=None, description="ISO 3166 alpha-2, e.g. FR")
    timezone: str | None = Field(default=None, description="IANA zone, e.g. Europe/Paris")
    latitude: StrictFloat | None = None
    longitude: StrictFloat | None = None
    notes: str | None = Field(default=None, max_length=20_000)


class SitePatch(Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    customer_id: str | None = None
    address: str | None = Field(default=None, max_length=2000)
    city: str | None = Field(default=None, max_length=200)
    postal_code: str | None = Field(default=None, max_length=32)
    country: str | None = None
    timezone: str | None = None
    latitude: StrictFloat | None = None
    longitude: StrictFloat | None = None
    notes: str | None = Field(default=None, max_length=20_000)


class SiteOut(Out):
    id: str
    name: str
    customer_id: str | None
    address: str
    city: str
    postal_code: str
    country: str | None
    timezone: str
    latitude: float | None
    longitude: float | None
    notes: str
    created_at: datetime
    updated_at: datetime


class ManufacturerIn(Body):
    id: str | None = Field(default=None, min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=200)
    website: str | None = Field(default=None, max_length=500)
    notes: str | None = Field(default=None, max_length=20_000)


class ManufacturerPatch(Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    website: str | None = Field(default=None, max_length=500)
    notes: str | None = Field(default=None, max_length=20_000)


class ManufacturerOut(Out):
    id: str
    name: str
    website: str | None
    notes: str
    created_at: datetime
    updated_at: datetime


class DeviceModelIn(Body):
    id: str | None = Field(default=None, min_length=1, max_length=128)
    reference: str = Field(min_length=1, max_length=64)
    commercial_name: str = Field(min_length=1, max_length=200)
    manufacturer_id: str | None = None
    family: str | None = Field(default=None, max_length=128)
    description: str | None = Field(default=None, max_length=20_000)
    heartbeat_interval_s: StrictInt | None = Field(
        default=None, description="Expected seconds between heartbeats"
    )
    auto_create_sensors: StrictBool | None = Field(
        default=None, description="Create sensors on first telemetry (default true)"
    )


class DeviceModelPatch(Body):
    reference: str | None = Field(default=None, min_length=1, max_length=64)
    commercial_name: str | None = Field(default=None, min_length=1, max_length=200)
    manufacturer_id: str | None = None
    family: str | None = Field(default=None, max_length=128)
    description: str | None = Field(default=None, max_length=20_000)
    heartbeat_interval_s: StrictInt | None = None
    auto_create_sensors: StrictBool | None = None


class DeviceModelOut(Out):
    id: str
    reference: str
    commercial_name: str
    manufacturer_id: str | None
    family: str
    description: str
    heartbeat_interval_s: int | None
    auto_create_sensors: bool
    created_at: datetime
    updated_at: datetime


class FirmwareIn(Body):
    id: str | None = Field(default=None, min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=64)
    model_id: str | None = None
    release_notes: str | None = Field(default=None, max_length=20_000)
    released_at: AwareDatetime | None = None


class FirmwarePatch(Body):
    version: str | None = Field(default=None, min_length=1, max_length=64)
    model_id: str | None = None
    release_notes: str | None = Field(default=None, max_length=20_000)
    released_at: AwareDatetime | None = None


class FirmwareOut(Out):
    id: str
    version: str
    model_id: str | None
    release_notes: str
    released_at: datetime | None
    created_at: datetime
    updated_at: datetime


class GroupFilter(Body):
    site_id: str | None = None
    model_id: str | None = None
    firmware_id: str | None = None
    customer_id: str | None = None
    tags: dict[str, str] | None = None


class GroupIn(Body):
    id: str | None = Field(default=None, min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)
    filter: GroupFilter | None = Field(
        default=None, description="Makes the group dynamic: members are the devices that match"
    )


class GroupPatch(Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)
    filter: GroupFilter | None = None


class GroupOut(Out):
    id: str
    name: str
    description: str
    filter: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class GroupMembersIn(Body):
    device_ids: list[str] = Field(min_length=1, max_length=10_000)


class GroupMembersAdded(Out):
    added: list[str]


# -- devices ----------------------------------------------------------------------------------


class DeviceIn(Body):
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Letters, digits and . _ : - ; generated when absent",
    )
    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)
    model_id: str | None = None
    site_id: str | None = None
    firmware_id: str | None = None
    customer_id: str | None = None
    notes: str | None = Field(default=None, max_length=100_000)
    heartbeat_interval_s: StrictInt | None = Field(
        default=None,
        description="Expected seconds between heartbeats; overrides the model's (presence)",
    )
    tags: dict[str, str] | None = None
    group_ids: list[str] | None = Field(default=None, description="Static groups to join")


class DevicePatch(Body):
    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)
    model_id: str | None = None
    site_id: str | None = None
    firmware_id: str | None = None
    customer_id: str | None = None
    notes: str | None = Field(default=None, max_length=100_000)
    heartbeat_interval_s: StrictInt | None = Field(
        default=None, description="Expected seconds between heartbeats; null: the model's"
    )
    tags: dict[str, str | None] | None = Field(
        default=None,
        description="Merged into the device's tags; a null value removes a tag, "
        "and tags: null removes them all",
    )


DeviceStatus = Literal["online", "offline", "never_seen"]


class DeviceOut(Out):
    id: str
    name: str
    description: str
    model_id: str | None
    site_id: str | None
    firmware_id: str | None
    customer_id: str | None
    notes: str
    tags: dict[str, str]
    groups: list[str]
    heartbeat_interval_s: int | None
    status: DeviceStatus
    status_since: datetime | None
    last_seen_at: datetime | None
    clock_skew_ms: int | None
    created_at: datetime
    updated_at: datetime


SensorType = Literal["double", "long", "boolean", "string", "json"]


class SensorIn(Body):
    id: str = Field(
        min_length=1, max_length=128, description="Unique within the device, e.g. 4 or temperature"
    )
    type: SensorType
    path: str | None = Field(default=None, max_length=500, description="e.g. wheels/front/left")
    name: str | None = Field(default=None, max_length=200)
    unit: str | None = Field(default=None, max_length=32)
    description: str | None = Field(default=None, max_length=20_000)


class SensorPatch(Body):
    type: SensorType | None = None
    path: str | None = Field(default=None, max_length=500)
    name: str | None = Field(default=None, max_length=200)
    unit: str | None = Field(default=None, max_length=32)
    description: str | None = Field(default=None, max_length=20_000)


class SensorOut(Out):
    id: str
    device_id: str
    type: SensorType
    path: str
    name: str
    unit: str
    description: str
    created_at: datetime
    updated_at: datetime


class ComponentIn(Body):
    id: str | None = Field(default=None, min_length=1, max_length=128)
    parent_id: str | None = Field(default=None, description="The component this one is part of")
    name: str = Field(min_length=1, max_length=200)
    kind: str | None = Field(default=None, max_length=64)
    serial_number: str | None = Field(default=None, max_length=128)
    mac_address: str | None = Field(default=None, max_length=17)
    manufacturer: str | None = Field(default=None, max_length=200)
    notes: str | None = Field(default=None, max_length=20_000)


class ComponentPatch(Body):
    parent_id: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)
    kind: str | None = Field(default=None, max_length=64)
    serial_number: str | None = Field(default=None, max_length=128)
    mac_address: str | None = Field(default=None, max_length=17)
    manufacturer: str | None = Field(default=None, max_length=200)
    notes: str | None = Field(default=None, max_length=20_000)


class ComponentOut(Out):
    id: str
    device_id: str
    parent_id: str | None
    name: str
    kind: str
    serial_number: str | None
    mac_address: str | None
    manufacturer: str
    notes: str
    created_at: datetime
    updated_at: datetime


class AuditEntry(Out):
    id: int
    at: datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    device_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class ImportReport(Out):
    """What a bulk import did, or why it did nothing."""

    created: int
    updated: int
    unchanged: int = Field(0, description="Existing devices the file already described exactly")
    skipped: int
    errors: list[dict[str, Any]] = Field(
        description="One entry per refused row: row number (1 = first data row), device id, reason"
    )
    dry_run: bool


# -- telemetry ------------------------------------------------------------------------------------


class IngestAck(Out):
    """What a telemetry or event POST stored (durably, before this answer)."""

    accepted: int = Field(description="Points stored")
    events: int = Field(description="Events stored")
    duplicate: bool | None = Field(default=None, description="A resend of a stored message id")
    flagged_future: int | None = Field(
        default=None, description="Points timestamped more than 5 minutes ahead of the server"
    )


class PointOut(Out):
    ts: str = Field(description="RFC 3339 UTC")
    value: Any = None


class SeriesOut(Out):
    device_id: str
    sensor: str
    type: str
    unit: str
    interval_s: float | None = None
    items: list[dict[str, Any]] = Field(
        description="[{ts, value}] raw, or [{ts, avg, min, …}] with agg and interval"
    )


class LatestItem(Out):
    sensor: str
    type: str
    unit: str
    ts: str
    value: Any = None
    received_at: str


class LatestOut(Out):
    device_id: str
    items: list[LatestItem]


class FleetLatestOut(Out):
    items: list[dict[str, Any]] = Field(description="[{device_id, sensors: {sensor: {ts, value}}}]")
    total: int


class EventOut(Out):
    ts: str
    received_at: str
    event: str
    offset: int
    body: dict[str, Any]


class EventsOut(Out):
    device_id: str
    items: list[EventOut]


class ConsumerGroupIn(Body):
    id: str = Field(min_length=1, max_length=128)
    start: Literal["earliest", "latest"] = "earliest"


class ConsumerGroupOut(Out):
    id: str
    committed_offset: int
    log_first_offset: int
    log_next_offset: int
    created_at: datetime
    updated_at: datetime


class OffsetIn(Body):
    offset: int = Field(description="Every item at or below this offset is consumed")


class StreamPullOut(Out):
    group: str
    items: list[dict[str, Any]] = Field(
        description="[{offset, type: telemetry|event, device_id, sensor|event, ts, value|body}]"
    )
    next_offset: int = Field(description="Pull again with after_offset=this; commit it when done")
    committed_offset: int
    truncated: bool = Field(description="The log no longer holds some items after the offset")
    log_next_offset: int


# -- device credentials ---------------------------------------------------------------------------


class DeviceTokenIn(Body):
    name: str = Field(default="", max_length=200, description="What the token is for")
    expires_at: AwareDatetime | None = Field(
        default=None,
        description="Truncated to the second; must be in the future. Absent: valid until revoked",
    )


class DeviceTokenOut(Out):
    id: str = Field(description="The token's id (its jti): revoke it with DELETE …/tokens/{id}")
    device_id: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Updated at most once a minute")


class DeviceTokenCreated(Out):
    id: str
    token: str = Field(
        description="The device token (a JWT): shown this once. The device sends it as "
        "Authorization: Bearer, or as the MQTT password"
    )
    name: str
    created_at: datetime
    expires_at: datetime | None
    device_id: str
