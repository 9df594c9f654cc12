"""Who is acting, and what each role may do.

Roles are ordered: a viewer reads; an operator also changes the fleet (inventory, devices, imports)
and reads the audit log; an admin also manages the tenant's users and API keys. The platform
superuser may act in any tenant and manage tenants.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from roost.errors import PermissionDenied


class Role(enum.IntEnum):
    """A user's role in its tenant; a larger value may do everything a smaller one may."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        """The role named ``viewer``, ``operator`` or ``admin``."""
        try:
            return cls[name.upper()]
        except KeyError:
            raise ValueError(f"unknown role {name!r}: use viewer, operator or admin") from None

    @property
    def label(self) -> str:
        """The role's name as the API spells it."""
        return self.name.lower()


ROLE_NAMES = tuple(role.label for role in Role)


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated caller of a service: a user, a user's API key, or the local CLI."""

    tenant_id: str
    name: str
    role: Role
    is_superuser: bool = False
    user_id: int | None = None
    api_key_id: str | None = None

    def require(self, role: Role) -> None:
        """Raise PermissionDenied unless the actor holds at least ``role`` in its tenant."""
        if self.role < role:
            raise PermissionDenied(f"this needs the {role.label} role; you are {self.role.label}")

    def require_superuser(self) -> None:
        """Raise PermissionDenied unless the actor is the platform superuser."""
        if not self.is_superuser:
            raise PermissionDenied("only the platform superuser may do this")

    def in_tenant(self, tenant_id: str) -> Actor:
        """The same superuser acting inside another tenant (as its admin)."""
        self.require_superuser()
        return Actor(
            tenant_id=tenant_id,
            name=self.name,
            role=Role.ADMIN,
            is_superuser=True,
            user_id=self.user_id,
            api_key_id=self.api_key_id,
        )


def local_admin(tenant_id: str = "default") -> Actor:
    """The actor of commands run on the server machine itself (``roost`` CLI with store access)."""
    return Actor(tenant_id=tenant_id, name="cli", role=Role.ADMIN, is_superuser=True)
