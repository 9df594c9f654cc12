"""``roost rules`` and ``roost alarms``: manage rules from JSON files; list, acknowledge, clear
alarms.

Both act on the store as the local administrator (as the other store-side commands do), through
the services the HTTP routes call (:mod:`roost.alarms.rules.service`, :mod:`roost.alarms.service`),
so a rule is checked exactly as ``POST /api/v1/rules`` checks it and every change is audited.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NoReturn

import typer
from rich.markup import escape

from roost.alarms.rules.model import SEVERITIES
from roost.alarms.rules.service import DEFINITION_FIELDS
from roost.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    JsonOption,
    TenantOption,
    err,
    every_page,
    group,
    new_table,
    open_roost,
    out,
    page_json,
    print_item_errors,
    print_json,
    run,
    tenant_actor,
    when,
)
from roost.cli.main import app as main_app
from roost.core.access import Actor
from roost.errors import InvalidInput, NotFound, RoostError
from roost.runtime import Roost
from roost.store.queries import DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest

rules_app = group("rules", "Rules: apply them from JSON files, list, show, enable, delete them.")
alarms_app = group("alarms", "Alarms raised by rules: list, acknowledge and clear them.")
main_app.add_typer(rules_app)
main_app.add_typer(alarms_app)

#: A bad rule in ``roost rules apply``: the exit status (as for a bad argument).
BAD_RULE_EXIT: Final = 2
#: The fields a rule object may have (the API's ``POST /api/v1/rules`` body).
RULE_FIELDS: Final = frozenset({"id", "name", "description", "enabled", *DEFINITION_FIELDS})
#: Fields ``roost rules show`` prints that a file may carry back and apply ignores.
READ_ONLY_FIELDS: Final = frozenset(
    {"error", "version", "created_by", "created_at", "updated_at", "pending", "active"}
)

RuleIdArgument = Annotated[str, typer.Argument(metavar="ID", help="The rule's id.")]
AlarmIdArgument = Annotated[int, typer.Argument(metavar="ID", help="The alarm's id (a number).")]

RULE_EXAMPLE = escape(
    '{"id": "display-overheat", "name": "Display overheating", '
    '"source": {"kind": "telemetry", "sensor": "temperature"}, '
    '"targets": {"groups": ["displays"]}, '
    '"condition": {"type": "threshold", "op": ">", "value": 70}, '
    '"clear": {"type": "threshold", "op": "<", "value": 65}, "for_s": 60, '
    '"actions": [{"type": "alarm", "severity": "critical"}]}'
)


# -- rules --------------------------------------------------------------------------------------


@rules_app.command(
    "list",
    epilog="Examples:\n\n  roost rules list\n\n  roost rules list --tenant acme --json",
)
def rules_list(
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List a tenant's rules: id, name, what they watch, enabled, and why the engine stopped one."""

    async def work() -> list[dict[str, Any]]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await every_page(lambda page: roost.rules.list(actor, page))

    items = run(work())
    if as_json:
        print_json(items)
        return
    table = new_table("id", "name", "source", "enabled", "error")
    for rule in items:
        table.add_row(
            escape(rule["id"]),
            escape(rule["name"]),
            escape(_source_text(rule["source"])),
            "yes" if rule["enabled"] else "no",
            escape(rule["error"] or ""),
        )
    out.print(table)


def _source_text(source: Mapping[str, Any] | None) -> str:
    """``telemetry:temperature``, ``event:door_open``, ``presence``."""
    if not source:
        return ""
    detail = source.get("sensor") or source.get("event_type")
    return f"{source.get('kind')}:{detail}" if detail else str(source.get("kind"))


