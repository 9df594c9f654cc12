"""Request and response bodies of the REST API (they are the OpenAPI schemas)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)
from pydantic_core import PydanticCustomError

from roost.core.json import OUT_OF_RANGE_CODE, IntegerOutOfRange, check_integers

T = TypeVar("T")


def contains_nul(value: Any) -> bool:
    """True when a string, or any key or value inside lists and objects, holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(contains_nul(v) for v in value)
    return False


class Body(BaseModel):
    """A request body: unknown fields are refused rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*")
    @classmethod
    def _refuse_nul(cls, value: Any) -> Any:
        # PostgreSQL text cannot hold NUL; refuse it on every backend so both store the same data.
        if contains_nul(value):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return value

    @field_validator("*")
    @classmethod
    def _refuse_big_integers(cls, value: Any) -> Any:
        # The one rule for JSON numbers (roost.core.json): FastAPI parses bodies with the
        # standard library, whose integers have no bound; orjson would fail to store them.
        try:
            check_integers(value)
        except IntegerOutOfRange as exc:
            # problems.py puts ``path`` after the field's name, so the answer names the number.
            raise PydanticCustomError(
                OUT_OF_RANGE_CODE, "{message}", {"message": exc.message, "path": exc.field}
            ) from None
        return value


class Out(BaseModel):
    """A response body."""

    model_config = ConfigDict(extra="ignore")


class Page(Out, Generic[T]):
    """One page of a collection."""

    items: list[T]
    total: int = Field(description="Number of items matching the filters, across all pages")
    limit: int
    offset: int


class Problem(Out):
    """An RFC 9457 problem document."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Per-field or per-item faults"
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` declaring problem+json answers with these statuses."""
    return {status: {"model": Problem} for status in statuses}
