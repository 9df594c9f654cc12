"""HTTP routes: rules (``/api/v1/rules``). Viewers read; operators create, change, delete."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, Query, Response
from pydantic import Field

from roost.alarms.rules.service import SORTS, RuleService
from roost.core.ids import SLUG_PATTERN
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.store.queries import Page


class Services(Protocol):
    """What the rule routes use of the running Roost."""

    @property
    def rules(self) -> RuleService: ...


RoostDep = Annotated[Services, Depends(get_roost)]
router = APIRouter(tags=["rules"])
ERRORS = s.problem_responses(403, 404, 409, 422)

SOURCE_DOC = (
    'What the rule watches: {"kind": "telemetry", "sensor"?}, {"kind": "event", "event_type"?} '
    'or {"kind": "presence"}'
)
TARGETS_DOC = (
    "Which devices: {devices: [ids], groups: [ids], query: {site_id, model_id, tags, ...}} "
    "(their union); absent or null: every device of the tenant"
)
CONDITION_DOC = (
    "When it fires: threshold {op, value, path?}, range {min, max, inside?}, change {path?}, "
    "rate {op, per_s}, no_data {seconds | heartbeats}, expression {expression} (JMESPath over "
    "{msg, device, ref}; a truthy result holds), always"
)
CLEAR_DOC = (
    "When an active rule clears (threshold, range, rate or expression); default: not condition"
)
ACTIONS_DOC = (
    "What it does: alarm {alarm_type?, severity, summary?}, notify {channels}, command "
    "{name, params?, timeout_s?}, set_desired {state}, emit_event {event_type, body?}, "
    "emit_telemetry {sensor, value}"
)
EXAMPLE: dict[str, Any] = {
    "id": "display-overheat",
    "name": "Display overheating",
    "source": {"kind": "telemetry", "sensor": "temperature"},
    "targets": {"groups": ["displays"]},
    "condition": {"type": "threshold", "op": ">", "value": 70},
    "clear": {"type": "threshold", "op": "<", "value": 65},
    "for_s": 60,
    "actions": [
        {"type": "alarm", "severity": "critical", "summary": "{device_id} is at {value} °C"},
        {"type": "notify", "channels": ["ops-webhook"]},
    ],
}


class RuleIn(s.Body):
    """A new rule."""

    model_config = {"json_schema_extra": {"examples": [EXAMPLE]}}

    id: str | None = Field(
        None, min_length=1, max_length=128, description="Default: generated",
        json_schema_extra=s.documented(pattern=SLUG_PATTERN),
    )  # fmt: skip
    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)
    enabled: bool = True
    source: dict[str, Any] = Field(description=SOURCE_DOC)
    targets: dict[str, Any] | None = Field(None, description=TARGETS_DOC)
    condition: dict[str, Any] = Field(description=CONDITION_DOC)
    clear: dict[str, Any] | None = Field(None, description=CLEAR_DOC)
    for_s: float = Field(0, ge=0, le=7 * 86400, description="How long the condition must hold")
    where: str | None = Field(
        None, max_length=2000, description="A JMESPath filter over {msg, device, ref}"
    )
    enrich: list[dict[str, Any]] | None = Field(
        None, description="Reference-table joins: [{table, key (JMESPath), as}] → ref.<as>"
    )
    actions: list[dict[str, Any]] = Field(description=ACTIONS_DOC)


class RulePatch(s.Body):
    """Changes to a rule: given fields replace the rule's."""

    model_config = {"json_schema_extra": {"examples": [{"enabled": False}]}}

    name: str | None = Field(None, max_length=200)
    description: str | None = Field(None, max_length=2000)
    enabled: bool | None = None
    source: dict[str, Any] | None = Field(None, description=SOURCE_DOC)
    targets: dict[str, Any] | None = Field(None, description=TARGETS_DOC)
    condition: dict[str, Any] | None = Field(None, description=CONDITION_DOC)
    clear: dict[str, Any] | None = Field(None, description=CLEAR_DOC)
    for_s: float | None = Field(None, ge=0, le=7 * 86400)
    where: str | None = Field(None, max_length=2000)
    enrich: list[dict[str, Any]] | None = None
    actions: list[dict[str, Any]] | None = Field(None, description=ACTIONS_DOC)


class RuleOut(s.Out):
    """A rule."""

    id: str
    name: str
    description: str
    enabled: bool
    source: dict[str, Any] | None
    targets: dict[str, Any] | None
    condition: dict[str, Any] | None
    clear: dict[str, Any] | None
    for_s: float | None
    where: str | None
    enrich: list[dict[str, Any]] | None
    actions: list[dict[str, Any]] | None
    error: str | None = Field(
        description="Why the engine stopped the rule (a loop, a failing action)"
    )
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class RuleDetailOut(RuleOut):
    """A rule and the devices it holds pending or active now."""

    pending: int
    active: int


@router.post(
    "/rules",
    response_model=RuleOut,
    status_code=201,
    operation_id="create_rule",
    summary="Create a rule (checked: targets, sensor, channels, tables, expressions, loops)",
    responses=ERRORS,
)
async def create_rule(roost: RoostDep, actor: ActorDep, body: RuleIn) -> dict[str, Any]:
    return await roost.rules.create(actor, body.model_dump(exclude_none=True))


@router.get(
    "/rules",
    response_model=s.Page[RuleOut],
    operation_id="list_rules",
    openapi_extra=sortable(SORTS),
    summary="List the tenant's rules",
    responses=ERRORS,
)
async def list_rules(
    roost: RoostDep,
    actor: ActorDep,
    page: PageDep,
    enabled: bool | None = None,
    source: Annotated[
        Literal["telemetry", "event", "presence", "state", "command", "job"] | None, Query()
    ] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[dict[str, Any]]:
    return await roost.rules.list(actor, page, enabled=enabled, source=source, q=q)


@router.get(
    "/rules/{rule_id}",
    response_model=RuleDetailOut,
    operation_id="get_rule",
    summary="A rule, with how many devices it holds pending or active",
    responses=ERRORS,
)
async def get_rule(roost: RoostDep, actor: ActorDep, rule_id: str) -> dict[str, Any]:
    return await roost.rules.get(actor, rule_id)


@router.patch(
    "/rules/{rule_id}",
    response_model=RuleOut,
    operation_id="update_rule",
    summary="Change a rule (a new definition starts its per-device states afresh)",
    responses=ERRORS,
)
async def update_rule(
    roost: RoostDep, actor: ActorDep, rule_id: str, body: RulePatch
) -> dict[str, Any]:
    return await roost.rules.update(actor, rule_id, body.model_dump(exclude_unset=True))


@router.delete(
    "/rules/{rule_id}",
    status_code=204,
    operation_id="delete_rule",
    summary="Delete a rule (its alarms stay as history)",
    responses=ERRORS,
)
async def delete_rule(roost: RoostDep, actor: ActorDep, rule_id: str) -> Response:
    await roost.rules.delete(actor, rule_id)
    return Response(status_code=204)