@rules_app.command(epilog="Example:\n\n  roost rules show display-overheat > display-overheat.json")
def show(
    rule_id: RuleIdArgument,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Print a rule as JSON, with how many devices it holds pending or active now."""

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await roost.rules.get(actor, rule_id)

    print_json(run(work()))


@rules_app.command(
    epilog="Examples:\n\n"
    "  roost rules apply rules.json --tenant acme\n\n"
    "  roost rules show display-overheat | roost rules apply -\n\n"
    "A rule object, as POST /api/v1/rules takes it:\n\n" + RULE_EXAMPLE,
)
def apply(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="JSON file: one rule object or a list of them; - reads standard input.",
            allow_dash=True,
            dir_okay=False,
        ),
    ],
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create or update rules from a JSON file, in the file's order.

    Every rule needs an id: a rule the tenant does not have is created; one it has gets the
    file's definition in place of its own (fields left out take their defaults; "enabled" is
    kept unless the file gives it); a rule equal to the file's is left alone ("unchanged", its
    pending and active devices kept). Each rule is checked as the HTTP API checks it. The first
    bad rule stops the command with exit status 2: its error is printed with the field named,
    the rules before it stay applied, and the rules after it are not applied. A file that is not
    JSON is refused whole (exit status 2), naming the line and column. What `roost rules show`
    prints can be applied back: its read-only fields (version, error, timestamps) are ignored.
    """
    items = _read_rules(file)

    async def work() -> tuple[list[str], tuple[int, dict[str, Any], RoostError] | None]:
        done: list[str] = []
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            for number, item in enumerate(items, 1):
                try:
                    done.append(await _apply_one(roost, actor, item))
                except RoostError as exc:
                    return done, (number, item, exc)
        return done, None

    done, failure = run(work())
    for line in done:
        out.print(escape(line))
    if failure is None:
        return
    number, item, exc = failure
    rule_id = item.get("id")
    label = f"rule {number}" + (f" (id {rule_id})" if isinstance(rule_id, str) else "")
    err.print(f"error: {escape(label)} not applied: {escape(exc.detail)}", style="bold red")
    errors = exc.extra.get("errors") if exc.extra else None
    if errors:
        print_item_errors(errors)
    rest = len(items) - number
    if rest:
        err.print(f"{rest} rule(s) after it not applied", style="red")
    raise typer.Exit(BAD_RULE_EXIT)


def _read_rules(file: Path) -> list[dict[str, Any]]:
    """The rule objects of a JSON file (exit status 2, naming line and column, if it is bad)."""
    stdin = str(file) == "-"
    name = "standard input" if stdin else str(file)
    try:
        data = sys.stdin.buffer.read() if stdin else file.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="FILE") from None
    try:
        value = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        _refuse_file(f"{name} is not UTF-8 text (byte {exc.start + 1})")
    except json.JSONDecodeError as exc:
        _refuse_file(f"{name} is not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}")
    items = value if isinstance(value, list) else [value]
    if not items:
        _refuse_file(f"{name} holds no rule (an empty list)")
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            _refuse_file(f"{name}: rule {number} is not a JSON object")
    return items


def _refuse_file(message: str) -> NoReturn:
    err.print(f"error: {escape(message)}; nothing was applied", style="bold red")
    raise typer.Exit(BAD_RULE_EXIT)


async def _apply_one(roost: Roost, actor: Actor, item: dict[str, Any]) -> str:
    """Create or update one rule; answer what was done, as a line."""
    item = {k: v for k, v in item.items() if k not in READ_ONLY_FIELDS}
    unknown = set(item) - RULE_FIELDS
    if unknown:
        raise InvalidInput(f"unknown fields {sorted(unknown)}")
    rule_id = item.get("id")
    if rule_id is None:
        raise InvalidInput(
            "id: a rule applied from a file needs an id (applying the file again then updates "
            "the rule rather than adding another)",
            errors=[{"field": "id", "message": "required"}],
        )
    if not isinstance(rule_id, str):
        raise InvalidInput("id must be text", errors=[{"field": "id", "message": "must be text"}])
    try:
        before = await roost.rules.get(actor, rule_id)
    except NotFound:
        made = await roost.rules.create(actor, item)
        return f"created rule {made['id']}"
    # The file's rule replaces the stored one: fields it leaves out go back to their defaults.
    changes: dict[str, Any] = {
        **dict.fromkeys(DEFINITION_FIELDS),
        "name": None,
        "description": None,
        **item,
    }
    wanted = {
        **{field: changes[field] for field in DEFINITION_FIELDS},
        "name": changes["name"] or rule_id,
        "description": changes["description"] or "",
        "enabled": changes.get("enabled", before["enabled"]),
    }
    if all(before[field] == value for field, value in wanted.items()):
        return f"unchanged rule {rule_id} (version {before['version']})"
    updated = await roost.rules.update(actor, rule_id, changes)
    return f"updated rule {rule_id} (version {updated['version']})"


