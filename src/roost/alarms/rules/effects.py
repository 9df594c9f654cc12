"""What a rule does when it fires or resolves, inside the engine's transaction.

Alarms are raised and cleared, notifications decided (the notification outbox) and commands
queued in the same transaction as the rule states and the feed cursor; actions that leave the
database (a derived event or point to ingest, a desired state to set) are written to the
``rule_actions`` outbox and carried out after the commit (:mod:`roost.alarms.rules.actions`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from roost.alarms.notify.model import AlarmNotice
from roost.alarms.rules.fleet import DeviceFacts
from roost.alarms.rules.model import Expression
from roost.alarms.rules.tables import rule_actions
from roost.alarms.service import AlarmChange, AlarmService
from roost.alarms.writes import AlarmOp
from roost.commands.rules import CommandRequest
from roost.commands.service import CommandService

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
#: Keys of a message carried into an alarm's details (enough to see why, small enough to list).
_DETAIL_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class Effect:
    """A rule fired (its condition began to hold) or resolved (its clear condition held)."""

    kind: str  # fire | resolve
    rule: Any  # roost.alarms.rules.evaluation.LoadedRule
    device: DeviceFacts
    value: Any
    context: dict[str, Any] | None
    at: float  # epoch seconds
    hops: int = 0


def utc(epoch_s: float) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch_s, UTC)


def render(template: str, fields: dict[str, Any]) -> str:
    """``{device_id}``-style placeholders filled in; unknown ones left as they are."""
    return _PLACEHOLDER.sub(lambda m: str(fields.get(m.group(1), m.group(0))), template)


def _fields(effect: Effect) -> dict[str, Any]:
    rule, device = effect.rule, effect.device
    return {
        "device_id": device.id,
        "device_name": device.name or device.id,
        "site_id": device.site_id or "",
        "rule": rule.name,
        "rule_id": rule.id,
        "value": effect.value,
    }


def _summary(effect: Effect, alarm_type: str, template: str | None) -> str:
    fields = _fields(effect)
    if template:
        return render(template, fields)[:500]
    value = effect.value
    shown = "" if value is None or isinstance(value, (dict, list)) else f" (value {value})"
    return f"{rule_name(effect)} on {effect.device.id}{shown}"[:500]


def rule_name(effect: Effect) -> str:
    """The rule's name as people read it."""
    return str(effect.rule.name or effect.rule.id)


def _details(effect: Effect) -> dict[str, Any]:
    details: dict[str, Any] = {"rule": effect.rule.id}
    value = effect.value
    if value is not None and len(repr(value)) <= _DETAIL_LIMIT:
        details["value"] = value
    context = effect.context or {}
    if context.get("ref"):
        details["ref"] = context["ref"]
    return details


def notice(change: AlarmChange, effect: Effect, status: str) -> AlarmNotice:
    """The notification outbox entry for an alarm change."""
    alarm = change.alarm
    return AlarmNotice(
        tenant_id=change.tenant_id,
        alarm_id=int(alarm["id"]),
        type=alarm["type"],
        device_id=alarm["device_id"],
        site_id=effect.device.site_id,
        group_ids=effect.device.group_ids,
        severity=alarm["severity"],
        status=status,
        summary=alarm["summary"],
        details=alarm["details"] or {},
        started_at=alarm["started_at"],
        ended_at=alarm["ended_at"],
        rule_id=effect.rule.id,
        channel_ids=effect.rule.spec.channels,
    )


def derived_body(effect: Effect, params: dict[str, Any]) -> dict[str, Any]:
    """The body of an emitted event: the message (or ``body`` over the context), the joined
    reference rows under their aliases, the new type, and where it came from (loop guard)."""
    context = effect.context or {}
    if params.get("body"):
        projected = Expression(params["body"], "body").search(context)
        body = projected if isinstance(projected, dict) else {"value": projected}
    else:
        msg = context.get("msg")
        body = dict(msg) if isinstance(msg, dict) else {"value": effect.value}
        body.update(context.get("ref") or {})
    body.pop("_rule", None)
    body["event"] = params["event_type"]
    body["_rule"] = {"id": effect.rule.id, "hops": effect.hops + 1}
    return body


