"""What every device-facing service is built with (state, commands, jobs, presence).

One dataclass instead of long constructor lists: a service takes ``ServiceDeps`` and keeps what
it needs. ``clock`` is the services' wall clock (tests of pure logic inject one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from roost.audit.service import AuditService
from roost.bus.base import Bus
from roost.config import Settings
from roost.core.devicelink import DeviceLink
from roost.core.scheduler import Scheduler
from roost.credentials.tokens.service import CredentialService, DeviceAuthenticator
from roost.inventory.devices.service import DeviceService
from roost.store.database import Database


@dataclass(frozen=True)
class ServiceDeps:
    """The shared parts a service is built from."""

    settings: Settings
    db: Database
    bus: Bus
    link: DeviceLink
    scheduler: Scheduler
    devices: DeviceService
    audit: AuditService
    clock: Callable[[], datetime]
    # Device credentials: the authenticator every door calls (register verifiers and revocation
    # sources with it), the token service, and the key that signs tokens.
    device_auth: DeviceAuthenticator
    credentials: CredentialService
    secret_key: str
