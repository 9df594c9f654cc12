"""Reading telemetry and events back: history, aggregates, last known values, consumer groups."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import orjson
import sqlalchemy as sa

from roost.core.access import Actor, GrantScope, Role
from roost.core.timeparse import TimeParseError, parse_instant, parse_zone
from roost.errors import InvalidInput, NotFound, ValidationFailed
from roost.inventory.devices.query import DeviceQuery, group_condition
from roost.inventory.devices.service import DeviceService
from roost.inventory.tables import devices, groups, sensors
from roost.store.database import Database
from roost.store.queries import fetch_one
from roost.telemetry.consumers.service import scope_of
from roost.telemetry.engine.base import AGGREGATES, TimeSeriesStore
from roost.telemetry.engine.batch import DecodedBatch, decode, slot_value
from roost.telemetry.engine.tables import ts_log
from roost.telemetry.queries.buckets import bucket_count, bucket_edges

# One answer of raw points: enough for a chart, small enough for one response.
DEFAULT_POINTS = 1000
MAX_POINTS = 100_000
# Buckets of one aggregate answer: a year of hours is 8,760.
MAX_BUCKETS = 10_000
# Devices one fleet-wide latest answer may cover.
MAX_FLEET_DEVICES = 20_000
# The ingest rate is measured over at most this much of the recent log (the console's overview).
RATE_WINDOW_S = 60.0
# Log rows (committed batches) read at most for one rate: under heavy ingest a batch holds
# thousands of points, so the window then shrinks to the newest rows and the cost stays bounded.
RATE_MAX_ROWS = 200
# Log rows read per query while walking back from the newest.
_RATE_CHUNK = 50
_FOREVER = 2**63 - 1
_BEGINNING = -(2**63)
_INTERVAL = re.compile(r"(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d|w)?")
_UNIT_NS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
    "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000,
    "w": 604_800_000_000_000,
}  # fmt: skip


def rfc3339(ns: int) -> str:
    """``2026-11-22T08:30:00.123456Z``; nine digits when the instant has sub-µs precision."""
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if rest % 1000:
        return f"{stamp}.{rest:09d}Z"
    return f"{stamp}.{rest // 1000:06d}Z"


def rfc3339_many(stamps: Sequence[int] | npt.NDArray[np.int64]) -> list[str]:
    """:func:`rfc3339` of many instants at once (numpy: ~1 µs each instead of ~8)."""
    if len(stamps) == 0:
        return []
    ns = np.asarray(stamps, dtype=np.int64)
    texts: list[str] = np.datetime_as_string(
        ns.astype("datetime64[ns]").astype("datetime64[us]"), unit="us"
    ).tolist()
    out = [text + "Z" for text in texts]
    for i in np.flatnonzero(ns % 1000):  # sub-µs precision: nine digits, as rfc3339 says
        out[i] = rfc3339(int(ns[i]))
    return out


def parse_bound(raw: str | None, default: int, name: str, zone: tzinfo | None = None) -> int:
    """A ``from``/``to`` query value: RFC 3339, a date, epoch s/ms/µs/ns, ``now-1h``, ``-7d``…

    Dates and offset-less times are read in ``zone`` (UTC when None); a bad value is a 422
    naming the parameter and the accepted forms.
    """
    if raw is None or raw == "":
        return default
    try:
        return parse_instant(raw, now_ns=time.time_ns(), zone=zone)
    except TimeParseError as exc:
        raise _bad_query(name, str(exc)) from exc


def parse_tz(raw: str | None) -> ZoneInfo | None:
    """The ``tz`` query value: an IANA zone name, or None for UTC."""
    if raw is None or raw == "":
        return None
    try:
        return parse_zone(raw)
    except TimeParseError as exc:
        raise _bad_query("tz", str(exc)) from exc


def _bad_query(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"{name}: {message}", [{"field": name, "in": "query", "message": message}]
    )


def parse_interval(raw: str) -> int:
    """``15m``, ``1h``, ``30s``, ``1d``, or a number of seconds → ns."""
    match = _INTERVAL.fullmatch(raw.strip())
    if match is None:
        raise InvalidInput(f"interval {raw!r} must look like 30s, 15m, 1h or 1d")
    number, unit = match.groups()
    ns = round(float(number) * _UNIT_NS[unit or "s"])
    if ns <= 0:
        raise InvalidInput("interval must be positive")
    return ns


def parse_aggregates(raw: str) -> list[str]:
    """``avg,max`` → ["avg", "max"], refusing unknown functions."""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in AGGREGATES]
    if not names or unknown:
        raise InvalidInput(f"agg must be a comma-separated list of {', '.join(AGGREGATES)}")
    return list(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """Who a series belongs to (for live streams and consumer groups)."""

    tenant_id: str
    device_id: str
    sensor_id: str


class SeriesDirectory:
    """series pk → (tenant, device, sensor), device pk → (tenant, device): cached lookups."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._series: dict[int, SeriesInfo] = {}
        self._devices: dict[int, tuple[str, str]] = {}

    async def resolve(self, series_pks: Sequence[int], device_pks: Sequence[int]) -> None:
        """Load whatever of these is not cached yet."""
        missing_series = [pk for pk in set(series_pks) if pk not in self._series]
        missing_devices = [pk for pk in set(device_pks) if pk not in self._devices]
        if not missing_series and not missing_devices:
            return
        async with self.db.read() as conn:
            for start in range(0, len(missing_series), 500):
                chunk = missing_series[start : start + 500]
                rows = await conn.execute(
                    sa.select(sensors.c.pk, devices.c.tenant_id, devices.c.id, sensors.c.id)
                    .join(devices, devices.c.pk == sensors.c.device_pk)
                    .where(sensors.c.pk.in_(chunk))
                )
                for row in rows:
                    self._series[row[0]] = SeriesInfo(row[1], row[2], row[3])
            for start in range(0, len(missing_devices), 500):
                chunk = missing_devices[start : start + 500]
                owners = await conn.execute(
                    sa.select(devices.c.pk, devices.c.tenant_id, devices.c.id).where(
                        devices.c.pk.in_(chunk)
                    )
                )
                for pk, tenant_id, device_id in owners:
                    self._devices[pk] = (tenant_id, device_id)

    def series(self, pk: int) -> SeriesInfo | None:
        """A resolved series (None when unknown, e.g. its sensor was deleted)."""
        return self._series.get(pk)

    def device(self, pk: int) -> tuple[str, str] | None:
        """A resolved device's (tenant, id)."""
        return self._devices.get(pk)

    def forget(self) -> None:
        """Drop the caches (sensors or devices were deleted)."""
        self._series.clear()
        self._devices.clear()


