"""Query-string models of list routes: paging, sorting, text search and per-kind filters.

Unknown query parameters are refused (422) so that a misspelt filter is reported instead of being
silently ignored and answering the whole collection.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from roost.store.queries import DEFAULT_LIMIT, MAX_LIMIT, PageRequest

PAGING = {"limit", "offset", "sort", "q"}


class ListParams(BaseModel):
    """Paging, sorting and text search, shared by every collection."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Items per page")
    offset: int = Field(0, ge=0, description="Items to skip")
    sort: str | None = Field(None, max_length=64, description="Field to sort by; -field for descending")
    q: str | None = Field(None, max_length=200, description="Case-insensitive text search")

    def page(self) -> PageRequest:
        """The paging part."""
        return PageRequest(limit=self.limit, offset=self.offset, sort=self.sort)

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


class DeviceParams(ListParams):
    site_id: str | None = None
    model_id: str | None = None
    firmware_id: str | None = None
    customer_id: str | None = None
    group: str | None = Field(None, description="Members of this group (static or dynamic)")
    tag: list[str] = Field(default_factory=list, description="key:value, or key for 'has tag'; repeatable")


class SensorParams(ListParams):
    type: str | None = None
    path: str | None = Field(None, description="Sensors at or below this path")


class ComponentParams(ListParams):
    parent_id: str | None = Field(None, description="Children of this component; empty for top level")
    kind: str | None = None
