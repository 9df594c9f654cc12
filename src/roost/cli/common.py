"""What every store-side ``roost`` command shares: options, opening the store, output, errors.

The commands act on the store directly as the local administrator of the machine
(:func:`roost.core.access.local_admin`), through the same service functions the HTTP routes
call. A :class:`~roost.errors.RoostError` becomes ``error: <detail>`` on stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy import exc as sa_exc

from roost.config import load_settings
from roost.core.access import Actor, local_admin
from roost.errors import ConfigError, InvalidInput, RoostError
from roost.runtime import Roost
from roost.store.queries import MAX_LIMIT, Page, PageRequest

T = TypeVar("T")

# Help text is rendered as Rich markup: square brackets would be taken for style tags.
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory (default: env ROOST_DATA_DIR, else ./roost-data).",
        show_default=False,
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="sqlite:///file or postgresql://… (default: env ROOST_DATABASE_URL, "
        "else SQLite in the data directory).",
        show_default=False,
    ),
]
TenantOption = Annotated[str, typer.Option("--tenant", "-t", help="The tenant to act in.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

# Soft wrap: a long line stays one line when the output goes to a file or a pipe.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def group(name: str, help: str) -> typer.Typer:
    """A command group such as ``roost device``."""
    return typer.Typer(name=name, help=help, no_args_is_help=True, rich_markup_mode="rich")


def new_table(*headers: str, title: str | None = None) -> Table:
    """A table whose cells wrap rather than being cut short (ids and tags must stay whole)."""
    columns = [Column(header, overflow="fold") for header in headers]
    return Table(*columns, title=title)


def describe(entry: Mapping[str, Any]) -> str:
    """One per-item error as a line: ``row 3 (id kiosk-3) site_id: no site 'x'``."""
    parts = []
    if entry.get("row") is not None:
        parts.append(f"row {entry['row']}")
    if entry.get("id"):
        parts.append(f"(id {entry['id']})")
    where = entry.get("field")
    head = " ".join(parts)
    if where:
        head = f"{head} {where}:" if head else f"{where}:"
    elif head:
        head += ":"
    message = str(entry.get("message", ""))
    return f"{head} {message}" if head else message


def print_item_errors(errors: list[dict[str, Any]]) -> None:
    """Per-item errors, one per line, in red on stderr."""
    for entry in errors:
        err.print(f"  {escape(describe(entry))}", style="red")


def fail(exc: RoostError) -> NoReturn:
    """Report an expected error (and its per-item errors) on stderr and exit with status 1."""
    err.print(f"error: {escape(exc.detail)}", style="bold red")
    errors = exc.extra.get("errors") if exc.extra else None
    if errors:
        print_item_errors(errors)
    raise typer.Exit(1)


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; expected errors end the command with status 1."""
    try:
        return asyncio.run(work)
    except RoostError as exc:
        fail(exc)
    except sa_exc.DBAPIError as exc:
        # SQLSTATE class 22: a value the database cannot store or compare (too long, NUL): the
        # input's fault, as the HTTP API answers it with 422. Anything else is a bug: traceback.
        if not str(getattr(exc.orig, "sqlstate", None) or "").startswith("22"):
            raise
        reason = str(exc.orig).splitlines()[0]
        fail(InvalidInput(f"a value cannot be stored or compared: {reason}"))


@asynccontextmanager
async def open_roost(
    data_dir: Path | None, database_url: str | None, *, start: bool = True
) -> AsyncIterator[Roost]:
    """The store and services, migrated and bootstrapped unless ``start`` is false."""
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    try:
        roost = Roost.build(settings)
    except OSError as exc:
        raise ConfigError(f"cannot use the data directory {settings.data_dir}: {exc}") from exc
    try:
        await _reach(roost)
        if start:
            await roost.start(serve=False)
            if roost.generated_admin_password:
                err.print(
                    f"Created the superuser: admin / {escape(roost.generated_admin_password)}  "
                    "(shown once; change it with `roost user set-password admin`)"
                )
        yield roost
    finally:
        await roost.close()


async def _reach(roost: Roost) -> None:
    """Fail with one clear line, not a traceback, when the database cannot be reached."""
    await roost.db.ping()  # the store raises Unavailable naming the database and the reason


async def tenant_actor(roost: Roost, tenant: str) -> Actor:
    """The local administrator acting inside ``tenant`` (404 when there is no such tenant)."""
    return await roost.identity.act_in_tenant(local_admin(), tenant)


async def every_page(
    fetch: Callable[[PageRequest], Awaitable[Page[dict[str, Any]]]],
) -> list[dict[str, Any]]:
    """All items of a collection, read a page at a time."""
    items: list[dict[str, Any]] = []
    while True:
        page = await fetch(PageRequest(limit=MAX_LIMIT, offset=len(items)))
        items.extend(page.items)
        if not page.items or len(items) >= page.total:
            return items


def print_json(value: Any) -> None:
    """Pretty JSON on stdout (timestamps as RFC 3339)."""
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z).decode()
    sys.stdout.write(text + "\n")


def page_json(page: Page[dict[str, Any]]) -> dict[str, Any]:
    """A page as the API answers it."""
    return {"items": page.items, "total": page.total, "limit": page.limit, "offset": page.offset}


def new_password(given: str | None, label: str) -> tuple[str, bool]:
    """The password to set: given, typed at a prompt, or generated when stdin is no terminal.

    Answers the password and whether it was generated (and so must be shown once).
    """
    if given is not None:
        return given, False
    if sys.stdin.isatty():
        typed: str = typer.prompt(label, hide_input=True, confirmation_prompt=True)
        return typed, False
    return secrets.token_urlsafe(12), True


def when(value: Any) -> str:
    """A timestamp (or nothing) for a table cell."""
    if value is None:
        return ""
    text = value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value)
    return text.replace("+00:00", "Z")
