"""The audit entry as the API answers it, and the audit log's filters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import (
    Field,
)

from roost.http.params import PageParams
from roost.http.schemas import Out, Rfc3339Time


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


class AuditParams(PageParams):
    """Filters of the audit log; times need an offset (RFC 3339), a naive time is ambiguous."""

    entity_type: str | None = Field(None, description="device, sensor, site, user, …")
    entity_id: str | None = None
    device_id: str | None = Field(None, description="A device and everything under it")
    actor: str | None = Field(None, description="Who made the change")
    action: str | None = Field(None, description="create, update, delete, …")
    since: Rfc3339Time | None = Field(None, description="RFC 3339, inclusive")
    until: Rfc3339Time | None = Field(None, description="RFC 3339, exclusive")
