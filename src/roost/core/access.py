"""Who is acting, and what each role may do.

Roles are ordered: a viewer reads; an operator also changes the fleet (inventory, devices, imports)
and reads the audit log; an admin also manages the tenant's users and API keys. The platform
superuser may act in any tenant and manage tenants. A consumer (an app holding a consumer key)
reads only the telemetry its grants name, on the read doors that accept consumer keys.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from roost.errors import InvalidInput, PermissionDenied


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
class Grants:
    """What a consumer may read: whole devices, members of groups, or single sensors.

    Groups are names here; their members are resolved when data is read, so a grant on a group
    follows membership (static or dynamic).
    """

    devices: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    sensors: frozenset[tuple[str, str]] = frozenset()  # (device id, sensor id)

    @classmethod
    def parse(cls, raw: Any) -> Grants:
        """From the API form ``[{"devices": [...]}, {"groups": [...]}, {"sensors": [...]}]``."""
        if not isinstance(raw, list):
            raise InvalidInput("grants must be a list of {devices}, {groups} or {sensors} objects")
        devices: set[str] = set()
        groups: set[str] = set()
        sensors: set[tuple[str, str]] = set()
        for grant in raw:
            if not isinstance(grant, Mapping) or len(grant) != 1:
                raise InvalidInput(
                    'each grant is one of {"devices": [...]}, {"groups": [...]}, {"sensors": [...]}'
                )
            ((kind, value),) = grant.items()
            if kind == "devices":
                devices.update(_names(value, "devices"))
            elif kind == "groups":
                groups.update(_names(value, "groups"))
            elif kind == "sensors":
                if not isinstance(value, list):
                    raise InvalidInput('"sensors" is a list of {device_id, sensor_ids}')
                for entry in value:
                    if not isinstance(entry, Mapping) or set(entry) != {"device_id", "sensor_ids"}:
                        raise InvalidInput(
                            'each sensor grant is {"device_id", "sensor_ids": [...]}'
                        )
                    (device_id,) = _names([entry["device_id"]], "device_id")
                    sensors.update(
                        (device_id, s) for s in _names(entry["sensor_ids"], "sensor_ids")
                    )
            else:
                raise InvalidInput(f"unknown grant {kind!r}: use devices, groups or sensors")
        return cls(frozenset(devices), frozenset(groups), frozenset(sensors))

    def to_json(self) -> list[dict[str, Any]]:
        """The API (and stored) form, in a stable order."""
        out: list[dict[str, Any]] = []
        if self.devices:
            out.append({"devices": sorted(self.devices)})
        if self.groups:
            out.append({"groups": sorted(self.groups)})
        if self.sensors:
            by_device: dict[str, list[str]] = {}
            for device_id, sensor_id in sorted(self.sensors):
                by_device.setdefault(device_id, []).append(sensor_id)
            out.append(
                {"sensors": [{"device_id": d, "sensor_ids": s} for d, s in by_device.items()]}
            )
        return out


def _names(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and 0 < len(v) <= 128 for v in value
    ):
        raise InvalidInput(f"{what} must be a list of ids (1 to 128 characters)")
    return list(value)


@dataclass(frozen=True, slots=True)
class GrantScope:
    """Grants resolved at one moment: the devices readable whole, and single sensors."""

    devices: frozenset[str]
    sensors: Mapping[str, frozenset[str]]

    def sees_device(self, device_id: str) -> bool:
        """True when some of the device's data is granted (else it is as if it did not exist)."""
        return device_id in self.devices or device_id in self.sensors

    def allows(self, device_id: str, kind: str, name: str | None) -> bool:
        """True when an item is granted: ``kind`` is ``telemetry`` (name = sensor) or ``event``."""
        if device_id in self.devices:
            return True
        return kind == "telemetry" and name in self.sensors.get(device_id, ())

    def device_ids(self) -> Iterable[str]:
        """Every device with some granted data."""
        return self.devices | set(self.sensors)


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated caller of a service: a user, a user's API key, or the local CLI."""

    tenant_id: str
    name: str
    role: Role
    is_superuser: bool = False
    user_id: int | None = None
    api_key_id: str | None = None
    # Set for a consumer key: the caller reads only what these grant.
    consumer_id: str | None = None
    grants: Grants | None = None

    @property
    def is_consumer(self) -> bool:
        """True for an app's consumer key (limited to its grants)."""
        return self.grants is not None

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
