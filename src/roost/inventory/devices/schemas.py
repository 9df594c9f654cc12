"""Request and response bodies of the device, sensor and component routes, and their list
filters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
)

from roost.http.params import ListParams, QueryParams
from roost.http.schemas import Body, Out, WholeNumber, documented, never_null
from roost.inventory.devices.query import DeviceQuery, parse_tag_filter
from roost.inventory.schemas import HEARTBEAT_RULE, ID_RULE

# The rules the device services check, stated in the OpenAPI document (they answer 422).
MAC_RULE = documented(pattern="^([0-9A-Fa-f]{2})([:-]?)([0-9A-Fa-f]{2})(?:\\2([0-9A-Fa-f]{2})){4}$")
TagFilter = Annotated[str, Field(json_schema_extra=documented(pattern="^[^:]"))]
# core.ids.is_sensor_path: empty, or slash-separated segments.
PATH_RULE = documented(pattern=r"^(?:[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*)?$")

DeviceStatus = Literal["online", "offline", "never_seen"]
SensorType = Literal["double", "long", "boolean", "string", "json"]


class DeviceIn(Body):
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Letters, digits and . _ : - ; generated when absent",
        json_schema_extra=ID_RULE,
    )
    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)
    model_id: str | None = None
    site_id: str | None = None
    firmware_id: str | None = None
    customer_id: str | None = None
    notes: str | None = Field(default=None, max_length=100_000)
    heartbeat_interval_s: WholeNumber | None = Field(
        default=None,
        description="Expected seconds between heartbeats; overrides the model's (presence)",
        json_schema_extra=HEARTBEAT_RULE,
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
    heartbeat_interval_s: WholeNumber | None = Field(
        default=None,
        description="Expected seconds between heartbeats; null: the model's",
        json_schema_extra=HEARTBEAT_RULE,
    )
    tags: dict[str, str | None] | None = Field(
        default=None,
        description="Merged into the device's tags; a null value removes a tag, "
        "and tags: null removes them all",
    )


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


class DeviceSelfOut(Out):
    """What a device is told about itself (the agent's edge metadata service serves it)."""

    id: str
    tenant_id: str
    name: str
    site_id: str | None
    model_id: str | None
    group_ids: list[str] = Field(description="Static and dynamic groups it is in now")
    tags: dict[str, str]
    created_at: datetime


class SensorIn(Body):
    id: str = Field(
        min_length=1,
        max_length=128,
        description="Unique within the device, e.g. 4 or temperature",
        json_schema_extra=ID_RULE,
    )
    type: SensorType
    path: str | None = Field(
        default=None,
        max_length=500,
        description="e.g. wheels/front/left",
        json_schema_extra=PATH_RULE,
    )
    name: str | None = Field(default=None, max_length=200)
    unit: str | None = Field(default=None, max_length=32)
    description: str | None = Field(default=None, max_length=20_000)


class SensorPatch(Body):
    type: SensorType | None = Field(default=None, json_schema_extra=never_null)
    path: str | None = Field(default=None, max_length=500, json_schema_extra=PATH_RULE)
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
    id: str | None = Field(default=None, min_length=1, max_length=128, json_schema_extra=ID_RULE)
    parent_id: str | None = Field(
        default=None, description="The component this one is part of", json_schema_extra=ID_RULE
    )
    name: str = Field(min_length=1, max_length=200)
    kind: str | None = Field(default=None, max_length=64)
    serial_number: str | None = Field(default=None, max_length=128)
    mac_address: str | None = Field(default=None, max_length=17, json_schema_extra=MAC_RULE)
    manufacturer: str | None = Field(default=None, max_length=200)
    notes: str | None = Field(default=None, max_length=20_000)


class ComponentPatch(Body):
    parent_id: str | None = Field(default=None, json_schema_extra=ID_RULE)
    name: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=never_null
    )
    kind: str | None = Field(default=None, max_length=64)
    serial_number: str | None = Field(default=None, max_length=128)
    mac_address: str | None = Field(default=None, max_length=17, json_schema_extra=MAC_RULE)
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


class DeviceFilters(QueryParams):
    """Which devices: the filters of the device list, export and group membership."""

    site_id: str | None = None
    model_id: str | None = None
    firmware_id: str | None = None
    customer_id: str | None = None
    group: str | None = Field(None, description="Members of this group (static or dynamic)")
    tag: list[TagFilter] = Field(
        default_factory=list, description="key:value, or key for 'has tag'; repeatable"
    )
    q: str | None = Field(None, max_length=200, description="Case-insensitive text search")
    status: Literal["online", "offline", "never_seen"] | None = Field(
        None, description="Presence: online, offline or never_seen"
    )

    def device_query(self, **overrides: Any) -> DeviceQuery:
        """The service's device filter."""
        values = {
            "site_id": self.site_id,
            "model_id": self.model_id,
            "firmware_id": self.firmware_id,
            "customer_id": self.customer_id,
            "group": self.group,
            "tags": tuple(parse_tag_filter(t) for t in self.tag),
            "q": self.q,
            "status": self.status,
        }
        return DeviceQuery(**{**values, **overrides})


class DeviceParams(DeviceFilters, ListParams):
    """A page of devices."""


class SensorParams(ListParams):
    type: str | None = None
    path: str | None = Field(None, description="Sensors at or below this path")


class ComponentParams(ListParams):
    parent_id: str | None = Field(
        None, description="Children of this component; empty for top level"
    )
    kind: str | None = None
