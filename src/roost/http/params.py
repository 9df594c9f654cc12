"""Query-string models of list routes: paging, sorting, text search and per-kind filters.

Unknown query parameters are refused (422) so that a misspelt filter is reported instead of being
silently ignored and answering the whole collection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from roost.http.schemas import contains_nul
from roost.store.queries import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, PageRequest

PAGING = {"limit", "offset", "sort", "q"}
# The OpenAPI extension a list route's sortable fields travel in (roost.http.openapi reads it).
SORT_FIELDS_KEY = "x-roost-sort-fields"


def sortable(fields: Sequence[str]) -> dict[str, Any]:
    """A list route's ``openapi_extra``: its ``sort`` takes these fields, or ``-`` and one."""
    return {SORT_FIELDS_KEY: list(fields)}


class QueryParams(BaseModel):
    """A query string: unknown parameters and NUL characters are refused."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _refuse_nul(cls, value: Any) -> Any:
        # PostgreSQL cannot compare text holding NUL; refuse it on every backend alike.
        if contains_nul(value):
            raise ValueError("must not contain NUL (\\u0000) characters")
        return value


class PageParams(QueryParams):
    """Paging and sorting, shared by every collection."""

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Items per page")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Items to skip")
    sort: str | None = Field(
        None, min_length=1, max_length=64, description="Field to sort by; -field for descending"
    )

    def page(self) -> PageRequest:
        """The paging part."""
        return PageRequest(limit=self.limit, offset=self.offset, sort=self.sort)


class ListParams(PageParams):
    """Paging, sorting and text search, shared by every collection."""

    q: str | None = Field(None, max_length=200, description="Case-insensitive text search")

    def filters(self) -> dict[str, str]:
        """The filter part, without unset filters."""
        return {k: v for k, v in self.model_dump(exclude=PAGING, exclude_none=True).items()}
