"""Request and response bodies of the reference table routes (the OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from roost.alarms.reference.parse import MAX_COLUMN_CHARS, MAX_ROWS
from roost.http import schemas as s

Value = str | int | float | bool | None

CSV_EXAMPLE = (
    "product_id,name,brand,category,price\n"
    "P-1001,Espresso beans 1 kg,Roastery,coffee,18.5\n"
    "P-1002,Oat milk 1 l,Oatly,dairy-free,2.2\n"
)
JSON_EXAMPLE: dict[str, Any] = {
    "key": "product_id",
    "rows": [
        {
            "product_id": "P-1001",
            "name": "Espresso beans 1 kg",
            "brand": "Roastery",
            "category": "coffee",
            "price": 18.5,
        },
        {
            "product_id": "P-1002",
            "name": "Oat milk 1 l",
            "brand": "Oatly",
            "category": "dairy-free",
            "price": 2.2,
        },
    ],
}


class ReferenceTableIn(s.Body):
    """A whole table as JSON: the key column and the rows (each an object column → value)."""

    model_config = ConfigDict(json_schema_extra={"examples": [JSON_EXAMPLE]})

    key: str = Field(
        min_length=1,
        max_length=MAX_COLUMN_CHARS,
        description="The column whose value names a row (a string or an integer in every row)",
    )
    rows: list[dict[str, Value]] = Field(
        min_length=1,
        max_length=MAX_ROWS,
        description="The rows, in the order listings show them; keys must be unique",
    )


class ReferenceTableOut(s.Out):
    """A reference table's metadata."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "products",
                    "key": "product_id",
                    "columns": ["product_id", "name", "brand", "category", "price"],
                    "version": 3,
                    "row_count": 2,
                    "updated_by": "alice",
                    "created_at": "2026-12-01T09:00:00Z",
                    "updated_at": "2026-12-07T09:00:00Z",
                }
            ]
        }
    )

    name: str
    key: str = Field(description="The key column")
    columns: list[str] = Field(description="Every column, key included, in upload order")
    version: int = Field(description="The current version: 1 for the first upload, +1 a replace")
    row_count: int = Field(description="Rows of the current version")
    updated_by: str = Field(description="Who uploaded the current version")
    created_at: datetime
    updated_at: datetime


class RowPage(s.Out):
    """One page of a version's rows (each an object column → value), in upload order."""

    items: list[dict[str, Any]]
    total: int = Field(description="Rows matching q, across all pages")
    limit: int
    offset: int


class ReferenceTableWithRows(ReferenceTableOut):
    """A table's metadata and one page of the rows of its current version (or ?version=)."""

    rows_version: int = Field(description="The version the rows are of")
    rows: RowPage


class ReferenceRowOut(s.Out):
    """One row of the current version."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "table": "products",
                    "version": 3,
                    "key": "P-1001",
                    "values": {
                        "product_id": "P-1001",
                        "name": "Espresso beans 1 kg",
                        "price": 18.5,
                    },
                }
            ]
        }
    )

    table: str
    version: int
    key: str
    values: dict[str, Any] = Field(description="Column → value, the key column included")


class ReferenceVersionOut(s.Out):
    """One version of a table: who uploaded it, when, and whether its rows are still kept."""

    version: int
    current: bool
    key: str
    columns: list[str]
    row_count: int
    rows_kept: bool = Field(description="False once older than the last kept versions")
    created_by: str
    created_at: datetime
