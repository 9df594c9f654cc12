"""What a rule is, checked and compiled (pure: no IO).

A rule's definition (JSON, as the API takes it)::

    {"source": {"kind": "telemetry", "sensor": "temperature"},
     "targets": {"devices": [...], "groups": [...], "query": {...}},   # absent: the whole tenant
     "condition": {"type": "threshold", "op": ">", "value": 70},
     "clear": {"type": "threshold", "op": "<", "value": 65},           # absent: not condition
     "for_s": 60,
     "where": "device.tags.floor == '2'",                              # JMESPath, optional
     "enrich": [{"table": "products", "key": "msg.product_id", "as": "product"}],
     "actions": [{"type": "alarm", "severity": "critical"}, {"type": "notify", "channels": [...]}]}

Sources: ``telemetry`` (one sensor, or every sensor of the device), ``event`` (one type or all),
``presence`` (a device going online/offline; value: the status), ``state`` (the device reports
its state; value: the reported document), ``command`` and ``job`` (a command or job execution
reached its final status; value: the status), ``refused`` (an MQTT message of the device was
refused; the event ``roost.ingest_refused``). Conditions: ``threshold``, ``range``, ``change``,
``rate`` (of change, per second), ``no_data`` (seconds, or heartbeats of the device's interval),
``expression`` (JMESPath over ``{msg, device, ref}``; truthy fires) and ``always``.

Two ways a rule fires, chosen by its source and condition:

* **level** (telemetry and presence with threshold, range, rate, expression, no_data): per device
  the rule is idle, pending (the condition holds, ``for_s`` not yet over) or active; actions run
  when it turns active, the alarm clears when the clear condition holds (by default: when the
  condition no longer holds);
* **edge** (events, commands, jobs, refusals, and ``change``/``always``): every matching message
  fires; an alarm it raises repeats (its count grows) while open.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jmespath
from jmespath.exceptions import JMESPathError

from roost.core.ids import SLUG_RULE, is_slug
from roost.errors import InvalidInput, ValidationFailed

SOURCES: Final = ("telemetry", "event", "presence", "state", "command", "job", "refused")
#: Sources read from feeds other than the ingest log (see roost.alarms.rules.feeds).
FEED_SOURCES: Final = frozenset({"presence", "state", "command", "job"})
#: Sources whose rules can be level-triggered (the others report discrete happenings).
LEVEL_SOURCES: Final = frozenset({"telemetry", "presence", "state"})
#: The event a refused MQTT message is recorded as (roost.telemetry.ingest.service).
REFUSED_EVENT: Final = "roost.ingest_refused"
CONDITIONS: Final = ("threshold", "range", "change", "rate", "no_data", "expression", "always")
LEVEL_CONDITIONS: Final = frozenset({"threshold", "range", "rate", "no_data", "expression"})
SEVERITIES: Final = ("critical", "major", "minor", "warning", "info")
ACTIONS: Final = ("alarm", "notify", "command", "set_desired", "emit_event", "emit_telemetry")
OPS: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
#: Longest ``for_s`` and no-data window: a week (a longer silence is an inventory question).
MAX_WINDOW_S: Final = 7 * 86400.0
#: Actions and enrichments per rule: enough for any real rule, small enough to read at a glance.
MAX_ACTIONS: Final = 10
MAX_ENRICH: Final = 5
MAX_EXPRESSION: Final = 2000
#: A derived item may itself trigger rules this many times before the chain is cut as a loop.
MAX_HOPS: Final = 3
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")


class Expression:
    """A compiled JMESPath expression; a syntax error says where (column) and why."""

    __slots__ = ("_compiled", "text")

    def __init__(self, text: Any, where: str) -> None:
        if not isinstance(text, str) or not text.strip():
            raise _bad(where, "must be a non-empty JMESPath expression")
        if len(text) > MAX_EXPRESSION:
            raise _bad(where, f"is longer than {MAX_EXPRESSION} characters")
        try:
            self._compiled = jmespath.compile(text)
        except JMESPathError as exc:
            raise _bad(where, _syntax_error(exc)) from None
        self.text = text

    def search(self, data: Mapping[str, Any]) -> Any:
        """The expression's value over ``data`` (None when it does not apply)."""
        try:
            return self._compiled.search(data)
        except JMESPathError:
            return None  # e.g. comparing a number with a string at run time: no match


