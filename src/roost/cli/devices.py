"""``roost device``: register, list, show, import and export devices."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

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
from roost.commands.rotation import request_rotation
from roost.credentials.keys import sas as sas_tokens
from roost.errors import InvalidInput
from roost.inventory.bulk.export import export_devices
from roost.inventory.bulk.importer import import_file
from roost.inventory.bulk.parse import FORMATS
from roost.inventory.devices.query import DeviceQuery, parse_tag_filter
from roost.store.queries import DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest

app = group("device", "Devices: register, list, show, import and export them; issue credentials.")

SiteOption = Annotated[str | None, typer.Option("--site", help="Only devices at this site id.")]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="Only devices of this device model id.")
]
FirmwareOption = Annotated[
    str | None, typer.Option("--firmware", help="Only devices on this firmware id.")
]
CustomerOption = Annotated[
    str | None, typer.Option("--customer", help="Only devices of this customer id.")
]
GroupOption = Annotated[
    str | None, typer.Option("--group", help="Only members of this group (static or dynamic).")
]
TagFilterOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tag",
        help="Only devices with this tag: key:value, or key alone. Repeatable (all must match).",
    ),
]
TextOption = Annotated[
    str | None, typer.Option("--q", help="Case-insensitive text search in id, name, notes.")
]
StatusOption = Annotated[
    Literal["online", "offline", "never_seen"] | None,
    typer.Option("--status", help="Presence: online, offline or never_seen.", show_default=False),
]
FormatOption = Annotated[
    Literal["csv", "json"] | None,
    typer.Option(
        "--format", help="csv or json (default: from the file's extension).", show_default=False
    ),
]


def _query(
    site: str | None,
    model: str | None,
    firmware: str | None,
    customer: str | None,
    group_id: str | None,
    tags: list[str] | None,
    q: str | None,
    status: str | None = None,
) -> DeviceQuery:
    return DeviceQuery(
        site_id=site,
        model_id=model,
        firmware_id=firmware,
        customer_id=customer,
        group=group_id,
        tags=tuple(parse_tag_filter(t) for t in tags or ()),
        q=q,
        status=status,
    )


def _tags_text(tags: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))


def _print_device(device: dict[str, Any]) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in (
        ("id", device["id"]),
        ("name", device["name"]),
        ("description", device["description"]),
        ("site", device["site_id"]),
        ("model", device["model_id"]),
        ("firmware", device["firmware_id"]),
        ("customer", device["customer_id"]),
        ("status", device["status"]),
        ("last seen", when(device["last_seen_at"])),
        (
            "heartbeat",
            f"{device['heartbeat_interval_s']} s" if device["heartbeat_interval_s"] else "",
        ),
        (
            "clock skew",
            f"{device['clock_skew_ms']} ms" if device["clock_skew_ms"] is not None else "",
        ),
        ("tags", _tags_text(device["tags"])),
        ("groups", ", ".join(device["groups"])),
        ("notes", device["notes"]),
        ("created", when(device["created_at"])),
        ("updated", when(device["updated_at"])),
    ):
        table.add_row(label, escape(value or ""))
    out.print(table)


def _parse_assignments(values: list[str] | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for raw in values or ():
        key, sep, value = raw.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{raw!r} must look like key=value", param_hint="--tag")
        tags[key] = value
    return tags


@app.command(
    epilog="Example:\n\n"
    "  roost device create kiosk-001 --name 'Kiosk 1' --site paris --model c2 "
    "--tag floor=1 --tag brand=beauty --group kiosks"
)
def create(
    device_id: Annotated[
        str, typer.Argument(metavar="ID", help="Device id: letters, digits and . _ : -")
    ],
    name: Annotated[str | None, typer.Option("--name", help="Display name of the device.")] = None,
    site: Annotated[
        str | None, typer.Option("--site", help="Id of the site it is installed at.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Id of its device model.")] = None,
    firmware: Annotated[
        str | None, typer.Option("--firmware", help="Id of the firmware it runs.")
    ] = None,
    customer: Annotated[
        str | None, typer.Option("--customer", help="Id of the customer it belongs to.")
    ] = None,
    description: Annotated[
        str | None, typer.Option("--description", help="Free text about the device.")
    ] = None,
    notes: Annotated[str | None, typer.Option("--notes", help="Notes for operators.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="A tag as key=value. Repeatable.")
    ] = None,
    group_ids: Annotated[
        list[str] | None, typer.Option("--group", help="A static group to join. Repeatable.")
    ] = None,
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Register a device."""
    fields = {
        "name": name,
        "site_id": site,
        "model_id": model,
        "firmware_id": firmware,
        "customer_id": customer,
        "description": description,
        "notes": notes,
    }
    data: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    data.update(id=device_id, tags=_parse_assignments(tag))
    if group_ids:
        data["group_ids"] = group_ids

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await roost.devices.create(actor, data)

    device = run(work())
    if as_json:
        print_json(device)
    else:
        out.print(f"created device {escape(device['id'])}")
        _print_device(device)


