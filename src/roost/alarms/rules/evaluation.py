"""Evaluating rules against messages: per-device state machines, decided in memory per chunk.

The engine hands each chunk of its feeds to :class:`RuleBook`; every decision lands in a
:class:`Chunk` — the states it changed (``dirty``) and the effects to carry out (fire, resolve).
The engine commits a chunk in one transaction and then :meth:`RuleBook.apply` makes its states
the committed ones; a chunk whose commit failed is discarded and evaluated again. (States of a
chunk are visible to later messages of the same chunk through the overlay, so a point that
fires and the next one that clears are both seen.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final

import numpy as np
import orjson

from roost.alarms.reference.service import ReferenceService
from roost.alarms.rules.effects import Effect, run_effects
from roost.alarms.rules.feeds import FeedMessage
from roost.alarms.rules.fleet import DeviceFacts, Fleet
from roost.alarms.rules.model import FEED_SOURCES, MAX_HOPS, RuleSpec, parse_rule, truthy
from roost.alarms.rules.vector import SensorVector, VectorSlot, may_hold, vector_test
from roost.telemetry.engine.batch import DecodedBatch
from roost.telemetry.queries.service import rfc3339

log = logging.getLogger(__name__)

#: The key derived events carry: ``{"id": rule id, "hops": n}`` (loop detection).
DERIVED_KEY: Final = "_rule"
_TRACKS_LAST: Final = frozenset({"change", "rate"})

__all__ = ["Chunk", "Effect", "LoadedRule", "RuleBook", "State", "run_effects"]


@dataclass(slots=True)
class State:
    """What a rule keeps for one device."""

    phase: str = "idle"  # idle | pending | active
    since: float | None = None
    due_at: float | None = None
    last_value: Any = None
    last_ts: float | None = None

    @property
    def empty(self) -> bool:
        """Nothing worth a row."""
        return self.phase == "idle" and self.due_at is None and self.last_ts is None


@dataclass(eq=False, slots=True)
class LoadedRule:
    """An enabled rule, its targets and its committed states."""

    tenant_id: str
    id: str
    name: str
    spec: RuleSpec
    devices: frozenset[int] | None = None  # None: every device of the tenant
    states: dict[int, State] = field(default_factory=dict)
    vector: SensorVector | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(tenant, rule id)."""
        return (self.tenant_id, self.id)

    def targets(self, device_pk: int) -> bool:
        """True when the rule watches this device."""
        return self.devices is None or device_pk in self.devices


@dataclass(frozen=True, slots=True)
class Refresh:
    """Targets, series and facts read again for the rules of one load (generation)."""

    generation: int
    targets: dict[tuple[str, str], frozenset[int] | None]
    series: dict[tuple[str, str], dict[int, int]]


@dataclass(slots=True)
class Chunk:
    """Decisions of one chunk, committed together."""

    dirty: dict[tuple[str, str, int], State | None] = field(default_factory=dict)
    effects: list[Effect] = field(default_factory=list)
    stopped: dict[tuple[str, str], str] = field(default_factory=dict)
    # The vectors whose held columns moved during the chunk (rebuilt if it is discarded).
    touched: set[SensorVector] = field(default_factory=set)

    def discard(self) -> None:
        """Forget the decisions (the commit failed): rebuild the columns they moved."""
        for vector in self.touched:
            for slot in vector.slots:
                vector.align(slot)