def batch_items(
    batch: DecodedBatch,
    first_offset: int,
    directory: SeriesDirectory,
    *,
    tenant_id: str | None = None,
    after_offset: int | None = None,
    keep: Callable[[str, str, str | None], bool] | None = None,
) -> list[dict[str, Any]]:
    """The items of a committed batch as API objects, filtered by tenant, offset and ``keep``.

    ``keep(device_id, kind, name)``: kind is ``telemetry`` (name = sensor) or ``event`` (type).
    Resolve the batch's series and devices in ``directory`` first.
    """
    out: list[dict[str, Any]] = []
    n = batch.points
    chosen: list[tuple[int, SeriesInfo]] = []
    first = 0 if after_offset is None else max(0, after_offset + 1 - first_offset)
    for i in range(first, n):
        info = directory.series(int(batch.series[i]))
        if info is None or (tenant_id is not None and info.tenant_id != tenant_id):
            continue
        if keep is not None and not keep(info.device_id, "telemetry", info.sensor_id):
            continue
        chosen.append((i, info))
    if chosen:
        rows = np.fromiter((i for i, _ in chosen), dtype=np.int64, count=len(chosen))
        stamps = rfc3339_many(batch.ts[rows])
        received = rfc3339_many(batch.recv[rows])
        kinds, slots = batch.kinds[rows].tolist(), batch.slots[rows].tolist()
        for k, (i, info) in enumerate(chosen):
            out.append(
                {
                    "offset": first_offset + i,
                    "type": "telemetry",
                    "device_id": info.device_id,
                    "sensor": info.sensor_id,
                    "ts": stamps[k],
                    "value": slot_value(kinds[k], slots[k], batch.texts),
                    "received_at": received[k],
                }
            )
    for j, event in enumerate(batch.events):
        offset = first_offset + n + j
        if after_offset is not None and offset <= after_offset:
            continue
        owner = directory.device(event.device_pk)
        if owner is None or (tenant_id is not None and owner[0] != tenant_id):
            continue
        if keep is not None and not keep(owner[1], "event", event.type):
            continue
        out.append(
            {
                "offset": offset,
                "type": "event",
                "device_id": owner[1],
                "event": event.type,
                "ts": rfc3339(event.ts),
                "received_at": rfc3339(event.recv),
                "body": orjson.loads(event.body),
            }
        )
    return out


