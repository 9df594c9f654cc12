"""Request and response bodies of the inventory routes, and their list filters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
)

from roost.core.ids import SLUG_PATTERN
from roost.http.params import ListParams
from roost.http.schemas import Body, Out, Rfc3339Time, WholeNumber, documented, never_null

# The rules inventory.service checks, stated in the OpenAPI document (the service answers 422).
EMAIL_RULE = documented(pattern=r"^(?:[^@][\s\S]*@[\s\S]*[^@])?$")
COUNTRY_RULE = documented(pattern="^[A-Za-z]{2}$")
LATITUDE_RULE = documented(minimum=-90, maximum=90)
LONGITUDE_RULE = documented(minimum=-180, maximum=180)
HEARTBEAT_RULE = documented(minimum=1, maximum=2**31 - 1)
ID_RULE = documented(pattern=SLUG_PATTERN)


class CustomerIn(Body):
    id: str | None = Field(default=None, min_length=1, max_length=128, json_schema_extra=ID_RULE)
    name: str = Field(min_length=1, max_length=200)
    contact_email: str | None = Field(default=None, max_length=320, json_schema_extra=EMAIL_RULE)
    notes: str | None = Field(default=None, max_length=20_000)


class CustomerPatch(Body):
    name: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=never_null
    )
    contact_email: str | None = Field(default=None, max_length=320, json_schema_extra=EMAIL_RULE)
    notes: str | None = Field(default=None, max_length=20_000)


class CustomerOut(Out):
    id: str
    name: str
    contact_email: str | None
    notes: str
    created_at: datetime
    updated_at: datetime


class SiteIn(Body):
    id: str | None = Field(default=None, min_length=1, max_length=128, json_schema_extra=ID_RULE)
    name: str = Field(min_length=1, max_length=200)
    customer_id: str | None = None
    address: str | None = Field(default=None, max_length=2000)
    city: str | None = Field(default=None, max_length=200)
    postal_code: str | None = Field(default=None, max_length=32)
    country: str | None = Field(
        default=None, description="ISO 3166 alpha-2, e.g. FR", json_schema_extra=COUNTRY_RULE
    )
    timezone: str | None = Field(default=None, description="IANA zone, e.g. Europe/Paris")
    latitude: StrictFloat | None = Field(default=None, json_schema_extra=LATITUDE_RULE)
    longitude: StrictFloat | None = Field(default=None, json_schema_extra=LONGITUDE_RULE)
    notes: str | None = Field(default=None, max_length=20_000)


class SitePatch(Body):
    name: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=never_null
    )
    customer_id: str | None = None
    address: str | None = Field(default=None, max_length=2000)
    city: str | None = Field(default=None, max_length=200)
    postal_code: str | None = Field(default=None, max_length=32)
    country: str | None = Field(default=None, json_schema_extra=COUNTRY_RULE)
    timezone: str | None = None
    latitude: StrictFloat | None = Field(default=None, json_schema_extra=LATITUDE_RULE)
    longitude: StrictFloat | None = Field(default=None, json_schema_extra=LONGITUDE_RULE)
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
    id: str | None = Field(default=None, min_length=1, max_length=128, json_schema_extra=ID_RULE)
    name: str = Field(min_length=1, max_length=200)
    website: str | None = Field(default=None, max_length=500)
    notes: str | None = Field(default=None, max_length=20_000)


class ManufacturerPatch(Body):
    name: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=never_null
    )
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
    id: str | None = Field(default=None, min_length=1, max_length=128, json_schema_extra=ID_RULE)
    reference: str = Field(min_length=1, max_length=64)
    commercial_name: str = Field(min_length=1, max_length=200)
    manufacturer_id: str | None = None
    family: str | None = Field(default=None, max_length=128)
    description: str | None = Field(default=None, max_length=20_000)
    heartbeat_interval_s: WholeNumber | None = Field(
        default=None,
        description="Expected seconds between heartbeats",
        json_schema_extra=HEARTBEAT_RULE,
    )
    auto_create_sensors: StrictBool | None = Field(
        default=None, description="Create sensors on first telemetry (default true)"
    )


class DeviceModelPatch(Body):
    reference: str | None = Field(
        default=None, min_length=1, max_length=64, json_schema_extra=never_null
    )
    commercial_name: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=never_null
    )
    manufacturer_id: str | None = None
    family: str | None = Field(default=None, max_length=128)
    description: str | None = Field(default=None, max_length=20_000)
    heartbeat_interval_s: WholeNumber | None = Field(default=None, json_schema_extra=HEARTBEAT_RULE)
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
    id: str | None = Field(default=None, min_length=1, max_length=128, json_schema_extra=ID_RULE)
    version: str = Field(min_length=1, max_length=64)
    model_id: str | None = None
    release_notes: str | None = Field(default=None, max_length=20_000)
    released_at: Rfc3339Time | None = None


class FirmwarePatch(Body):
    version: str | None = Field(
        default=None, min_length=1, max_length=64, json_schema_extra=never_null
    )
    model_id: str | None = None
    release_notes: str | None = Field(default=None, max_length=20_000)
    released_at: Rfc3339Time | None = None


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
    id: str | None = Field(default=None, min_length=1, max_length=128, json_schema_extra=ID_RULE)
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=20_000)
    filter: GroupFilter | None = Field(
        default=None, description="Makes the group dynamic: members are the devices that match"
    )


class GroupPatch(Body):
    name: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=never_null
    )
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


class CustomerParams(ListParams):
    pass


class SiteParams(ListParams):
    customer_id: str | None = None
    city: str | None = None
    country: str | None = None
    timezone: str | None = None


class ManufacturerParams(ListParams):
    pass


class DeviceModelParams(ListParams):
    manufacturer_id: str | None = None
    family: str | None = None
    reference: str | None = None


class FirmwareParams(ListParams):
    model_id: str | None = None
    version: str | None = None


class GroupParams(ListParams):
    pass