class RuleBook:
    """Every enabled rule, indexed by what it watches."""

    def __init__(self, fleet: Fleet, reference: ReferenceService) -> None:
        self.fleet = fleet
        self.reference = reference
        self.rules: dict[tuple[str, str], LoadedRule] = {}
        # source (presence, state, command, job) → tenant → rules
        self.feed_rules: dict[str, dict[str, list[LoadedRule]]] = {}
        self.event_rules: dict[str, list[LoadedRule]] = {}
        self.telemetry_rules: dict[str, list[LoadedRule]] = {}  # non-vector, by tenant
        self.vectors: dict[tuple[str, str], SensorVector] = {}
        # series pk → (tenant, device pk, sensor, rules evaluated one by one); None: no rule.
        self._routes: dict[int, tuple[str, int, str, list[LoadedRule]] | None] = {}
        self._routed = np.zeros(0, dtype=np.int64)  # the keys of _routes, sorted
        self._timed: set[tuple[LoadedRule, int]] = set()
        self.generation = 0  # grows with each load (a refresh read before one is dropped)

    # -- loading ------------------------------------------------------------------------------

    async def load(
        self, rows: list[dict[str, Any]], states: Mapping[tuple[str, str], dict[int, State]]
    ) -> None:
        """Index these rule rows with their committed states."""
        self.rules = {}
        self.feed_rules, self.event_rules, self.telemetry_rules = {}, {}, {}
        self.vectors = {}
        self._routes = {}
        self._routed = np.zeros(0, dtype=np.int64)
        self._timed = set()
        memo: dict[str, frozenset[int] | None] = {}
        for row in rows:
            try:
                spec = parse_rule(row["definition"])
            except Exception as exc:  # stored by an older version, say: skip, do not stop all
                log.warning("rule %s/%s cannot be loaded: %s", row["tenant_id"], row["id"], exc)
                continue
            rule = LoadedRule(row["tenant_id"], row["id"], row["name"], spec)
            rule.states = dict(states.get(rule.key, {}))
            rule.devices = await self._targets(rule, memo)
            self.rules[rule.key] = rule
            for pk, state in rule.states.items():
                if state.due_at is not None:
                    self._timed.add((rule, pk))
            if spec.source in FEED_SOURCES:
                by_tenant = self.feed_rules.setdefault(spec.source, {})
                by_tenant.setdefault(rule.tenant_id, []).append(rule)
            elif spec.source == "event":
                self.event_rules.setdefault(rule.tenant_id, []).append(rule)
            elif spec.vector:
                assert spec.sensor is not None
                vector = self.vectors.get((rule.tenant_id, spec.sensor))
                if vector is None:
                    vector = SensorVector(rule.tenant_id, spec.sensor)
                    self.vectors[(rule.tenant_id, spec.sensor)] = vector
                clear = vector_test(spec.clear) if spec.clear is not None else None
                vector.slots.append(
                    VectorSlot(rule, vector_test(spec.condition), clear, may_hold(spec.condition))
                )
                rule.vector = vector
            else:
                self.telemetry_rules.setdefault(rule.tenant_id, []).append(rule)
        for vector in self.vectors.values():
            vector.set_series(await self.fleet.sensor_series(vector.tenant_id, vector.sensor))
        await self.fleet.preload({rule.tenant_id for rule in self.rules.values()})
        self.generation += 1

    async def _targets(
        self, rule: LoadedRule, memo: dict[str, frozenset[int] | None]
    ) -> frozenset[int] | None:
        """A rule's target devices; rules with the same targets share one query."""
        key = orjson.dumps([rule.tenant_id, rule.spec.targets], option=orjson.OPT_SORT_KEYS)
        text = key.decode()
        if text not in memo:
            memo[text] = await self.fleet.targets(rule.tenant_id, rule.spec.targets)
        return memo[text]

    async def read_refresh(self) -> Refresh:
        """Read what changes under the rules (targets, sensors' series, device facts); the
        engine runs this beside its work and applies the answer between steps."""
        generation = self.generation
        memo: dict[str, frozenset[int] | None] = {}
        targets = {key: await self._targets(rule, memo) for key, rule in self.rules.items()}
        series = {
            key: await self.fleet.sensor_series(vector.tenant_id, vector.sensor)
            for key, vector in self.vectors.items()
        }
        await self.fleet.preload({rule.tenant_id for rule in self.rules.values()})
        return Refresh(generation, targets, series)

    def apply_refresh(self, refresh: Refresh) -> None:
        """Take a refresh in (unless the rules were loaded again since it was read)."""
        if refresh.generation != self.generation:
            return
        for key, devices in refresh.targets.items():
            rule = self.rules.get(key)
            if rule is not None:
                rule.devices = devices
        for key, series in refresh.series.items():
            vector = self.vectors.get(key)
            if vector is not None:
                vector.set_series(series)
        self._routes = {}
        self._routed = np.zeros(0, dtype=np.int64)

    @property
    def watches_log(self) -> bool:
        """True when some rule reads the ingest log (telemetry, events, refusals)."""
        return bool(self.vectors or self.telemetry_rules or self.event_rules)

    # -- state --------------------------------------------------------------------------------

    def _state(self, chunk: Chunk, rule: LoadedRule, device_pk: int) -> State:
        key = (rule.tenant_id, rule.id, device_pk)
        if key in chunk.dirty:
            return replace(chunk.dirty[key] or State())
        return replace(rule.states.get(device_pk) or State())

    def _set(self, chunk: Chunk, rule: LoadedRule, device_pk: int, state: State) -> None:
        chunk.dirty[(rule.tenant_id, rule.id, device_pk)] = None if state.empty else state
        if rule.vector is not None:
            rule.vector.mark(rule, device_pk, state.phase != "idle")
            chunk.touched.add(rule.vector)

    def apply(self, chunk: Chunk) -> None:
        """A chunk committed: its states are now the rules' committed states."""
        for (tenant_id, rule_id, device_pk), state in chunk.dirty.items():
            rule = self.rules.get((tenant_id, rule_id))
            if rule is None:
                continue
            if state is None:
                rule.states.pop(device_pk, None)
                self._timed.discard((rule, device_pk))
            else:
                rule.states[device_pk] = state
                if state.due_at is not None:
                    self._timed.add((rule, device_pk))
                else:
                    self._timed.discard((rule, device_pk))

    # -- deciding -----------------------------------------------------------------------------

    async def _context(
        self, rule: LoadedRule, facts: DeviceFacts, msg: Any
    ) -> dict[str, Any] | None:
        """``{msg, device, ref}`` for rules that look past the value; None: ``where`` says no."""
        spec = rule.spec
        if not spec.needs_context:
            return {}
        context: dict[str, Any] = {"msg": msg, "device": facts.document(), "ref": {}}
        for join in spec.enrich:
            key = join.key.search(context)
            row = None
            if key is not None and not isinstance(key, (dict, list)):
                row = await self.reference.lookup(rule.tenant_id, join.table, _key_text(key))
            context["ref"][join.alias] = row
        if spec.where is not None and not truthy(spec.where.search(context)):
            return None
        return context

    async def step(
        self,
        chunk: Chunk,
        rule: LoadedRule,
        facts: DeviceFacts,
        value: Any,
        msg: Any,
        at: float,
        hops: int = 0,
    ) -> None:
        """Evaluate one message of a device against one rule."""
        spec = rule.spec
        if spec.condition.type == "no_data":
            state = self._state(chunk, rule, facts.pk)
            window = spec.condition.seconds or (spec.condition.heartbeats or 1) * facts.heartbeat_s
            if state.phase == "active":
                chunk.effects.append(Effect("resolve", rule, facts, value, None, at, hops))
                state.phase, state.since = "idle", None
            state.due_at = at + window
            self._set(chunk, rule, facts.pk, state)
            return
        context = await self._context(rule, facts, msg)
        if context is None:
            return
        state = self._state(chunk, rule, facts.pk)
        picked = spec.condition.pick(value, context)
        dt = at - state.last_ts if state.last_ts is not None else None
        cond = spec.condition.holds(picked, state.last_value, dt, context)
        changed = False
        if spec.level:
            if state.phase == "idle":
                if cond:
                    if spec.for_s <= 0:
                        chunk.effects.append(Effect("fire", rule, facts, picked, context, at, hops))
                        state.phase, state.since = "active", at
                    else:
                        state.phase, state.since, state.due_at = "pending", at, at + spec.for_s
                    changed = True
            elif state.phase == "pending":
                if not cond:
                    state.phase, state.since, state.due_at = "idle", None, None
                    changed = True
                elif state.due_at is not None and at >= state.due_at:
                    chunk.effects.append(Effect("fire", rule, facts, picked, context, at, hops))
                    state.phase, state.due_at = "active", None
                    changed = True
            else:
                if spec.clear is not None:
                    clear_value = spec.clear.pick(value, context)
                    cleared = spec.clear.holds(clear_value, state.last_value, dt, context)
                else:
                    cleared = not cond
                if cleared:
                    chunk.effects.append(Effect("resolve", rule, facts, picked, context, at, hops))
                    state.phase, state.since = "idle", None
                    changed = True
        else:
            if cond:
                chunk.effects.append(Effect("fire", rule, facts, picked, context, at, hops))
            elif spec.clear is not None:
                clear_value = spec.clear.pick(value, context)
                if spec.clear.holds(clear_value, state.last_value, dt, context):
                    chunk.effects.append(Effect("resolve", rule, facts, picked, context, at, hops))
        if spec.condition.type in _TRACKS_LAST:
            state.last_value, state.last_ts = picked, at
            changed = True
        if changed:
            self._set(chunk, rule, facts.pk, state)

    async def evaluate_batch(
        self, chunk: Chunk, batch: DecodedBatch, skip: int, now: datetime
    ) -> None:
        """Every rule over the items of a committed batch from position ``skip`` on."""
        del now
        if batch.points > skip and (self.vectors or self.telemetry_rules):
            await self._points(chunk, batch, skip)
        if self.event_rules and batch.events:
            first_event = max(0, skip - batch.points)
            await self._events(chunk, batch, first_event)

    async def _points(self, chunk: Chunk, batch: DecodedBatch, skip: int) -> None:
        series = batch.series
        if self.vectors:
            values = batch.numeric()
            unknown = await self._new_series(series)
            if unknown:
                await self._add_series(unknown)
            for vector in self.vectors.values():
                for slot, positions, vals, device_pks in vector.candidates(series, values, skip):
                    facts = await self.fleet.facts(device_pks.tolist())
                    recv = batch.recv[positions]
                    for value, device_pk, received in zip(
                        vals.tolist(), device_pks.tolist(), recv.tolist(), strict=True
                    ):
                        device = facts.get(device_pk)
                        if device is not None:
                            await self.step(chunk, slot.rule, device, value, None, received / 1e9)
        if self.telemetry_rules:
            await self._slow_points(chunk, batch, skip)

    async def _new_series(self, series: Any) -> list[int]:
        unique = np.unique(series)
        if len(self._routed):
            unique = unique[~np.isin(unique, self._routed, assume_unique=True)]
        return [int(s) for s in unique.tolist()]

    async def _add_series(self, unknown: list[int]) -> None:
        owners = await self.fleet.owners(unknown)
        grown: dict[SensorVector, dict[int, int]] = {}
        for pk in unknown:
            owner = owners.get(pk)
            if owner is None:
                self._routes[pk] = None
                continue
            vector = self.vectors.get((owner.tenant_id, owner.sensor))
            if vector is not None and pk not in vector.position_of_series:
                grown.setdefault(vector, {})[pk] = owner.device_pk
            slow = [
                r
                for r in self.telemetry_rules.get(owner.tenant_id, ())
                if (r.spec.sensor is None or r.spec.sensor == owner.sensor)
                and r.targets(owner.device_pk)
            ]
            self._routes[pk] = (owner.tenant_id, owner.device_pk, owner.sensor, slow)
        self._routed = np.array(sorted(self._routes), dtype=np.int64)
        for vector, added in grown.items():
            vector.add_series(added)

    async def _slow_points(self, chunk: Chunk, batch: DecodedBatch, skip: int) -> None:
        unknown = await self._new_series(batch.series)
        if unknown:
            await self._add_series(unknown)
        routes = self._routes
        series = batch.series.tolist()
        chosen = [
            i for i in range(skip, len(series)) if (route := routes.get(series[i])) and route[3]
        ]
        if not chosen:
            return
        facts = await self.fleet.facts({routes[series[i]][1] for i in chosen})  # type: ignore[index]
        for i in chosen:
            route = routes[series[i]]
            assert route is not None
            _tenant, device_pk, sensor, slow = route
            device = facts.get(device_pk)
            if device is None:
                continue
            value = batch.value(i)
            recv = int(batch.recv[i]) / 1e9
            msg = {
                "device_id": device.id,
                "sensor": sensor,
                "value": value,
                "ts": rfc3339(int(batch.ts[i])),
            }
            for rule in slow:
                await self.step(chunk, rule, device, value, msg, recv)

    async def _events(self, chunk: Chunk, batch: DecodedBatch, first: int) -> None:
        events = batch.events[first:]
        facts = await self.fleet.facts({e.device_pk for e in events})
        for event in events:
            device = facts.get(event.device_pk)
            if device is None:
                continue
            candidates = [
                r
                for r in self.event_rules.get(device.tenant_id, ())
                if (r.spec.event_type is None or r.spec.event_type == event.type)
                and r.targets(device.pk)
            ]
            if not candidates:
                continue
            try:
                body = orjson.loads(event.body)
            except orjson.JSONDecodeError:
                continue
            derived = body.get(DERIVED_KEY) if isinstance(body, dict) else None
            hops = 0
            origin = None
            if isinstance(derived, dict):
                hops = int(derived.get("hops") or 0)
                origin = derived.get("id")
            if hops >= MAX_HOPS and isinstance(origin, str):
                chunk.stopped[(device.tenant_id, origin)] = (
                    f"stopped: its events went round {hops} rules and came back (a loop)"
                )
                continue
            recv = event.recv / 1e9
            for rule in candidates:
                if rule.id == origin:
                    continue  # a rule never reads what it emitted itself
                await self.step(chunk, rule, device, body, body, recv, hops)

    async def evaluate_feed(self, chunk: Chunk, source: str, messages: list[FeedMessage]) -> None:
        """The rules of a feed's source over its messages, in order."""
        by_tenant = self.feed_rules.get(source)
        if not by_tenant or not messages:
            return
        facts = await self.fleet.facts({m.device_pk for m in messages})
        for message in messages:
            rules = [
                r for r in by_tenant.get(message.tenant_id, ()) if r.targets(message.device_pk)
            ]
            device = facts.get(message.device_pk)
            if not rules or device is None:
                continue
            for rule in rules:
                await self.step(chunk, rule, device, message.value, message.msg, message.at)

    async def evaluate_clock(self, chunk: Chunk, now: datetime) -> None:
        """Fire what is due: pending ``for_s`` windows over, no-data deadlines passed."""
        clock = now.timestamp()
        due = [(rule, pk) for rule, pk in self._timed if (rule.states.get(pk) or State()).due_at]
        due = [(r, pk) for r, pk in due if r.states[pk].due_at <= clock]  # type: ignore[operator]
        if not due:
            return
        facts = await self.fleet.facts({pk for _r, pk in due})
        for rule, pk in due:
            device = facts.get(pk)
            if device is None or self.rules.get(rule.key) is not rule:
                continue
            state = self._state(chunk, rule, pk)
            if state.phase == "pending" or (
                rule.spec.condition.type == "no_data" and state.phase == "idle"
            ):
                value = state.last_value
                chunk.effects.append(Effect("fire", rule, device, value, {}, clock, 0))
                state.phase, state.since, state.due_at = "active", clock, None
                self._set(chunk, rule, pk, state)
            else:
                state.due_at = None
                self._set(chunk, rule, pk, state)


def _key_text(key: Any) -> str:
    """A join key as the reference table stores keys (text; 162 and "162" are one key)."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key)


def rules_of(rules: Iterable[LoadedRule], tenant_id: str) -> list[LoadedRule]:
    """The loaded rules of one tenant."""
    return [r for r in rules if r.tenant_id == tenant_id]
