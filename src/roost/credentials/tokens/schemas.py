"""Request and response bodies of the device token routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import (
    Field,
)

from roost.http.schemas import Body, Out, Rfc3339Time


class DeviceTokenIn(Body):
    name: str = Field(default="", max_length=200, description="What the token is for")
    expires_at: Rfc3339Time | None = Field(
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
