"""Telemetry and event ingest: the one function behind every device door.

A door (MQTT, HTTP, WebSocket) authenticates the device, gets its :class:`DeviceContext` once, and
hands each message to :meth:`IngestService.try_submit`: the payload is parsed, normalised against
the device's sensors (``telemetry/rules.py``) and appended to the writer's current batch, all
synchronously. The door acknowledges when the returned ticket completes, which is after the batch
is durable. Work that must wait on the database — creating a sensor seen for the first time,
checking a message id against the store — goes through :meth:`IngestService.submit` instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from roost.core.access import Actor, Role
from roost.core.batching import BatchLoader
from roost.core.device_identity import DeviceIdentity
from roost.core.ids import is_slug
from roost.core.ingest import CommitTicket, IngestKind, IngestOutcome
from roost.core.json import OUT_OF_RANGE_CODE, IntegerOutOfRange, field_path
from roost.core.json import loads as load_json
from roost.errors import Conflict, NotFound
from roost.inventory.devices.service import DeviceService
from roost.inventory.tables import device_models, devices, sensors
from roost.store.database import Database
from roost.telemetry.engine.base import TimeSeriesStore
from roost.telemetry.engine.batch import (
    KIND_BY_TYPE,
    KIND_DOUBLE,
    TYPE_BY_KIND,
    BatchBuilder,
    Event,
)
from roost.telemetry.ingest.writer import IngestWriter
from roost.telemetry.rules import (
    FUTURE_TOLERANCE_NS,
    MAX_ITEMS,
    ItemError,
    coerce,
    event_type,
    infer_kind,
    item_timestamp,
    readings,
    unwrap,
)

log = logging.getLogger(__name__)

# Message ids a device context remembers, so that a quick resend is recognised without asking
# the store (older ones are checked there).
RECENT_MSG_IDS = 1024
# The event type under which a refused MQTT 3.1.1 message is recorded (3.1.1 has no negative
# acknowledgement: the refusal must be visible somewhere).
REFUSAL_EVENT = "roost.ingest_refused"


@dataclass(slots=True)
class DeviceState:
    """What ingest knows about one device, shared by all its connections."""

    device_pk: int
    sensors: dict[str, tuple[int, int]]  # sensor id → (series pk, kind)
    auto_create: bool
    recent_ids: OrderedDict[str, CommitTicket | None] = field(default_factory=OrderedDict)
    stale: bool = False  # the sensors or the model changed: reload before the next message

    def remember(self, msg_id: str, ticket: CommitTicket | None) -> None:
        """Keep a message id among the recent ones."""
        self.recent_ids[msg_id] = ticket
        if len(self.recent_ids) > RECENT_MSG_IDS:
            self.recent_ids.popitem(last=False)


@dataclass(slots=True)
class DeviceContext:
    """One connection's (or request's) view: who authenticated, and the device's shared state."""

    identity: DeviceIdentity
    state: DeviceState

    @property
    def device_pk(self) -> int:
        """The device's surrogate key."""
        return self.state.device_pk

    @property
    def actor(self) -> Actor:
        """The device as the author of what it creates (auto-created sensors)."""
        return Actor(
            tenant_id=self.identity.tenant_id,
            name=f"device:{self.identity.device_id}",
            role=Role.OPERATOR,
        )


class _NeedsSlowPath(Exception):
    """The message names sensors that must be created first."""


