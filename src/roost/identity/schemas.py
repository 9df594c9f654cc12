"""Request and response bodies of the identity routes (OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import (
    Field,
)

from roost.core.ids import TENANT_PATTERN
from roost.http.schemas import Body, Out, Rfc3339Time, WholeNumber, documented, never_null

RoleName = Literal["viewer", "operator", "admin"]
# A user's id is a database row id, which both databases keep in a signed 64-bit integer: a
# larger number in the path is refused (422), not sent to the driver (which failed with a 500).
UserId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The user's id")]


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
    id: str = Field(
        min_length=1,
        max_length=64,
        description="Lower-case letters, digits and -",
        json_schema_extra=documented(pattern=TENANT_PATTERN),
    )
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=20_000)
    admin: TenantAdminIn | None = Field(default=None, description="Create the tenant's first admin")


class TenantPatch(Body):
    name: str | None = Field(
        default=None, min_length=1, max_length=200, json_schema_extra=never_null
    )
    description: str | None = Field(default=None, max_length=20_000, json_schema_extra=never_null)
    retention_days: WholeNumber | None = Field(
        default=None,
        description="Delete telemetry and events older than this; null: keep forever",
        json_schema_extra=documented(minimum=1, maximum=36_500),
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
    expires_at: Rfc3339Time | None = None


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
