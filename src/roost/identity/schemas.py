"""Request and response bodies of the identity routes (OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import (
    AwareDatetime,
    Field,
    StrictInt,
)

from roost.http.schemas import Body, Out

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
