"""Request and response bodies of the REST API (they are the OpenAPI schemas)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    field_validator,
)
from pydantic_core import PydanticCustomError

from roost.core.json import OUT_OF_RANGE_CODE, IntegerOutOfRange, check_integers

T = TypeVar("T")

# An RFC 3339 date-time, what OpenAPI's ``format: date-time`` means. Pydantic alone also takes a
# number as a Unix time (0, or "0.5" in a query), which the document does not offer.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError(
            "must be an RFC 3339 time with a timezone offset (Z or ±hh:mm), "
            "like 2026-11-22T08:30:00Z"
        )
    # Parsed here, so that strict models (Body) take it as the datetime it is.
    return datetime.fromisoformat(value.upper())


def _whole(value: Any) -> Any:
    # JSON has one kind of number: 5.0 is the integer 5 (JSON Schema agrees); 5.5 stays refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Rfc3339Time = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]
WholeNumber = Annotated[StrictInt, BeforeValidator(_whole)]


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
    """A request body: unknown fields are refused rather than silently ignored.

    Strict: a field takes the JSON type the document gives it, not a look-alike (``0`` for a
    boolean, ``"5"`` for an integer), which lax validation would convert.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

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


def documented(**keywords: Any) -> Callable[[dict[str, Any]], None]:
    """``json_schema_extra`` stating in the document a rule the service checks itself.

    The keywords (``pattern``, ``minimum`` …) go on the field's non-null form; the service keeps
    answering a breach with its own words (422), which pydantic's constraints would replace.
    """

    def extra(schema: dict[str, Any]) -> None:
        forms = [form for form in schema.get("anyOf", []) if form != {"type": "null"}]
        (forms[0] if len(forms) == 1 else schema).update(keywords)

    return extra


def never_null(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a field a change may leave out but, when given, never null.

    Change bodies type such fields ``X | None = None`` to tell "left out" apart; the document
    must not offer the null the service refuses (422).
    """
    forms = [form for form in schema.pop("anyOf", []) if form != {"type": "null"}]
    if len(forms) == 1:
        schema.update(forms[0])
    elif forms:
        schema["anyOf"] = forms
    if schema.get("default", ...) is None:
        del schema["default"]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` declaring problem+json answers with these statuses."""
    return {status: {"model": Problem} for status in statuses}