def _syntax_error(exc: JMESPathError) -> str:
    """Where and why an expression does not parse, with a hint for the usual slip."""
    column = getattr(exc, "lex_position", None)
    at = f" at column {column + 1}" if isinstance(column, int) else ""
    kind = getattr(exc, "token_type", None)
    token = getattr(exc, "token_value", None)
    if kind is None and isinstance(column, int):
        why = "the expression ends too early"
    elif kind == "NUMBER":
        why = f"unexpected number {token}: JMESPath writes literals in backticks, `{token}`"
    elif kind is not None:
        why = f"unexpected {token!r}"
    else:
        why = str(getattr(exc, "msg", "") or exc).splitlines()[0]
    return f"is not a valid JMESPath expression{at}: {why}"


def truthy(value: Any) -> bool:
    """JMESPath truth: false, null, empty string/list/object and 0 are false."""
    return value not in (None, False, "", [], {}) and not (
        isinstance(value, (int, float)) and value == 0
    )


@dataclass(frozen=True, slots=True)
class Condition:
    """One checked condition."""

    type: str
    op: str | None = None
    value: Any = None
    low: float | None = None
    high: float | None = None
    inside: bool = False
    seconds: float | None = None
    heartbeats: int | None = None
    path: Expression | None = None
    expression: Expression | None = None

    def pick(self, message_value: Any, context: Mapping[str, Any] | None) -> Any:
        """The value the condition looks at: the message's, or ``path`` over the context."""
        if self.path is None:
            return message_value
        return None if context is None else self.path.search(context)

    def holds(self, value: Any, last: Any, dt_s: float | None, context: Any) -> bool:
        """True when the condition holds for ``value`` (``last``: the previous value)."""
        kind = self.type
        if kind == "always":
            return True
        if kind == "expression":
            assert self.expression is not None
            return truthy(self.expression.search(context or {}))
        if kind == "threshold":
            assert self.op is not None
            try:
                return bool(OPS[self.op](value, self.value))
            except TypeError:
                return False
        if kind == "range":
            if not _is_number(value):
                return False
            assert self.low is not None and self.high is not None
            inside = self.low <= value <= self.high
            return inside if self.inside else not inside
        if kind == "change":
            return last is not None and value != last
        if kind == "rate":
            if not (_is_number(value) and _is_number(last)) or not dt_s or dt_s <= 0:
                return False
            assert self.op is not None
            return bool(OPS[self.op]((value - last) / dt_s, self.value))
        return False  # no_data holds by the clock, not by a message


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class Enrichment:
    """Join one reference table: ``ref.<alias>`` = the row whose key is ``key`` over the context."""

    table: str
    key: Expression
    alias: str


@dataclass(frozen=True, slots=True)
class Action:
    """One checked action."""

    type: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A checked rule definition."""

    source: str
    sensor: str | None
    event_type: str | None
    targets: Mapping[str, Any] | None
    condition: Condition
    clear: Condition | None
    for_s: float
    where: Expression | None
    enrich: tuple[Enrichment, ...]
    actions: tuple[Action, ...]
    definition: Mapping[str, Any] = field(repr=False)

    @property
    def level(self) -> bool:
        """Level-triggered (idle → pending → active → idle) rather than fired per message."""
        return self.source in LEVEL_SOURCES and self.condition.type in LEVEL_CONDITIONS

    @property
    def alarm(self) -> Action | None:
        """The rule's alarm action, if it raises one."""
        return next((a for a in self.actions if a.type == "alarm"), None)

    @property
    def channels(self) -> tuple[str, ...]:
        """The notification channels the rule's notify actions name."""
        return tuple(c for a in self.actions if a.type == "notify" for c in a.params["channels"])

    @property
    def needs_context(self) -> bool:
        """True when evaluating needs the message as a document (not just its value)."""
        return bool(
            self.where
            or self.enrich
            or any(a.type in ("emit_event", "emit_telemetry") for a in self.actions)
            or self.condition.path
            or self.condition.expression
            or (self.clear and (self.clear.path or self.clear.expression))
        )

    @property
    def vector(self) -> bool:
        """A plain threshold or range on one telemetry sensor: evaluated over whole batches."""
        return (
            self.source == "telemetry"
            and self.sensor is not None
            and self.condition.type in ("threshold", "range")
            and _numeric_condition(self.condition)
            and (self.clear is None or _numeric_condition(self.clear))
            and not self.needs_context
        )