@app.command(
    "list",
    epilog="Examples:\n\n"
    "  roost device list --site paris --tag brand:beauty\n\n"
    "  roost device list --group kiosks --sort -created_at --limit 200 --json",
)
def list_(
    site: SiteOption = None,
    model: ModelOption = None,
    firmware: FirmwareOption = None,
    customer: CustomerOption = None,
    group_id: GroupOption = None,
    tag: TagFilterOption = None,
    q: TextOption = None,
    status: StatusOption = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=MAX_LIMIT, help="Devices per page.")
    ] = DEFAULT_LIMIT,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Devices to skip.")] = 0,
    sort: Annotated[
        str | None, typer.Option("--sort", help="Field to sort by; -field for descending.")
    ] = None,
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List devices, filtered by site, model, firmware, customer, group, tag, text or presence."""

    async def work() -> Page[dict[str, Any]]:
        query = _query(site, model, firmware, customer, group_id, tag, q, status)
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await roost.devices.list(actor, query, PageRequest(limit, offset, sort))

    page = run(work())
    if as_json:
        print_json(page_json(page))
        return
    table = new_table("id", "name", "site", "model", "firmware", "status", "tags")
    for device in page.items:
        table.add_row(
            *(
                escape(device[key] or "")
                for key in ("id", "name", "site_id", "model_id", "firmware_id", "status")
            ),
            escape(_tags_text(device["tags"])),
        )
    out.print(table)
    shown = f"{offset + 1}-{offset + len(page.items)}" if page.items else "none"
    out.print(f"devices {shown} of {page.total}")


@app.command()
def show(
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device to show.")],
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Show a device with its sensors and components."""

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            device = await roost.devices.get(actor, device_id)
            device["sensors"] = await every_page(
                lambda page: roost.devices.list_sensors(actor, device_id, page)
            )
            device["components"] = await every_page(
                lambda page: roost.devices.list_components(actor, device_id, page)
            )
            return device

    device = run(work())
    if as_json:
        print_json(device)
        return
    _print_device(device)
    if device["sensors"]:
        table = new_table("sensor", "type", "path", "unit", "name", title="sensors")
        for sensor in device["sensors"]:
            table.add_row(*(escape(sensor[k]) for k in ("id", "type", "path", "unit", "name")))
        out.print(table)
    if device["components"]:
        table = new_table(
            "component",
            "parent",
            "name",
            "kind",
            "serial",
            "MAC",
            title="components",
        )
        for part in device["components"]:
            table.add_row(
                *(
                    escape(part[k] or "")
                    for k in ("id", "parent_id", "name", "kind", "serial_number", "mac_address")
                )
            )
        out.print(table)


