"""Reading an import file: CSV or JSON text into device objects, before any row is checked.

The JSON form is an array of device objects shaped like the API's create body, which may also
carry ``sensors`` and ``components``; the CSV form has one column per device field, ``group_ids``
separated by ``;`` and one ``tag.<key>`` column per tag. Both are read into the JSON shape; a
file that cannot be read as its format is refused whole (:class:`UnreadableFile`), with the
rows at fault. An export writes exactly these shapes (:mod:`roost.inventory.bulk.export`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from roost.core.json import loads as load_json
from roost.errors import InvalidInput

Format = Literal["csv", "json"]
FORMATS: tuple[Format, ...] = ("csv", "json")

CSV_COLUMNS = (
    "id",
    "name",
    "description",
    "model_id",
    "site_id",
    "firmware_id",
    "customer_id",
    "notes",
    "group_ids",
)
TAG_PREFIX = "tag."
GROUP_SEPARATOR = ";"


class UnreadableFile(InvalidInput):
    """The import file cannot be decoded as the format it claims to be (HTTP 400)."""

    status = 400
    title = "Bad request"


class UnsupportedFormat(InvalidInput):
    """The import file is in a format Roost does not read (HTTP 415)."""

    status = 415
    title = "Unsupported media type"


def decode(data: bytes) -> str:
    """The file's text: UTF-8, with or without a byte-order mark (as spreadsheets write it)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"the file is not UTF-8 text (byte {exc.start} is invalid)") from None


def _cell(value: str, *, keep_spaces: bool = False) -> str | None:
    text = value if keep_spaces else value.strip()
    return text if text else None


def parse_csv(text: str) -> list[dict[str, Any]]:
    """CSV rows → device objects (JSON shape); empty cells are null, ``tag.<key>`` are tags."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise UnreadableFile("the CSV file is empty: it needs a header row with an id column")
        columns = [cell.strip() for cell in header]
        _check_csv_header(columns)
        items: list[dict[str, Any]] = []
        faults: list[dict[str, Any]] = []
        for cells in reader:
            if not cells or not any(cell.strip() for cell in cells):
                continue  # blank lines are not rows
            number = len(items) + 1
            if len(cells) != len(columns):
                faults.append(
                    {
                        "row": number,
                        "message": f"row has {len(cells)} cells but the header has {len(columns)}",
                    }
                )
                items.append({})
                continue
            items.append(_csv_item(dict(zip(columns, cells, strict=True))))
    except csv.Error as exc:
        raise UnreadableFile(f"the file is not valid CSV (line {reader.line_num}): {exc}") from None
    if faults:
        raise UnreadableFile(
            f"{len(faults)} CSV row(s) do not match the header (first: row {faults[0]['row']})",
            errors=faults,
        )
    return items


def _check_csv_header(columns: list[str]) -> None:
    if "id" not in columns:
        raise UnreadableFile(
            "the CSV header has no id column; columns are "
            f"{','.join(CSV_COLUMNS)} and tag.<key> for each tag"
        )
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise UnreadableFile(f"the CSV header names column {column!r} twice")
        seen.add(column)
        if column.startswith(TAG_PREFIX):
            if not column[len(TAG_PREFIX) :]:
                raise UnreadableFile("a tag column needs a tag name after 'tag.'")
        elif column not in CSV_COLUMNS:
            hint = (
                " (sensors and components need the JSON format)"
                if column in {"sensors", "components"}
                else ""
            )
            raise UnreadableFile(
                f"unknown CSV column {column!r}{hint}; columns are "
                f"{','.join(CSV_COLUMNS)} and tag.<key> for each tag"
            )


def _csv_item(record: Mapping[str, str]) -> dict[str, Any]:
    item: dict[str, Any] = {}
    tags: dict[str, str | None] = {}
    for column, raw in record.items():
        if column.startswith(TAG_PREFIX):
            tags[column[len(TAG_PREFIX) :]] = _cell(raw)
        elif column == "group_ids":
            item["group_ids"] = [g.strip() for g in raw.split(GROUP_SEPARATOR) if g.strip()]
        else:
            item[column] = _cell(raw, keep_spaces=column in {"description", "notes"})
    if tags:
        item["tags"] = tags
    return item


def parse_json(text: str) -> list[dict[str, Any]]:
    """A JSON array of device objects (the API's create body, plus sensors and components)."""
    try:
        document = load_json(text)
    except orjson.JSONDecodeError as exc:
        raise UnreadableFile(f"the file is not valid JSON: {exc}") from None
    if not isinstance(document, list):
        raise UnreadableFile(
            f"the JSON file must be an array of device objects, not {_json_kind(document)}"
        )
    faults = [
        {"row": n, "message": f"expected a device object, got {_json_kind(item)}"}
        for n, item in enumerate(document, start=1)
        if not isinstance(item, dict)
    ]
    if faults:
        raise UnreadableFile(
            f"{len(faults)} item(s) of the JSON array are not objects "
            f"(first: row {faults[0]['row']})",
            errors=faults,
        )
    return document


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def parse(text: str, fmt: str) -> list[dict[str, Any]]:
    """Parse an import file in ``fmt`` (``csv`` or ``json``)."""
    if fmt == "csv":
        return parse_csv(text)
    if fmt == "json":
        return parse_json(text)
    raise UnsupportedFormat(f"cannot import {fmt!r}: use csv or json")
