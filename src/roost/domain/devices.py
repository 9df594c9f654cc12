"""Who a device is once a gateway has checked its credential."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """An authenticated device: what every door knows about the caller after auth.

    ``credential_id`` names the token or certificate used, so that revoking it can close the
    sessions that were opened with it.
    """

    tenant_id: str
    device_id: str
    device_pk: int
    credential_id: str
    expires_at: datetime | None = None