@app.command(
    "import",
    epilog="Examples:\n\n"
    "  roost device import batch-2026-11.csv --dry-run\n\n"
    "  roost device import batch.json --on-existing update --tenant acme\n\n"
    "  cat batch.csv | roost device import - --format csv --partial\n\n"
    "CSV columns: id,name,description,model_id,site_id,firmware_id,customer_id,notes,group_ids "
    "(group ids separated by ;) and tag.KEY for each tag; an empty cell is no value. JSON: an "
    "array of device objects as the API takes them, with optional sensors and components.",
)
def import_(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="CSV or JSON file of devices; - reads standard input.",
            allow_dash=True,
            dir_okay=False,
        ),
    ],
    fmt: FormatOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check every row and count, but write nothing.")
    ] = False,
    on_existing: Annotated[
        Literal["error", "skip", "update"],
        typer.Option(
            "--on-existing",
            help="What a row whose device exists does: error (a bad row), skip, or update.",
        ),
    ] = "error",
    partial: Annotated[
        bool,
        typer.Option(
            "--partial",
            help="Import the good rows even when some are bad (default: all or nothing). "
            "The exit status is then 0, and the bad rows are listed.",
        ),
    ] = False,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Import devices from a CSV or JSON file: all or nothing, one bad row refuses the file.

    Every bad row is listed with its row number (1 = first data row) and the reason; a refused
    import exits with status 1.
    """
    stdin = str(file) == "-"
    kind = fmt or ("" if stdin else file.suffix.lower().lstrip("."))
    if kind not in FORMATS:
        raise typer.BadParameter(
            "cannot tell csv from json by the file name: add --format csv or --format json",
            param_hint="--format",
        )
    try:
        data = sys.stdin.buffer.read() if stdin else file.read_bytes()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="FILE") from None

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await import_file(
                roost.devices,
                actor,
                data,
                kind,
                dry_run=dry_run,
                on_existing=on_existing,
                atomic=not partial,
            )

    report = run(work())
    counts = ", ".join(f"{report[k]} {k}" for k in ("created", "updated", "unchanged", "skipped"))
    if report["dry_run"]:
        out.print(f"dry run, nothing written: would have {counts}")
    else:
        out.print(f"imported: {counts}")
    if report["errors"]:
        rows = len({e["row"] for e in report["errors"]})
        err.print(f"{rows} row(s) refused:", style="red")
        print_item_errors(report["errors"])


@app.command(
    epilog="Examples:\n\n"
    "  roost device export --output fleet.csv\n\n"
    "  roost device export --format json --site paris > paris.json"
)
def export(
    fmt: Annotated[
        Literal["csv", "json"] | None,
        typer.Option(
            "--format",
            help="csv or json (default: from --output's extension, else csv).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="File to write; - (the default) writes standard output.",
            allow_dash=True,
            dir_okay=False,
        ),
    ] = Path("-"),
    site: SiteOption = None,
    model: ModelOption = None,
    firmware: FirmwareOption = None,
    customer: CustomerOption = None,
    group_id: GroupOption = None,
    tag: TagFilterOption = None,
    q: TextOption = None,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Export devices as CSV or JSON (JSON includes sensors and components); it imports back."""
    stdout = str(output) == "-"
    suffix = "" if stdout else output.suffix.lower().lstrip(".")
    kind = fmt or (suffix if suffix in FORMATS else "csv")

    async def work() -> str:
        query = _query(site, model, firmware, customer, group_id, tag, q)
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await export_devices(roost.devices, actor, query, kind)

    text = run(work())
    if stdout:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot write {output}: {exc.strerror}", param_hint="--output"
        ) from None
    err.print(f"exported to {escape(str(output))}")


# -- credentials --------------------------------------------------------------------------------

# A SAS token's default lifetime: an hour, as Azure's samples sign them; devices sign their own.
DEFAULT_SAS_TTL_S = 3600
# At most a year: a longer-lived secret belongs in a device token (revocable by id).
MAX_SAS_TTL_S = 366 * 86_400


