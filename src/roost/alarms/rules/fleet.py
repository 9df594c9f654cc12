"""What the rules engine knows of the fleet: device facts, series owners, rule targets (cached).

Rules look at a device's attributes (``device.site_id``, ``device.tags.floor``), group
membership and heartbeat interval; targets are resolved to sets of device keys. Everything here
is read in bulk and cached for :data:`FACTS_TTL_S`, so evaluating a message costs dict lookups.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from roost.errors import InvalidInput
from roost.inventory.tables import device_models, device_tags, devices, group_members, groups
from roost.inventory.tables import sensors as sensor_table
from roost.jobs.rules import parse_targets
from roost.jobs.store import target_condition
from roost.presence.rules import effective_policy
from roost.store.database import Database

#: Device facts and target sets are re-read this often: an inventory change (a tag, a group
#: member) reaches rules within a minute, and a busy fleet costs one bulk read a minute.
FACTS_TTL_S: Final = 60.0
_CHUNK: Final = 500


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """A device as rules see it."""

    pk: int
    tenant_id: str
    id: str
    name: str
    site_id: str | None
    model_id: str | None
    tags: Mapping[str, str]
    group_ids: tuple[str, ...]
    heartbeat_s: float

    def document(self) -> dict[str, Any]:
        """``device`` in rule expressions."""
        return {
            "id": self.id,
            "name": self.name,
            "site_id": self.site_id,
            "model_id": self.model_id,
            "tags": dict(self.tags),
            "groups": list(self.group_ids),
        }


@dataclass(frozen=True, slots=True)
class SeriesOwner:
    """Whose a series is: the tenant, the device and the sensor id."""

    tenant_id: str
    device_pk: int
    sensor: str


class Fleet:
    """Cached reads of the inventory for the rules engine."""

    def __init__(self, db: Database, clock: Any = time.monotonic) -> None:
        self.db = db
        self.clock = clock
        self._facts: dict[int, tuple[float, DeviceFacts | None]] = {}
        self._series: dict[int, SeriesOwner | None] = {}

    async def facts(self, pks: Iterable[int]) -> dict[int, DeviceFacts]:
        """Facts of these devices (a deleted one is left out).

        Only devices never seen are read here: :meth:`preload` keeps the others fresh from the
        engine's background refresh, so evaluating a message of a known device reads nothing.
        """
        now = self.clock()
        wanted = set(pks)
        missing = [pk for pk in wanted if pk not in self._facts]
        if missing:
            await self._load(missing, now)
        out = {}
        for pk in wanted:
            entry = self._facts.get(pk)
            if entry is not None and entry[1] is not None:
                out[pk] = entry[1]
        return out

    async def preload(self, tenant_ids: Iterable[str]) -> None:
        """Read the facts of every device of these tenants (in bulk, off the hot path)."""
        tenants = sorted(set(tenant_ids))
        if not tenants:
            return
        async with self.db.read() as conn:
            pks = [
                int(pk)
                for (pk,) in await conn.execute(
                    sa.select(devices.c.pk).where(devices.c.tenant_id.in_(tenants))
                )
            ]
        await self._load(pks, self.clock())

    async def _load(self, pks: list[int], now: float) -> None:
        for start in range(0, len(pks), _CHUNK):
            chunk = pks[start : start + _CHUNK]
            found: dict[int, dict[str, Any]] = {}
            async with self.db.read() as conn:
                rows = await conn.execute(
                    sa.select(
                        devices.c.pk,
                        devices.c.tenant_id,
                        devices.c.id,
                        devices.c.name,
                        devices.c.site_id,
                        devices.c.model_id,
                        devices.c.heartbeat_interval_s,
                        device_models.c.heartbeat_interval_s,
                    )
                    .select_from(
                        devices.outerjoin(
                            device_models,
                            (device_models.c.tenant_id == devices.c.tenant_id)
                            & (device_models.c.id == devices.c.model_id),
                        )
                    )
                    .where(devices.c.pk.in_(chunk))
                )
                for pk, tenant, did, name, site, model, own, model_beat in rows:
                    found[pk] = {
                        "pk": pk, "tenant_id": tenant, "id": did, "name": name, "site_id": site,
                        "model_id": model, "tags": {}, "groups": [],
                        "heartbeat_s": effective_policy(model_beat, own).interval_s,
                    }  # fmt: skip
                for pk, key, value in await conn.execute(
                    sa.select(
                        device_tags.c.device_pk, device_tags.c.key, device_tags.c.value
                    ).where(device_tags.c.device_pk.in_(chunk))
                ):
                    if pk in found:
                        found[pk]["tags"][key] = value
                for pk, group in await conn.execute(
                    sa.select(group_members.c.device_pk, group_members.c.group_id).where(
                        group_members.c.device_pk.in_(chunk)
                    )
                ):
                    if pk in found:
                        found[pk]["groups"].append(group)
            for pk in chunk:
                raw = found.get(pk)
                facts = None
                if raw is not None:
                    facts = DeviceFacts(
                        raw["pk"], raw["tenant_id"], raw["id"], raw["name"], raw["site_id"],
                        raw["model_id"], raw["tags"], tuple(sorted(raw["groups"])),
                        raw["heartbeat_s"],
                    )  # fmt: skip
                self._facts[pk] = (now, facts)

    async def owners(self, series_pks: Iterable[int]) -> dict[int, SeriesOwner | None]:
        """Owners of these series (None for a series whose sensor is gone)."""
        wanted = set(series_pks)
        missing = [pk for pk in wanted if pk not in self._series]
        for start in range(0, len(missing), _CHUNK):
            chunk = missing[start : start + _CHUNK]
            async with self.db.read() as conn:
                rows = await conn.execute(
                    sa.select(
                        sensor_table.c.pk,
                        devices.c.tenant_id,
                        sensor_table.c.device_pk,
                        sensor_table.c.id,
                    )
                    .join(devices, devices.c.pk == sensor_table.c.device_pk)
                    .where(sensor_table.c.pk.in_(chunk))
                )
                known = {pk: SeriesOwner(t, d, s) for pk, t, d, s in rows}
            for pk in chunk:
                self._series[pk] = known.get(pk)
        return {pk: self._series.get(pk) for pk in wanted}

    def forget_series(self) -> None:
        """Drop the series cache (sensors were deleted or retyped)."""
        self._series.clear()

    async def sensor_series(self, tenant_id: str, sensor: str) -> dict[int, int]:
        """series pk → device pk of every sensor named ``sensor`` in the tenant."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(sensor_table.c.pk, sensor_table.c.device_pk)
                .join(devices, devices.c.pk == sensor_table.c.device_pk)
                .where(devices.c.tenant_id == tenant_id, sensor_table.c.id == sensor)
            )
            found = {int(pk): int(device_pk) for pk, device_pk in rows}
        for pk, device_pk in found.items():
            self._series[pk] = SeriesOwner(tenant_id, device_pk, sensor)
        return found

    async def targets(self, tenant_id: str, raw: Mapping[str, Any] | None) -> frozenset[int] | None:
        """Device keys a rule's targets select now (None: every device of the tenant).

        Devices or groups that no longer exist select nothing (the rule keeps its others).
        """
        if not raw:
            return None
        targets = parse_targets(raw)
        async with self.db.read() as conn:
            condition = await target_condition(conn, tenant_id, targets, missing_ok=True)
            rows = await conn.execute(sa.select(devices.c.pk).where(condition))
            return frozenset(int(pk) for (pk,) in rows)

    async def check_targets(self, tenant_id: str, raw: Mapping[str, Any] | None) -> None:
        """Refuse targets that name unknown devices or groups (422 naming them)."""
        if not raw:
            return
        targets = parse_targets(raw)
        async with self.db.read() as conn:
            await target_condition(conn, tenant_id, targets)

    async def check_sensor(self, tenant_id: str, sensor: str) -> None:
        """Refuse a sensor id no device of the tenant has."""
        async with self.db.read() as conn:
            found = (
                await conn.execute(
                    sa.select(sensor_table.c.pk)
                    .join(devices, devices.c.pk == sensor_table.c.device_pk)
                    .where(devices.c.tenant_id == tenant_id, sensor_table.c.id == sensor)
                    .limit(1)
                )
            ).first()
        if found is None:
            raise InvalidInput(
                f"no device of this tenant has a sensor {sensor!r}: check the sensor id "
                "(GET /api/v1/devices/{id}/sensors)"
            )

    async def group_exists(self, tenant_id: str, group_id: str) -> bool:
        """True when the tenant has the group."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(groups.c.id).where(
                        groups.c.tenant_id == tenant_id, groups.c.id == group_id
                    )
                )
            ).first()
        return row is not None
