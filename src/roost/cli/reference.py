"""``roost reference``: upload and list reference tables (lookup data rules join on)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape

from roost.alarms.reference.cache import RECHECK_S
from roost.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    JsonOption,
    TenantOption,
    every_page,
    group,
    new_table,
    open_roost,
    out,
    print_json,
    run,
    tenant_actor,
    when,
)
from roost.cli.main import app as main_app

app = group(
    "reference", "Reference tables: lookup data (a product catalog, store facts) for rules."
)
main_app.add_typer(app)

FORMATS = ("csv", "json")


@app.command(
    epilog="Examples:\n\n"
    "  roost reference upload products products.csv --key product_id\n\n"
    "  roost reference upload stores stores.json --tenant acme"
)
def upload(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The table's name (a slug).")],
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="CSV (header row first) or JSON file; - reads standard input.",
            allow_dash=True,
            dir_okay=False,
        ),
    ],
    key: Annotated[
        str | None,
        typer.Option("--key", help="CSV: the key column (default: the first column)."),
    ] = None,
    fmt: Annotated[
        Literal["csv", "json"] | None,
        typer.Option(
            "--format", help="csv or json (default: from the file's extension).", show_default=False
        ),
    ] = None,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create or replace a reference table from a file: all or nothing, as a new version.

    One bad row (wrong number of cells, empty or duplicate key, …) refuses the file: every bad
    row is listed with its line and the reason, and the command exits with status 1. Running
    servers see the new version at once on a shared NATS bus, else within seconds.
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
            return await roost.reference.replace(actor, name, data, kind, key=key)

    table = run(work())
    out.print(
        f"{escape(table['name'])}: version {table['version']}, {table['row_count']} row(s), "
        f"key {escape(table['key'])} (running servers see it within {RECHECK_S:g} s)"
    )


@app.command("list")
def list_(
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List a tenant's reference tables: key column, columns, version, rows, last upload."""

    async def work() -> list[dict[str, Any]]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await every_page(lambda page: roost.reference.list(actor, page))

    tables = run(work())
    if as_json:
        print_json(tables)
        return
    grid = new_table("name", "key", "columns", "version", "rows", "updated", "by")
    for table in tables:
        grid.add_row(
            escape(table["name"]),
            escape(table["key"]),
            escape(", ".join(table["columns"])),
            str(table["version"]),
            str(table["row_count"]),
            when(table["updated_at"]),
            escape(table["updated_by"]),
        )
    out.print(grid)