@rules_app.command(epilog="Example:\n\n  roost rules delete display-overheat --tenant acme")
def delete(
    rule_id: RuleIdArgument,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Delete a rule and its per-device states (the alarms it raised stay, as history)."""

    async def work() -> None:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            await roost.rules.delete(actor, rule_id)

    run(work())
    out.print(f"deleted rule {escape(rule_id)}")


def _set_enabled(
    rule_id: str, enabled: bool, tenant: str, data_dir: Path | None, database_url: str | None
) -> None:
    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await roost.rules.update(actor, rule_id, {"enabled": enabled})

    rule = run(work())
    word = "enabled" if enabled else "disabled"
    out.print(f"{word} rule {escape(rule['id'])} (version {rule['version']})")


@rules_app.command(epilog="Example:\n\n  roost rules enable display-overheat")
def enable(
    rule_id: RuleIdArgument,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Enable a rule (also one the engine stopped: its error is cleared)."""
    _set_enabled(rule_id, True, tenant, data_dir, database_url)


@rules_app.command(epilog="Example:\n\n  roost rules disable display-overheat")
def disable(
    rule_id: RuleIdArgument,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Disable a rule: it stops evaluating; its definition and alarms stay."""
    _set_enabled(rule_id, False, tenant, data_dir, database_url)


# -- alarms -------------------------------------------------------------------------------------


@alarms_app.command(
    "list",
    epilog="Examples:\n\n"
    "  roost alarms list --status active --severity critical --severity major\n\n"
    "  roost alarms list --device kiosk-001 --limit 20 --json",
)
def alarms_list(
    status: Annotated[
        Literal["active", "cleared"] | None,
        typer.Option("--status", help="active or cleared (default: both).", show_default=False),
    ] = None,
    severity: Annotated[
        list[str] | None,
        typer.Option(
            "--severity",
            help="Only this severity: critical, major, minor, warning, info. Repeatable.",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Only alarms of this device id.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=MAX_LIMIT, help="Alarms to show, newest first.")
    ] = DEFAULT_LIMIT,
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List alarms, newest first, filtered by status, severity and device."""
    for value in severity or ():
        if value not in SEVERITIES:
            raise typer.BadParameter(
                f"{value!r} is not one of {', '.join(SEVERITIES)}", param_hint="--severity"
            )

    async def work() -> Page[dict[str, Any]]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await roost.alarms.list(
                actor,
                PageRequest(limit, 0),
                status=(status,) if status else (),
                severity=tuple(severity or ()),
                device_id=device,
            )

    page = run(work())
    if as_json:
        print_json(page_json(page))
        return
    table = new_table("id", "severity", "status", "ack", "device", "type", "count", "started")
    for alarm in page.items:
        table.add_row(
            str(alarm["id"]),
            alarm["severity"],
            alarm["status"],
            escape(alarm["acked_by"] or "yes") if alarm["acknowledged"] else "",
            escape(alarm["device_id"]),
            escape(alarm["type"]),
            str(alarm["count"]),
            when(alarm["started_at"]),
        )
    out.print(table)
    out.print(f"alarms {len(page.items)} of {page.total}" if page.items else "no alarms")


def _print_alarm_change(alarm: dict[str, Any], what: str) -> None:
    out.print(
        f"{what} alarm {alarm['id']}: {escape(alarm['severity'])} {escape(alarm['type'])} "
        f"on {escape(alarm['device_id'])}"
    )


def _alarm_action(
    alarm_id: int, tenant: str, data_dir: Any, database_url: Any, action: str, done: str
) -> None:
    """Acknowledge or clear an alarm through the alarms service and print what changed."""

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            answer: dict[str, Any] = await getattr(roost.alarms, action)(actor, alarm_id)
            return answer

    _print_alarm_change(run(work()), done)


@alarms_app.command(epilog="Example:\n\n  roost alarms ack 42 --tenant acme")
def ack(
    alarm_id: AlarmIdArgument,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Acknowledge an alarm (someone is on it); an error if it already is."""
    _alarm_action(alarm_id, tenant, data_dir, database_url, "acknowledge", "acknowledged")


@alarms_app.command(epilog="Example:\n\n  roost alarms clear 42 --tenant acme")
def clear(
    alarm_id: AlarmIdArgument,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Clear an active alarm by hand; an error if it is cleared already."""
    _alarm_action(alarm_id, tenant, data_dir, database_url, "clear", "cleared")