def _numeric_condition(c: Condition) -> bool:
    if c.type == "range":
        return True
    return c.type == "threshold" and _is_number(c.value) and c.op in (">", ">=", "<", "<=")


def _bad(where: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{where} {message}", [{"field": where, "message": message}])


def _number(raw: Any, where: str) -> float:
    if not _is_number(raw):
        raise _bad(where, "must be a finite number")
    return float(raw)


def parse_condition(raw: Any, where: str, source: str) -> Condition:
    """Check one condition object."""
    if not isinstance(raw, Mapping):
        raise _bad(where, "must be an object with a type")
    kind = raw.get("type")
    if kind not in CONDITIONS:
        raise _bad(f"{where}.type", f"must be one of {', '.join(CONDITIONS)}")
    allowed = {
        "threshold": {"op", "value", "path"},
        "range": {"min", "max", "inside", "path"},
        "change": {"path"},
        "rate": {"op", "per_s", "path"},
        "no_data": {"seconds", "heartbeats"},
        "expression": {"expression"},
        "always": set(),
    }[kind]
    unknown = set(raw) - allowed - {"type"}
    if unknown:
        raise _bad(where, f"has fields a {kind} condition does not take: {sorted(unknown)}")
    path = Expression(raw["path"], f"{where}.path") if raw.get("path") is not None else None
    if kind == "threshold":
        op = raw.get("op")
        if op not in OPS:
            raise _bad(f"{where}.op", f"must be one of {' '.join(OPS)}")
        value = raw.get("value")
        if value is None or isinstance(value, (dict, list)):
            raise _bad(f"{where}.value", "must be a number, a string or a boolean")
        if isinstance(value, float) and not math.isfinite(value):
            raise _bad(f"{where}.value", "must be finite")
        if not _is_number(value) and op not in ("==", "!="):
            raise _bad(f"{where}.value", f"must be a number for {op}")
        return Condition(kind, op=op, value=value, path=path)
    if kind == "range":
        low, high = _number(raw.get("min"), f"{where}.min"), _number(raw.get("max"), f"{where}.max")
        if low > high:
            raise _bad(where, "min must not be above max")
        inside = raw.get("inside", False)
        if not isinstance(inside, bool):
            raise _bad(f"{where}.inside", "must be true or false")
        return Condition(kind, low=low, high=high, inside=inside, path=path)
    if kind == "rate":
        op = raw.get("op")
        if op not in (">", ">=", "<", "<="):
            raise _bad(f"{where}.op", "must be one of > >= < <=")
        return Condition(kind, op=op, value=_number(raw.get("per_s"), f"{where}.per_s"), path=path)
    if kind == "no_data":
        if source not in ("telemetry", "event"):
            raise _bad(where, f"no_data watches telemetry or events, not {source}")
        seconds, beats = raw.get("seconds"), raw.get("heartbeats")
        if (seconds is None) == (beats is None):
            raise _bad(where, "give exactly one of seconds or heartbeats")
        if beats is not None:
            if not isinstance(beats, int) or isinstance(beats, bool) or not 1 <= beats <= 100:
                raise _bad(f"{where}.heartbeats", "must be a whole number from 1 to 100")
            return Condition(kind, heartbeats=beats)
        secs = _number(seconds, f"{where}.seconds")
        if not 0 < secs <= MAX_WINDOW_S:
            raise _bad(f"{where}.seconds", f"must be above 0 and at most {MAX_WINDOW_S:.0f}")
        return Condition(kind, seconds=secs)
    if kind == "expression":
        return Condition(kind, expression=Expression(raw.get("expression"), f"{where}.expression"))
    return Condition(kind, path=path)


def _name(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not _NAME.fullmatch(raw):
        raise _bad(where, "must be 1-128 letters, digits or . _ : / -")
    return raw


def parse_action(raw: Any, where: str) -> Action:
    """Check one action object."""
    if not isinstance(raw, Mapping):
        raise _bad(where, "must be an object with a type")
    kind = raw.get("type")
    if kind not in ACTIONS:
        raise _bad(f"{where}.type", f"must be one of {', '.join(ACTIONS)}")
    params = {k: v for k, v in raw.items() if k != "type"}
    allowed = {
        "alarm": {"alarm_type", "severity", "summary"},
        "notify": {"channels"},
        "command": {"name", "params", "timeout_s"},
        "set_desired": {"state"},
        "emit_event": {"event_type", "body"},
        "emit_telemetry": {"sensor", "value"},
    }[kind]
    unknown = set(params) - allowed
    if unknown:
        raise _bad(where, f"has fields a {kind} action does not take: {sorted(unknown)}")
    if kind == "alarm":
        severity = params.setdefault("severity", "major")
        if severity not in SEVERITIES:
            raise _bad(f"{where}.severity", f"must be one of {', '.join(SEVERITIES)}")
        if params.get("alarm_type") is not None:
            _name(params["alarm_type"], f"{where}.alarm_type")
        summary = params.get("summary")
        if summary is not None and (not isinstance(summary, str) or len(summary) > 500):
            raise _bad(f"{where}.summary", "must be text of at most 500 characters")
    elif kind == "notify":
        channels = params.get("channels")
        if (
            not isinstance(channels, list)
            or not channels
            or not all(isinstance(c, str) and is_slug(c) for c in channels)
        ):
            raise _bad(f"{where}.channels", "must list one or more channel ids")
    elif kind == "command":
        _name(params.get("name"), f"{where}.name")
        if not isinstance(params.setdefault("params", {}), dict):
            raise _bad(f"{where}.params", "must be an object")
        timeout = params.get("timeout_s")
        if timeout is not None and (not _is_number(timeout) or not 1 <= timeout <= 86400):
            raise _bad(f"{where}.timeout_s", "must be from 1 to 86400 seconds")
    elif kind == "set_desired":
        if not isinstance(params.get("state"), dict) or not params["state"]:
            raise _bad(f"{where}.state", "must be a non-empty object of desired fields")
    elif kind == "emit_event":
        _name(params.get("event_type"), f"{where}.event_type")
        if params.get("body") is not None:
            Expression(params["body"], f"{where}.body")
    elif kind == "emit_telemetry":
        _name(params.get("sensor"), f"{where}.sensor")
        Expression(params.get("value"), f"{where}.value")
    return Action(kind, params)


def parse_rule(raw: Any) -> RuleSpec:
    """Check a rule definition; ValidationFailed names the field and, for expressions, where."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("a rule must be an object")
    source_raw = raw.get("source")
    if not isinstance(source_raw, Mapping) or source_raw.get("kind") not in SOURCES:
        raise _bad("source.kind", f"must be one of {', '.join(SOURCES)}")
    source = source_raw["kind"]
    unknown = set(source_raw) - {"kind", "sensor", "event_type"}
    if source == "refused":
        if set(source_raw) - {"kind"}:
            raise _bad("source", "a refused source takes no other field")
        source_raw = {"kind": "event", "event_type": REFUSED_EVENT}
        source = "event"
    if unknown:
        raise _bad("source", f"has unknown fields {sorted(unknown)}")
    sensor = event_type = None
    if source == "telemetry" and source_raw.get("sensor") is not None:
        sensor = _name(source_raw["sensor"], "source.sensor")
    elif source == "event" and source_raw.get("event_type") is not None:
        event_type = _name(source_raw["event_type"], "source.event_type")
    elif set(source_raw) - {"kind"}:
        raise _bad("source", f"a {source} source takes no {sorted(set(source_raw) - {'kind'})}")
    condition = parse_condition(raw.get("condition"), "condition", source)
    if source == "telemetry" and sensor is None and condition.type not in ("no_data", "expression"):
        raise _bad("source.sensor", f"name the sensor a {condition.type} condition watches")
    clear = None
    if raw.get("clear") is not None:
        clear = parse_condition(raw["clear"], "clear", source)
        if clear.type in ("no_data", "change", "always"):
            raise _bad("clear.type", "a clear condition is a threshold, range, rate or expression")
        if condition.type == "no_data":
            raise _bad("clear", "a no_data rule clears when data arrives; it takes no clear")
    for_s = raw.get("for_s", 0)
    if not _is_number(for_s) or not 0 <= for_s <= MAX_WINDOW_S:
        raise _bad("for_s", f"must be from 0 to {MAX_WINDOW_S:.0f} seconds")
    where = Expression(raw["where"], "where") if raw.get("where") is not None else None
    enrich_raw = raw.get("enrich") or []
    if not isinstance(enrich_raw, list) or len(enrich_raw) > MAX_ENRICH:
        raise _bad("enrich", f"must be a list of at most {MAX_ENRICH} joins")
    enrich = []
    for i, item in enumerate(enrich_raw):
        at = f"enrich[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"table", "key", "as"}:
            raise _bad(at, "must be {table, key, as}")
        table = item.get("table")
        if not isinstance(table, str) or not is_slug(table):
            raise _bad(f"{at}.table", f"must be a reference table name: {SLUG_RULE}")
        alias = item.get("as", table)
        if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
            raise _bad(f"{at}.as", "must be a name of letters, digits and _")
        enrich.append(Enrichment(table, Expression(item.get("key"), f"{at}.key"), alias))
    actions_raw = raw.get("actions")
    if not isinstance(actions_raw, list) or not 1 <= len(actions_raw) <= MAX_ACTIONS:
        raise _bad("actions", f"must list 1 to {MAX_ACTIONS} actions")
    actions = tuple(parse_action(a, f"actions[{i}]") for i, a in enumerate(actions_raw))
    kinds = [a.type for a in actions]
    if kinds.count("alarm") > 1:
        raise _bad("actions", "a rule raises at most one alarm")
    if "notify" in kinds and "alarm" not in kinds:
        raise _bad("actions", "notify sends the rule's alarm: add an alarm action")
    for i, action in enumerate(actions):
        if action.type == "emit_event" and source == "event":
            emitted = action.params["event_type"]
            if event_type is None or emitted == event_type:
                raise _bad(
                    f"actions[{i}].event_type",
                    f"the rule would trigger itself: it watches {event_type or 'every event'} "
                    f"and emits {emitted!r}",
                )
        if action.type == "emit_telemetry" and source == "telemetry":
            if sensor is None or action.params["sensor"] == sensor:
                raise _bad(
                    f"actions[{i}].sensor",
                    f"the rule would trigger itself: it watches {sensor or 'every sensor'} "
                    f"and emits {action.params['sensor']!r}",
                )
    if condition.type in ("change", "always") and for_s:
        raise _bad("for_s", f"a {condition.type} condition fires per message: it takes no for_s")
    targets = raw.get("targets")
    if targets is not None and not isinstance(targets, Mapping):
        raise _bad("targets", "must be an object with devices, groups and/or query")
    return RuleSpec(
        source=source,
        sensor=sensor,
        event_type=event_type,
        targets=targets or None,
        condition=condition,
        clear=clear,
        for_s=float(for_s),
        where=where,
        enrich=tuple(enrich),
        actions=actions,
        definition=raw,
    )
