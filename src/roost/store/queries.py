"""Query helpers shared by every service: paging with totals, sorting, text search."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.errors import InvalidInput

T = TypeVar("T")

DEFAULT_LIMIT = 50
# A page is one response body: 1,000 rows keeps it under a megabyte for every resource.
MAX_LIMIT = 1000
# Far beyond any collection, and well inside the 64-bit OFFSET both databases accept.
MAX_OFFSET = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a collection, with the total number of matching items."""

    items: list[T]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which slice of a collection to answer, in which order."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    sort: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
        if not 0 <= self.offset <= MAX_OFFSET:
            raise InvalidInput(f"offset must be between 0 and {MAX_OFFSET}")


def order_by(
    table: sa.Table | sa.Subquery, sort: str | None, allowed: Sequence[str], default: str
) -> list[sa.ColumnElement[Any]]:
    """ORDER BY for ``sort`` (``field`` or ``-field``), refusing fields not in ``allowed``."""
    spec = sort or default
    descending = spec.startswith("-")
    name = spec[1:] if descending else spec
    if name not in allowed:
        raise InvalidInput(f"cannot sort by {name!r}; sortable fields: {', '.join(allowed)}")
    column = table.c[name]
    # Rows without a value (never seen, no release date) go last in both directions, the same
    # on SQLite (nulls first by default) and PostgreSQL (nulls last ascending).
    primary = (column.desc() if descending else column.asc()).nulls_last()
    # A unique tie-breaker keeps pages stable when many rows share the sort value.
    tie = table.c["id"]
    return [primary] if name == "id" else [primary, tie.desc() if descending else tie.asc()]


def escape_like(text: str) -> str:
    """Escape LIKE wildcards so a search for ``50%`` means the characters, not a pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def text_match(columns: Iterable[sa.ColumnElement[Any]], q: str) -> sa.ColumnElement[bool]:
    """Case-insensitive substring match of ``q`` in any of the columns."""
    pattern = f"%{escape_like(q.lower())}%"
    return sa.or_(*(sa.func.lower(col).like(pattern, escape="\\") for col in columns))


def as_dicts(result: sa.Result[Any]) -> list[dict[str, Any]]:
    """Rows as plain dicts with ``str`` keys (SQLAlchemy's str subclass upsets orjson)."""
    keys = [str(key) for key in result.keys()]
    return [dict(zip(keys, row, strict=True)) for row in result]


async def fetch_page(
    conn: AsyncConnection,
    query: sa.Select[Any],
    order: list[sa.ColumnElement[Any]],
    page: PageRequest,
) -> tuple[list[dict[str, Any]], int]:
    """Run ``query`` for one page and count all its matches."""
    total = (
        await conn.execute(sa.select(sa.func.count()).select_from(query.order_by(None).subquery()))
    ).scalar_one()
    result = await conn.execute(query.order_by(*order).limit(page.limit).offset(page.offset))
    return as_dicts(result), int(total)


async def fetch_one(conn: AsyncConnection, query: sa.Select[Any]) -> dict[str, Any] | None:
    """The first row of ``query`` as a dict, or None."""
    rows = as_dicts(await conn.execute(query.limit(1)))
    return rows[0] if rows else None