class TelemetryService:
    """Queries over the time-series store, with the registry's access rules."""

    def __init__(
        self,
        db: Database,
        store: TimeSeriesStore,
        devices_service: DeviceService,
        directory: SeriesDirectory,
    ) -> None:
        self.db = db
        self.store = store
        self.devices = devices_service
        self.directory = directory

    async def _visible(self, actor: Actor, device_id: str) -> GrantScope | None:
        """A consumer's resolved grants; NotFound when none of the device's data is granted."""
        scope = await scope_of(self.db, actor)
        if scope is not None and not scope.sees_device(device_id):
            raise NotFound(f"no device {device_id!r}")
        return scope

    async def _sensor(self, actor: Actor, device_id: str, sensor_id: str) -> dict[str, Any]:
        scope = await self._visible(actor, device_id)
        if scope is not None and not scope.allows(device_id, "telemetry", sensor_id):
            raise NotFound(f"no sensor {sensor_id!r} on device {device_id!r}")
        async with self.db.read() as conn:
            row = await fetch_one(
                conn,
                sa.select(
                    sensors.c.pk, sensors.c.type, sensors.c.unit, devices.c.pk.label("device_pk")
                )
                .join(devices, devices.c.pk == sensors.c.device_pk)
                .where(
                    devices.c.tenant_id == actor.tenant_id,
                    devices.c.id == device_id,
                    sensors.c.id == sensor_id,
                ),
            )
        if row is None:
            await self.devices.get(actor, device_id)  # 404 for the device first
            raise NotFound(f"no sensor {sensor_id!r} on device {device_id!r}")
        return row

    async def history(
        self,
        actor: Actor,
        device_id: str,
        sensor_id: str,
        *,
        start: int | None,
        end: int | None,
        limit: int,
        order: str | None,
    ) -> dict[str, Any]:
        """Raw points of one sensor; newest first unless ``from`` is given or ``order=asc``."""
        actor.require(Role.VIEWER)
        if not 1 <= limit <= MAX_POINTS:
            raise InvalidInput(f"limit must be between 1 and {MAX_POINTS}")
        sensor = await self._sensor(actor, device_id, sensor_id)
        lo = _BEGINNING if start is None else start
        hi = _FOREVER if end is None else end
        if lo >= hi:
            raise InvalidInput("from must be before to")
        descending = (order or ("asc" if start is not None else "desc")) == "desc"
        points = await self.store.points(sensor["pk"], lo, hi, limit=limit, descending=descending)
        return {
            "device_id": device_id,
            "sensor": sensor_id,
            "type": sensor["type"],
            "unit": sensor["unit"],
            "items": [
                {"ts": ts, "value": p.value}
                for ts, p in zip(rfc3339_many([p.ts for p in points]), points, strict=True)
            ],
        }

    async def aggregate(
        self,
        actor: Actor,
        device_id: str,
        sensor_id: str,
        *,
        start: int | None,
        end: int | None,
        interval: int,
        functions: Sequence[str],
        zone: tzinfo | None = None,
    ) -> dict[str, Any]:
        """Aggregates per calendar bucket of ``interval`` ns between ``from`` and ``to``.

        Buckets start on whole hours, midnights (in ``zone`` when given) or epoch multiples,
        not at ``from``: see :mod:`roost.telemetry.queries.buckets`.
        """
        actor.require(Role.VIEWER)
        sensor = await self._sensor(actor, device_id, sensor_id)
        hi = time.time_ns() if end is None else end
        lo = hi - 86_400_000_000_000 if start is None else start
        if lo >= hi:
            raise InvalidInput("from must be before to")
        if bucket_count(lo, hi, interval) > MAX_BUCKETS:
            raise InvalidInput(
                f"that range and interval make more than {MAX_BUCKETS} buckets: widen the interval"
            )
        edges = bucket_edges(lo, hi, interval, zone)
        buckets = await self.store.aggregate(
            sensor["pk"], lo, hi, interval, functions, edges=edges.tolist()
        )
        return {
            "device_id": device_id,
            "sensor": sensor_id,
            "type": sensor["type"],
            "unit": sensor["unit"],
            "interval_s": interval / 1e9,
            "items": [{"ts": rfc3339(b.start), **b.values} for b in buckets],
        }

    async def latest(self, actor: Actor, device_id: str) -> dict[str, Any]:
        """The last known value of every sensor of a device (a consumer: its granted ones)."""
        actor.require(Role.VIEWER)
        scope = await self._visible(actor, device_id)
        async with self.db.read() as conn:
            device = await fetch_one(
                conn,
                sa.select(devices.c.pk).where(
                    devices.c.tenant_id == actor.tenant_id, devices.c.id == device_id
                ),
            )
            if device is None:
                raise NotFound(f"no device {device_id!r}")
            rows = (
                await conn.execute(
                    sa.select(sensors.c.pk, sensors.c.id, sensors.c.type, sensors.c.unit).where(
                        sensors.c.device_pk == device["pk"]
                    )
                )
            ).all()
        by_pk = {
            pk: (sensor_id, kind, unit)
            for pk, sensor_id, kind, unit in rows
            if scope is None or scope.allows(device_id, "telemetry", sensor_id)
        }
        latest = await self.store.latest(list(by_pk))
        items = []
        for entry in sorted(latest, key=lambda e: by_pk[e.series][0]):
            sensor_id, kind, unit = by_pk[entry.series]
            items.append(
                {
                    "sensor": sensor_id,
                    "type": kind,
                    "unit": unit,
                    "ts": rfc3339(entry.ts),
                    "value": entry.value,
                    "received_at": rfc3339(entry.recv),
                }
            )
        return {"device_id": device_id, "items": items}

    async def fleet_latest(
        self,
        actor: Actor,
        query: DeviceQuery,
        sensor_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Last known values of every device matching the filters (group, site, …).

        A consumer gets only its granted devices and sensors among them.
        """
        actor.require(Role.VIEWER)
        scope = await scope_of(self.db, actor)
        # Only the series keys come from SQL; who owns each is in the series directory (a
        # process-wide cache): 10,000 joined rows as Python objects cost more than the store.
        device_filters = {
            name: getattr(query, name)
            for name in ("site_id", "model_id", "firmware_id", "customer_id")
            if getattr(query, name) is not None
        }
        async with self.db.read() as conn:
            group = None
            if query.group is not None:
                group = await fetch_one(
                    conn,
                    sa.select(groups).where(
                        groups.c.tenant_id == actor.tenant_id, groups.c.id == query.group
                    ),
                )
                if group is None:
                    raise NotFound(f"no group {query.group!r}")
            stmt = sa.select(sensors.c.pk)
            if sensor_ids:
                stmt = stmt.where(sensors.c.id.in_(list(sensor_ids)))
            if (
                group is not None
                and group.get("filter") is None
                and not device_filters
                and scope is None
            ):
                # A static group's member rows name the tenant's devices: no join needed.
                stmt = stmt.where(
                    group_condition(actor.tenant_id, group, device_pk=sensors.c.device_pk)
                )
            else:
                stmt = stmt.join(devices, sensors.c.device_pk == devices.c.pk).where(
                    devices.c.tenant_id == actor.tenant_id,
                    *(devices.c[name] == value for name, value in device_filters.items()),
                )
                if scope is not None:  # a consumer: only devices with granted data are read
                    stmt = stmt.where(devices.c.id.in_(sorted(scope.device_ids())))
                if group is not None:
                    stmt = stmt.where(group_condition(actor.tenant_id, group))
            series = list((await conn.execute(stmt)).scalars())
        await self.directory.resolve(series, ())
        owners: dict[int, SeriesInfo] = {}
        for pk in series:
            info = self.directory.series(pk)
            if info is not None and (  # None: deleted since the query
                scope is None or scope.allows(info.device_id, "telemetry", info.sensor_id)
            ):
                owners[pk] = info
        if len({info.device_id for info in owners.values()}) > MAX_FLEET_DEVICES:
            raise InvalidInput(f"more than {MAX_FLEET_DEVICES} devices match: narrow the filters")
        latest = await self.store.latest(list(owners))
        fleet: dict[str, dict[str, Any]] = {}
        stamps = rfc3339_many([entry.ts for entry in latest])
        for entry, ts in zip(latest, stamps, strict=True):
            info = owners[entry.series]
            fleet.setdefault(info.device_id, {})[info.sensor_id] = {"ts": ts, "value": entry.value}
        return {
            "items": [{"device_id": d, "sensors": fleet[d]} for d in sorted(fleet)],
            "total": len(fleet),
        }

    async def ingest_rate(self, actor: Actor, window_s: float = RATE_WINDOW_S) -> dict[str, Any]:
        """The tenant's telemetry points per second, over the newest log rows of the window.

        Counted from the ingest log (committed batches), newest first, reading at most
        :data:`RATE_MAX_ROWS` rows: ``window_s`` in the answer is the time actually covered.
        """
        actor.require(Role.VIEWER)
        now = time.time_ns()
        cutoff = now - int(window_s * 1e9)
        counted: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
        oldest = cutoff
        before: int | None = None
        read = 0
        async with self.db.read() as conn:
            while read < RATE_MAX_ROWS:
                stmt = sa.select(ts_log.c.first_offset, ts_log.c.committed_ns, ts_log.c.data)
                if before is not None:
                    stmt = stmt.where(ts_log.c.first_offset < before)
                rows = (
                    await conn.execute(
                        stmt.order_by(ts_log.c.first_offset.desc()).limit(
                            min(_RATE_CHUNK, RATE_MAX_ROWS - read)
                        )
                    )
                ).all()
                fresh = [row for row in rows if row.committed_ns >= cutoff]
                for row in fresh:
                    series, counts = np.unique(decode(row.data).series, return_counts=True)
                    counted.append((series, counts))
                read += len(fresh)
                if len(fresh) < len(rows) or not rows:
                    break  # reached the window's start, or the log's
                before = rows[-1].first_offset
                if read >= RATE_MAX_ROWS:
                    oldest = rows[-1].committed_ns  # cut short: the window is what was read
        await self.directory.resolve([int(pk) for s, _ in counted for pk in s], ())
        points = 0
        for series, counts in counted:
            for pk, n in zip(series.tolist(), counts.tolist(), strict=True):
                info = self.directory.series(pk)
                if info is not None and info.tenant_id == actor.tenant_id:
                    points += n
        seconds = max((now - oldest) / 1e9, 1e-3)
        return {"points": points, "window_s": seconds, "points_per_s": points / seconds}

    async def events(
        self,
        actor: Actor,
        device_id: str,
        *,
        types: Sequence[str],
        start: int | None,
        end: int | None,
        limit: int,
        order: str | None,
    ) -> dict[str, Any]:
        """A device's events, newest first unless ``from`` is given or ``order=asc``.

        A consumer granted only some sensors of the device sees no events of it.
        """
        actor.require(Role.VIEWER)
        if not 1 <= limit <= MAX_POINTS:
            raise InvalidInput(f"limit must be between 1 and {MAX_POINTS}")
        scope = await self._visible(actor, device_id)
        async with self.db.read() as conn:
            device = await fetch_one(
                conn,
                sa.select(devices.c.pk).where(
                    devices.c.tenant_id == actor.tenant_id, devices.c.id == device_id
                ),
            )
        if device is None:
            raise NotFound(f"no device {device_id!r}")
        lo = _BEGINNING if start is None else start
        hi = _FOREVER if end is None else end
        descending = (order or ("asc" if start is not None else "desc")) == "desc"
        stored = await self.store.events(
            device["pk"], lo, hi, types=list(types) or None, limit=limit, descending=descending
        )
        if scope is not None and not scope.allows(device_id, "event", None):
            stored = []
        stamps = rfc3339_many([e.ts for e in stored])
        received = rfc3339_many([e.recv for e in stored])
        return {
            "device_id": device_id,
            "items": [
                {
                    "ts": ts,
                    "received_at": recv,
                    "event": e.type,
                    "offset": e.offset,
                    "body": e.body,
                }
                for e, ts, recv in zip(stored, stamps, received, strict=True)
            ],
        }