class IngestService:
    """Normalise device messages into the writer's batches."""

    def __init__(
        self,
        db: Database,
        devices_service: DeviceService,
        store: TimeSeriesStore,
        writer: IngestWriter,
    ) -> None:
        self.db = db
        self.devices = devices_service
        self.store = store
        self.writer = writer
        self._states: dict[int, DeviceState] = {}
        # Invalidations so far, per device and for all: a state loaded while one happened may
        # predate it, so it is used by the one who loaded it but not cached.
        self._changes: dict[int, int] = {}
        self._all_changes = 0
        # Sensors to create, gathered from every connection (see _create_sensors).
        self._sensor_requests: list[tuple[DeviceContext, dict[str, int], asyncio.Future[None]]] = []
        self._sensor_task: asyncio.Task[None] | None = None
        self._state_loader: BatchLoader[int, DeviceState] = BatchLoader(self._load_states)
        # Told (device pk, receive time ns, items) of every message taken (presence, clock skew).
        self.activity: Callable[[int, int, list[Any]], None] | None = None
        # Told (device, topic, errors) of every MQTT message refused, to tell the device why.
        self.refused: Callable[[DeviceIdentity, str, list[dict[str, Any]]], None] | None = None

    # -- device contexts ---------------------------------------------------------------------

    async def device_context(self, identity: DeviceIdentity) -> DeviceContext:
        """The device's context; its state is cached, loaded on first use or when stale."""
        return DeviceContext(identity, await self._current_state(identity))

    async def refresh(self, ctx: DeviceContext) -> None:
        """Point a door's context at the device's current state (after the old one went stale).

        Doors keep their context for a connection's life; this is what keeps them off the slow
        path once a change (a sensor created, a model switched) has been taken in.
        """
        if ctx.state.stale:
            ctx.state = await self._current_state(ctx.identity)

    async def _current_state(self, identity: DeviceIdentity) -> DeviceState:
        pk = identity.device_pk
        state = self._states.get(pk)
        if state is None or state.stale:
            before = (self._changes.get(pk, 0), self._all_changes)
            fresh = await self._load_state(identity)
            if state is not None:
                fresh.recent_ids = state.recent_ids
            cached = self._states.get(pk)
            if cached is not None and not cached.stale:
                # Another caller loaded it meanwhile: share that one, so that the next
                # invalidation (which marks the cached state) reaches every holder.
                return cached
            if (self._changes.get(pk, 0), self._all_changes) == before:
                self._states[pk] = fresh
            else:  # a change came in while it loaded: right for now, not to be kept
                fresh.stale = True
            state = fresh
        return state

    async def _load_state(self, identity: DeviceIdentity) -> DeviceState:
        state = await self._state_loader.load(identity.device_pk)
        if state is None:
            raise NotFound(f"no device {identity.device_id!r}")
        return state

    async def _load_states(self, device_pks: Sequence[int]) -> dict[int, DeviceState]:
        """The states of many devices in one read (see :class:`BatchLoader`)."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(devices.c.pk, device_models.c.auto_create_sensors)
                    .select_from(
                        devices.outerjoin(
                            device_models,
                            sa.and_(
                                device_models.c.tenant_id == devices.c.tenant_id,
                                device_models.c.id == devices.c.model_id,
                            ),
                        )
                    )
                    .where(devices.c.pk.in_(device_pks))
                )
            ).all()
            known: dict[int, dict[str, tuple[int, int]]] = {pk: {} for pk, _ in rows}
            for device_pk, sensor_id, pk, kind in await conn.execute(
                sa.select(sensors.c.device_pk, sensors.c.id, sensors.c.pk, sensors.c.type).where(
                    sensors.c.device_pk.in_(list(known))
                )
            ):
                known[device_pk][sensor_id] = (pk, KIND_BY_TYPE[kind])
        return {
            pk: DeviceState(pk, known[pk], True if auto is None else bool(auto))
            for pk, auto in rows
        }

    def invalidate(self, device_pks: Iterable[int] | None = None) -> None:
        """Forget cached contexts (all when None): their sensors or model changed."""
        if device_pks is None:
            self._all_changes += 1
            targets = list(self._states)
        else:
            targets = list(device_pks)
            for pk in targets:
                self._changes[pk] = self._changes.get(pk, 0) + 1
        for pk in targets:
            state = self._states.pop(pk, None)
            if state is not None:
                state.stale = True

    # -- the hot path ------------------------------------------------------------------------

    def try_submit(
        self,
        ctx: DeviceContext,
        kind: IngestKind,
        payload: bytes | Any,
        recv_ns: int,
        msg_id: str | None = None,
        *,
        _msg_id_checked: bool = False,
        _just_loaded: bool = False,
    ) -> IngestOutcome | None:
        """Take a message synchronously; None when it needs :meth:`submit` (slow work first)."""
        state = ctx.state
        if state.stale and not _just_loaded:
            return None
        if self.writer.full():
            return IngestOutcome(busy=True)
        try:
            document = (
                load_json(payload)
                if isinstance(payload, bytes | bytearray | memoryview | str)
                else payload
            )
        except orjson.JSONDecodeError as exc:
            return _refused(0, "", f"malformed JSON: {exc}")
        except IntegerOutOfRange as exc:
            return _out_of_range(exc)
        items, wrapped_id = unwrap(document)
        msg_id = msg_id if msg_id is not None else wrapped_id
        if not items:
            return _refused(0, "", "the message holds no items")
        if len(items) > MAX_ITEMS:
            return _refused(0, "", f"a message holds at most {MAX_ITEMS} items")
        if msg_id is not None:
            if msg_id in state.recent_ids:
                return IngestOutcome(duplicate=True, ticket=state.recent_ids[msg_id])
            if not _msg_id_checked:
                return None
        builder = self.writer.builder
        mark = builder.mark()
        try:
            outcome = self._append(ctx, kind, items, recv_ns)
        except _NeedsSlowPath:
            builder.rollback(mark)
            return None
        if outcome.errors:
            builder.rollback(mark)
            return outcome
        if msg_id is not None:
            builder.msg_ids.append((state.device_pk, msg_id))
        outcome.ticket = self.writer.appended()
        if msg_id is not None:
            state.remember(msg_id, outcome.ticket)
        if self.activity is not None:
            self.activity(state.device_pk, recv_ns, items)
        return outcome

    def _append(
        self, ctx: DeviceContext, kind: IngestKind, items: list[Any], recv_ns: int
    ) -> IngestOutcome:
        if kind is not IngestKind.EVENTS:
            fast = _append_fast(self.writer.builder, ctx.state, items, recv_ns)
            if fast is not None:
                return fast
        builder = self.writer.builder
        add_point = builder.add_point
        state = ctx.state
        known = state.sensors
        outcome = IngestOutcome()
        errors = outcome.errors
        future_limit = recv_ns + FUTURE_TOLERANCE_NS
        for index, item in enumerate(items):
            try:
                form = None if kind is IngestKind.EVENTS else readings(item)
                if form is None:
                    if kind is IngestKind.TELEMETRY:
                        raise ItemError(
                            "event",
                            "this is an event: send events to "
                            "devices/{id}/events or POST /api/v1/events",
                        )
                    etype = event_type(item)
                    ts = item_timestamp(item, recv_ns)
                    builder.add_event(
                        Event(state.device_pk, ts, recv_ns, etype, orjson.dumps(item).decode())
                    )
                    outcome.events += 1
                else:
                    shape, pairs = form
                    ts = item_timestamp(item, recv_ns)
                    for sensor_id, value in pairs:
                        entry = known.get(sensor_id)
                        if entry is None:
                            if state.auto_create and is_slug(sensor_id):
                                raise _NeedsSlowPath
                            raise ItemError(_where(shape, sensor_id), _unknown(ctx, sensor_id))
                        try:
                            add_point(entry[0], ts, recv_ns, entry[1], coerce(entry[1], value))
                        except ItemError as exc:
                            raise ItemError(
                                _where(shape, sensor_id), f"sensor {sensor_id!r}: {exc.message}"
                            ) from None
                        outcome.accepted += 1
                if ts > future_limit:
                    outcome.flagged_future += 1
            except ItemError as exc:
                errors.append({"index": index, "field": exc.field, "message": exc.message})
        if errors:
            outcome.accepted = outcome.events = 0
        return outcome

    # -- the slow path -----------------------------------------------------------------------

    async def submit(
        self,
        ctx: DeviceContext,
        kind: IngestKind,
        payload: bytes | Any,
        recv_ns: int,
        msg_id: str | None = None,
    ) -> IngestOutcome:
        """Take a message, doing first whatever :meth:`try_submit` could not do synchronously."""
        await self.refresh(ctx)
        try:
            document = (
                load_json(payload)
                if isinstance(payload, bytes | bytearray | memoryview | str)
                else payload
            )
        except orjson.JSONDecodeError as exc:
            return _refused(0, "", f"malformed JSON: {exc}")
        except IntegerOutOfRange as exc:
            return _out_of_range(exc)
        items, wrapped_id = unwrap(document)
        msg_id = msg_id if msg_id is not None else wrapped_id
        if msg_id is not None and msg_id not in ctx.state.recent_ids:
            known = await self.store.known_msg_ids([(ctx.device_pk, msg_id)])
            if known:
                ctx.state.remember(msg_id, None)
                return IngestOutcome(duplicate=True)
        for _attempt in range(4):
            missing, errors = self._plan_sensors(ctx, kind, items)
            if errors:
                return IngestOutcome(errors=errors)
            if missing:
                await self._create_sensors(ctx, missing)  # and refreshes ctx
                continue  # plan again on the state that holds them
            # ctx.state was loaded after every change this message needed: other connections
            # creating sensors of the device meanwhile may have marked it stale, but what it says
            # of this message's sensors holds. Without this, a device whose connections each
            # create a sensor at once would chase a moving state.
            outcome = self.try_submit(
                ctx, kind, document, recv_ns, msg_id, _msg_id_checked=True, _just_loaded=True
            )
            if outcome is None:
                await self.refresh(ctx)
                continue
            if outcome.busy:
                await self.writer.wait_for_capacity()
                continue
            return outcome
        return _refused(0, "", "the device's sensors kept changing; try again")

    def _plan_sensors(
        self, ctx: DeviceContext, kind: IngestKind, items: list[Any]
    ) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """Sensors to create (id → kind inferred from the first value), or the message's errors."""
        if kind is IngestKind.EVENTS:
            return {}, []
        missing: dict[str, int] = {}
        errors: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            try:
                form = readings(item)
                if form is None:
                    continue
                shape, pairs = form
                item_timestamp(item, 0)
                for sensor_id, value in pairs:
                    entry = ctx.state.sensors.get(sensor_id)
                    sensor_kind = entry[1] if entry else missing.get(sensor_id)
                    if sensor_kind is None:
                        if not ctx.state.auto_create or not is_slug(sensor_id):
                            raise ItemError(_where(shape, sensor_id), _unknown(ctx, sensor_id))
                        sensor_kind = missing[sensor_id] = infer_kind(value)
                    try:
                        coerce(sensor_kind, value)
                    except ItemError as exc:
                        raise ItemError(
                            _where(shape, sensor_id), f"sensor {sensor_id!r}: {exc.message}"
                        ) from None
            except ItemError as exc:
                errors.append({"index": index, "field": exc.field, "message": exc.message})
        return ({} if errors else missing), errors

    async def _create_sensors(self, ctx: DeviceContext, missing: dict[str, int]) -> None:
        """Create a device's missing sensors, then point ctx at a state that holds them.

        Requests from every connection are gathered and created in one write transaction (a
        fleet's first contact would otherwise queue a thousand small transactions behind the
        ingest writer's commits on SQLite's single write lock).
        """
        done = asyncio.get_running_loop().create_future()
        self._sensor_requests.append((ctx, missing, done))
        if self._sensor_task is None or self._sensor_task.done():
            self._sensor_task = asyncio.create_task(self._create_requested_sensors())
        await done
        await self.refresh(ctx)

    async def _create_requested_sensors(self) -> None:
        while self._sensor_requests:
            requests, self._sensor_requests = self._sensor_requests, []
            outcomes: list[BaseException | None] = [None] * len(requests)
            wanted = {
                (ctx.device_pk, sensor_id): (
                    ctx.actor, ctx.device_pk, ctx.identity.device_id, sensor_id,
                    TYPE_BY_KIND[kind],
                )
                for ctx, missing, _ in requests
                for sensor_id, kind in missing.items()
            }  # fmt: skip
            try:
                async with self.db.write() as conn:
                    await self.devices.auto_create_sensors_in(conn, list(wanted.values()))
            except Exception as bulk_error:
                # One device was deleted meanwhile, or the like: one at a time, each its own fate.
                log.info(
                    "bulk sensor creation failed (%s); creating one device at a time", bulk_error
                )
                try:
                    async with self.db.write() as conn:
                        for n, (ctx, missing, _done) in enumerate(requests):
                            try:
                                async with conn.begin_nested():
                                    await self._create_in(conn, ctx, missing)
                            except Exception as exc:  # this device's request fails only
                                outcomes[n] = exc
                except Exception as exc:  # the transaction as a whole failed
                    outcomes = [exc] * len(requests)
            self.invalidate({ctx.device_pk for ctx, _, _ in requests})
            for (_ctx, _missing, done), outcome in zip(requests, outcomes, strict=True):
                if done.done():
                    continue
                if outcome is None:
                    done.set_result(None)
                else:
                    done.set_exception(outcome)

    async def _create_in(self, conn: Any, ctx: DeviceContext, missing: dict[str, int]) -> None:
        for sensor_id, kind in missing.items():
            try:
                async with conn.begin_nested():
                    await self.devices.create_sensor_in(
                        conn,
                        ctx.actor,
                        ctx.identity.device_id,
                        {"id": sensor_id, "type": TYPE_BY_KIND[kind]},
                    )
            except Conflict:
                pass  # another connection of the device created it meanwhile

    async def wait_for_capacity(self) -> None:
        """Return once the writer takes messages again (after ``busy``)."""
        await self.writer.wait_for_capacity()

    async def record_refusal(
        self, ctx: DeviceContext, topic: str, errors: list[dict[str, Any]], recv_ns: int
    ) -> None:
        """Tell the device why its MQTT message was refused (:attr:`refused`), and store the errors
        as an event of the device, so they can be seen in the API."""
        if self.refused is not None:
            try:
                self.refused(ctx.identity, topic, errors)
            except Exception:  # telling is best effort, like the record below
                log.exception("could not tell %s of a refused message", ctx.identity.device_id)
        body = orjson.dumps({"event": REFUSAL_EVENT, "topic": topic, "errors": errors[:20]})
        self.writer.builder.add_event(
            Event(ctx.device_pk, recv_ns, recv_ns, REFUSAL_EVENT, body.decode())
        )
        ticket = self.writer.appended()
        try:
            await ticket
        except Exception as exc:  # the refusal record is best effort; the refusal stands
            log.warning("could not record a refused message of %s: %s", ctx.identity.device_id, exc)


