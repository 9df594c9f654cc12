"""What every device-facing service is built with (state, commands, jobs, presence, ...).

One dataclass instead of long constructor lists: a service takes ``ServiceDeps`` and keeps what
it needs. It holds shared machinery only; a service that calls another capability's service
takes it as a constructor argument of its own. ``clock`` is the services' wall clock (tests of
pure logic inject one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from roost.bus.base import Bus
from roost.config import Settings
from roost.core.devicelink import DeviceLink
from roost.core.scheduler import Scheduler
from roost.store.database import Database


@dataclass(frozen=True)
class ServiceDeps:
    """The shared parts a service is built from."""

    settings: Settings
    db: Database
    bus: Bus
    link: DeviceLink
    scheduler: Scheduler
    clock: Callable[[], datetime]
    # The server's secret key (signs tokens, seals stored secrets).
    secret_key: str
