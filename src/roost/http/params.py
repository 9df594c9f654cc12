"""Query-string models of list routes: paging, sorting, text search and per-kind filters.

Unknown query parameters are refused (422) so that a misspelt filter is reported instead of being
silently ignored and answering the whole collection.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from roost.http.schemas import contains_nul
from roost.inventory.devices.service import DeviceQuery, parse_tag_filter
from roost.store.queries import DEFAULT_LIMIT, MAX_LIMIT, PageRequest

PAGING = {"limit", "offset", "sort", "q"}


class QueryParams(BaseModel):
    """A query string: unknown parameters and NUL characters are refused."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _refuse_nul(cls, value: Any) -> Any:
        # PostgreSQL cannot compare text holding NUL; refuse it on every backend alike.
        if contains_nul(value):
            raise ValueError("must not contain NUL (\\u0000) characters")
        return value


class PageParams(QueryParams):
    """Paging and sorting, shared by every collection."""

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Items per page")
    offset: int = Field(0, ge=0, description="Items to skip")
    sort: str | None = Field(
        None, max_length=64, description="Field to sort by; -field for descending"
    )

    def page(self) -> PageRequest:
        """The paging part."""
        return PageRequest(limit=self.limit, offset=self.offset, sort=self.sort)


class ListParams(PageParams):
    """Paging, sorting and text search, shared by every collection."""

    q: str | None = Field(None, max_length=200, description="Case-insensitive text search")

    def filters(self) -> dict[str, str]:
        """The filter part, without unset filters."""
        return {k: v for k, v in self.model_dump(exclude=PAGING, exclude_none=True).items()}


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


class DeviceFilters(QueryParams):
    """Which devices: the filters of the device list, export and group membership."""

    site_id: str | None = None
    model_id: str | None = None
    firmware_id: str | None = None
    customer_id: str | None = None
    group: str | None = Field(None, description="Members of this group (static or dynamic)")
    tag: list[str] = Field(
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


class AuditParams(PageParams):
    """Filters of the audit log; times need an offset (RFC 3339), a naive time is ambiguous."""

    entity_type: str | None = Field(None, description="device, sensor, site, user, …")
    entity_id: str | None = None
    device_id: str | None = Field(None, description="A device and everything under it")
    actor: str | None = Field(None, description="Who made the change")
    action: str | None = Field(None, description="create, update, delete, …")
    since: AwareDatetime | None = Field(None, description="RFC 3339, inclusive")
    until: AwareDatetime | None = Field(None, description="RFC 3339, exclusive")