def _append_fast(
    builder: BatchBuilder, state: DeviceState, items: list[Any], recv_ns: int
) -> IngestOutcome | None:
    """The common case inlined: known double sensors, integer timestamps, sensor or values form.

    Answers None as soon as an item is anything else (after rolling back what it appended), and
    the general path takes the whole message again; so this path needs to handle no error.
    """
    known = state.sensors
    series, stamps, received = builder.series, builder.ts, builder.recv
    kinds, values = builder.kinds, builder.values
    start = len(series)
    future_limit = recv_ns + FUTURE_TOLERANCE_NS
    flagged = 0
    for item in items:
        if type(item) is not dict:
            break
        raw_ts = item.get("timestamp")
        if raw_ts is None:
            raw_ts = item.get("ts")
        if raw_ts is None:
            ts = recv_ns
        elif type(raw_ts) is int and 1_000_000_000 <= raw_ts < 100_000_000_000:
            ts = raw_ts * 1_000_000_000
        elif type(raw_ts) is int and 100_000_000_000 <= raw_ts < 100_000_000_000_000:
            ts = raw_ts * 1_000_000
        else:
            break
        if ts > future_limit:
            flagged += 1
        sensor_id = item.get("sensor_id")
        if sensor_id is not None:
            entry = known.get(sensor_id) if type(sensor_id) is str else None
            value = item.get("value")
            if entry is None or entry[1] != KIND_DOUBLE or type(value) is not float:
                if entry is None or entry[1] != KIND_DOUBLE or type(value) is not int:
                    break
                value = float(value)
            series.append(entry[0])
            stamps.append(ts)
            received.append(recv_ns)
            kinds.append(KIND_DOUBLE)
            values.append(value)
            continue
        readings_ = item.get("values")
        if type(readings_) is not dict or not readings_ or len(item) > 2:
            break
        for name, value in readings_.items():
            entry = known.get(name)
            if entry is None or entry[1] != KIND_DOUBLE:
                break
            if type(value) is not float:
                if type(value) is not int:
                    break
                value = float(value)
            series.append(entry[0])
            stamps.append(ts)
            received.append(recv_ns)
            kinds.append(KIND_DOUBLE)
            values.append(value)
        else:
            continue
        break
    else:
        return IngestOutcome(accepted=len(series) - start, flagged_future=flagged)
    for column in (series, stamps, received, kinds, values):
        del column[start:]
    return None