async def run_effects(
    conn: AsyncConnection,
    effects: list[Effect],
    *,
    alarms: AlarmService,
    commands: CommandService,
    now: datetime,
) -> tuple[list[AlarmChange], list[AlarmNotice], list[tuple[str, int, dict[str, Any]]], int]:
    """Carry out effects inside the caller's transaction.

    Answers the alarm changes (to announce), the notices (to enqueue in the same transaction),
    the commands queued (to hand to their devices after the commit) and how many actions went
    to the outbox.
    """
    changes: list[AlarmChange] = []
    notices: list[AlarmNotice] = []
    queued: list[tuple[str, int, dict[str, Any]]] = []
    outbox: list[dict[str, Any]] = []
    # Alarm raises and clears of the whole chunk go in one batch (roost.alarms.writes).
    ops: list[AlarmOp] = []
    sources: list[tuple[Effect, str]] = []  # the effect and notice status of each op
    for effect in effects:
        rule, device = effect.rule, effect.device
        spec = rule.spec
        alarm = spec.alarm
        at = utc(effect.at)
        if alarm is not None:
            alarm_type = alarm.params.get("alarm_type") or rule.id
            if effect.kind == "resolve":
                ops.append(AlarmOp("clear", rule.tenant_id, device.pk, device.id, alarm_type, at))
                sources.append((effect, "resolved"))
            else:
                ops.append(
                    AlarmOp(
                        "raise", rule.tenant_id, device.pk, device.id, alarm_type, at,
                        severity=alarm.params["severity"], rule_id=rule.id,
                        summary=_summary(effect, alarm_type, alarm.params.get("summary")),
                        details=_details(effect),
                    )
                )  # fmt: skip
                sources.append((effect, "firing"))
        if effect.kind == "resolve":
            continue
        for action in spec.actions:
            params = dict(action.params)
            if action.type == "command":
                timeout = params.get("timeout_s")
                record = await commands.insert_in(
                    conn,
                    rule.tenant_id,
                    device.pk,
                    device.id,
                    CommandRequest(
                        name=params["name"],
                        params=dict(params.get("params") or {}),
                        timeout_s=int(timeout) if timeout is not None else None,
                    ),
                    now,
                    created_by=f"rule:{rule.id}",
                )
                queued.append((rule.tenant_id, device.pk, record))
            elif action.type == "set_desired":
                outbox.append(_outbox(effect, "set_desired", {"desired": params["state"]}, now))
            elif action.type == "emit_event":
                outbox.append(_outbox(effect, "emit_event", derived_body(effect, params), now))
            elif action.type == "emit_telemetry":
                value = Expression(params["value"], "value").search(effect.context or {})
                if value is not None and not isinstance(value, (dict, list)):
                    point = {"ts": int(effect.at * 1000), "values": {params["sensor"]: value}}
                    outbox.append(_outbox(effect, "emit_telemetry", point, now))
    for change, (effect, status) in zip(await alarms.apply_in(conn, ops), sources, strict=True):
        if change is None:
            continue
        changes.append(change)
        notify = change.change == "raised" if status == "firing" else change.change == "cleared"
        if notify and effect.rule.spec.channels:
            notices.append(notice(change, effect, status))
    if outbox:
        await conn.execute(rule_actions.insert(), outbox)
    return changes, notices, queued, len(outbox)


def _outbox(effect: Effect, kind: str, payload: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "tenant_id": effect.rule.tenant_id,
        "rule_id": effect.rule.id,
        "device_pk": effect.device.pk,
        "device_id": effect.device.id,
        "kind": kind,
        "payload": payload,
        "attempts": 0,
        "last_error": None,
        "created_at": now,
    }
