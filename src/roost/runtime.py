"""The running Roost: settings, store and services wired together, started and stopped as one."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from roost.config import Settings
from roost.security.tokens import new_secret_key
from roost.services.audit import AuditService
from roost.services.devices import DeviceService
from roost.services.identity import IdentityService
from roost.services.inventory import InventoryService
from roost.store import migrate
from roost.store.database import Database, open_database

log = logging.getLogger(__name__)

SECRET_FILE = "secret.key"


def utcnow() -> datetime:
    """The current time in UTC (the default clock of every service)."""
    return datetime.now(UTC)


def load_secret_key(settings: Settings) -> str:
    """The token signing key: ROOST_SECRET_KEY, or a key file in the data dir made on first use.

    It is kept out of the database on purpose: a leaked database dump then cannot mint tokens.
    """
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / SECRET_FILE
    if path.is_file():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = new_secret_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


@dataclass
class Roost:
    """Everything a Roost process serves with, built from settings."""

    settings: Settings
    db: Database
    identity: IdentityService
    inventory: InventoryService
    devices: DeviceService
    audit: AuditService
    clock: Callable[[], datetime] = utcnow
    generated_admin_password: str | None = field(default=None)

    @classmethod
    def build(cls, settings: Settings, clock: Callable[[], datetime] = utcnow) -> Roost:
        """Open the store and create the services (nothing is started yet)."""
        db = open_database(
            settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
        secret = load_secret_key(settings)
        return cls(
            settings=settings,
            db=db,
            identity=IdentityService(db, settings, secret, clock),
            inventory=InventoryService(db, clock),
            devices=DeviceService(db, clock),
            audit=AuditService(db, clock),
            clock=clock,
        )

    async def start(self) -> None:
        """Upgrade the schema and make sure the default tenant and superuser exist."""
        before, after = await migrate.upgrade(self.db)
        if before != after:
            log.info("database schema upgraded from %s to %s", before or "empty", after)
        self.generated_admin_password = await self.identity.bootstrap(
            self.settings.admin_password or None
        )

    async def close(self) -> None:
        """Release connections."""
        await self.db.dispose()