@app.command(
    epilog="Example:\n\n"
    "  DEV=$(roost device token paris-display-09 --name factory)\n\n"
    "  mosquitto_pub -u paris-display-09 -P \"$DEV\" -t devices/paris-display-09/telemetry -m '{}'"
)
def token(
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device the token is for.")],
    name: Annotated[
        str, typer.Option("--name", help="A label for the token, shown when listing tokens.")
    ] = "",
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Issue a device token (the MQTT password or HTTP bearer) and print it: shown once."""

    async def work() -> tuple[dict[str, Any], str]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await roost.credentials.issue_token(actor, device_id, name=name)

    row, secret = run(work())
    typer.echo(secret)
    err.print(f"token {escape(row['id'])} for {escape(device_id)} (revoke it by that id)")


@app.command(
    "rotate-credentials",
    epilog="Examples:\n\n"
    "  roost device rotate-credentials paris-display-09\n\n"
    "  roost device rotate-credentials paris-display-09 --certificate --json",
)
def rotate_credentials(
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device to ask.")],
    certificate: Annotated[
        bool | None,
        typer.Option(
            "--certificate/--no-certificate",
            help="Ask for a new client certificate too (default: when the device holds one).",
            show_default=False,
        ),
    ] = None,
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Ask a device's agent to rotate its credentials (queues roost.rotate_credentials).

    The agent gets a new token (and certificate), switches to it and retires the old one. Follow
    the command at GET /api/v1/devices/ID/commands/COMMAND_ID. A device connected to a running
    server gets it at once when that server shares a bus with this command (NATS), else when it
    next polls or connects.
    """

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await request_rotation(roost, actor, device_id, certificate)

    command = run(work())
    if as_json:
        print_json(command)
    else:
        out.print(
            f"queued {escape(command['name'])} {escape(command['id'])} for {escape(device_id)} "
            f"(certificate: {'yes' if command['params']['certificate'] else 'no'})"
        )


@app.command(
    epilog="Examples:\n\n"
    "  roost device sas paris-display-09 --ttl 86400\n\n"
    "  roost device sas paris-display-09 --key-id key_… --key BASE64KEY"
)
def sas(
    device_id: Annotated[str, typer.Argument(metavar="ID", help="The device the token is for.")],
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="The device key (Base64) to sign with; default: make a new key (shown once).",
            show_default=False,
        ),
    ] = None,
    key_id: Annotated[
        str | None,
        typer.Option(
            "--key-id", help="The id of --key (key_…): the token's skn.", show_default=False
        ),
    ] = None,
    ttl: Annotated[
        int,
        typer.Option("--ttl", min=1, max=MAX_SAS_TTL_S, help="Seconds the token stays valid."),
    ] = DEFAULT_SAS_TTL_S,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Print a SAS token for a device (HTTP Authorization header, WebSocket, MQTT password)."""
    if (key is None) != (key_id is None):
        raise typer.BadParameter("--key and --key-id go together", param_hint="--key")

    async def work() -> tuple[str, str, str | None, str]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            await roost.devices.get(actor, device_id)  # 404 for an unknown device
            if key is not None and key_id is not None:
                return key_id, key, None, actor.tenant_id
            row, made = await roost.keys.create_key(actor, device_id, "roost device sas")
            return row["id"], made, made, actor.tenant_id

    name, secret, made, tenant_id = run(work())
    try:
        raw = sas_tokens.decode_key(secret)
    except InvalidInput as exc:
        raise typer.BadParameter(exc.detail, param_hint="--key") from None
    expiry = int(time.time()) + ttl
    typer.echo(sas_tokens.sign(raw, sas_tokens.device_resource(tenant_id, device_id), expiry, name))
    if made is not None:
        err.print(
            f"made key {escape(name)}: {escape(made)}  (shown once; sign more tokens with it)"
        )