def _refused(index: int, where: str, message: str) -> IngestOutcome:
    return IngestOutcome(errors=[{"index": index, "field": where, "message": message}])


def _out_of_range(exc: IntegerOutOfRange) -> IngestOutcome:
    """The refusal of a message holding an integer beyond 64 bits, naming its item and field."""
    path = exc.path
    if len(path) >= 2 and path[0] == "items" and type(path[1]) is int:  # {"msg_id", "items"}
        index, inner = path[1], path[2:]
    elif path and type(path[0]) is int:  # an array of items
        index, inner = path[0], path[1:]
    else:  # a single item
        index, inner = 0, path
    error = {"index": index, "field": field_path(inner), "message": exc.message}
    return IngestOutcome(errors=[{**error, "code": OUT_OF_RANGE_CODE}])


def _where(shape: str, sensor_id: str) -> str:
    if shape == "sensor":
        return "value"
    if shape == "values":
        return f"values.{sensor_id}"
    return sensor_id


def _unknown(ctx: DeviceContext, sensor_id: str) -> str:
    if not is_slug(sensor_id):
        return f"{sensor_id[:40]!r} is not a valid sensor id"
    return (
        f"unknown sensor {sensor_id!r}: this device's model does not create sensors "
        "automatically; declare it first"
    )


__all__ = ["DeviceContext", "DeviceState", "IngestService"]
