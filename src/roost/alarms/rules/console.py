"""Console pages of rules: the list, one rule (its definition, devices it holds, its alarms),
and the form that creates or changes one.

Pages read through :class:`~roost.alarms.rules.service.RuleService` as ``/api/v1/rules`` does.
The form sends each part of the definition (source, targets, condition, clear, enrich, actions)
as the JSON the API takes; the API checks it and its problem names the field at fault
(``condition.expression`` with the column), which the form shows under that part.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter
from starlette.responses import Response

from roost.alarms.router import Services as AlarmServices
from roost.alarms.rules.router import (
    ACTIONS_DOC,
    CLEAR_DOC,
    CONDITION_DOC,
    SOURCE_DOC,
    TARGETS_DOC,
    Services,
)
from roost.alarms.rules.service import DEFINITION_FIELDS
from roost.console.web import ConsoleRoute, PageDep
from roost.core.access import Role
from roost.store.queries import PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

SOURCES: Final = ("telemetry", "event", "presence")
#: The latest alarms a rule's page lists (the alarm list has the rest).
ALARMS_SHOWN: Final = 10
#: A new rule's form starts from the common case: a sensor over a threshold raises an alarm.
NEW_RULE: Final[dict[str, Any]] = {
    "source": {"kind": "telemetry", "sensor": "temperature"},
    "targets": None,
    "condition": {"type": "threshold", "op": ">", "value": 70},
    "clear": {"type": "threshold", "op": "<", "value": 65},
    "for_s": 0,
    "where": None,
    "enrich": None,
    "actions": [
        {"type": "alarm", "severity": "major", "summary": "{device_id} is at {value}"},
    ],
}
#: The form's JSON parts: (field, label, help, required).
JSON_PARTS: Final = (
    ("source", "Source", SOURCE_DOC, True),
    ("targets", "Targets", TARGETS_DOC, False),
    ("condition", "Condition", CONDITION_DOC, True),
    ("clear", "Clear condition", CLEAR_DOC, False),
    ("enrich", "Enrich", "Reference-table joins: [{table, key (JMESPath), as}] → ref.<as>", False),
    ("actions", "Actions", ACTIONS_DOC, True),
)


@router.get("/rules")
async def rule_list(page: PageDep) -> Response:
    """The tenant's rules: filter by source and state, find by id, name or description."""
    roost: Services = page.roost
    paging = page.paging(default_sort="id")
    params = page.request.query_params
    source = params.get("source") or None
    source = source if source in SOURCES else None
    enabled = {"yes": True, "no": False}.get(params.get("enabled") or "")
    q = (params.get("q") or "").strip()[:200] or None
    rules = await roost.rules.list(
        page.actor, paging.request_page, enabled=enabled, source=source, q=q
    )
    return page.render(
        "rules/list.html",
        rules=rules,
        paging=paging,
        chosen={"source": source, "enabled": enabled, "q": q},
        sources=SOURCES,
    )


@router.get("/rules/new")
async def rule_new(page: PageDep) -> Response:
    """The form that creates a rule (operators)."""
    page.actor.require(Role.OPERATOR)
    return page.render(
        "rules/form.html", rule=None, definition=NEW_RULE, original={}, parts=JSON_PARTS
    )


@router.get("/rules/{rule_id}/edit")
async def rule_edit(page: PageDep, rule_id: str) -> Response:
    """The form that changes a rule (operators); only the parts changed are sent."""
    page.actor.require(Role.OPERATOR)
    roost: Services = page.roost
    rule = await roost.rules.get(page.actor, rule_id)
    definition = {name: rule.get(name) for name in DEFINITION_FIELDS}
    definition["for_s"] = definition["for_s"] or 0  # as the form shows it: unchanged is not sent
    # What the form started from: the script sends only the fields that differ from it.
    original = {
        "name": rule["name"],
        "description": rule["description"],
        "enabled": rule["enabled"],
        **definition,
    }
    return page.render(
        "rules/form.html", rule=rule, definition=definition, original=original, parts=JSON_PARTS
    )


@router.get("/rules/{rule_id}")
async def rule_detail(page: PageDep, rule_id: str) -> Response:
    """A rule: its definition, the devices it holds pending or active, its latest alarms."""
    roost: Services = page.roost
    rule = await roost.rules.get(page.actor, rule_id)
    alarm_service: AlarmServices = page.roost
    alarms = await alarm_service.alarms.list(
        page.actor, PageRequest(limit=ALARMS_SHOWN, sort="-started_at"), rule_id=rule_id
    )
    return page.render("rules/detail.html", rule=rule, alarms=alarms, parts=JSON_PARTS)
