"""Reading an upload (CSV or JSON) into the rows of a reference table, every row checked.

Nothing is stored from a file with a bad row: :func:`parse_csv` and :func:`parse_rows` check
every row and raise one :class:`~roost.errors.ValidationFailed` listing each fault (up to
:data:`MAX_REPORTED_FAULTS`) with where it is: ``line`` (CSV: the file's line, 1 = the header),
``row`` (1 = the first data row, or the first item of the JSON ``rows``), and where known ``field``
(the column) and ``key`` (the row's key).

Values: a JSON upload's values are kept as sent (strings, numbers, booleans, null). A CSV cell
is text, except that an empty cell is null, ``true``/``false`` are booleans and a cell that is a
JSON number (``12``, ``-3.5``, ``1e3``; not ``007``, ``+1``, ``.5`` or ``1,5``) is that number.
Keys are always text: the key column's value is the key as written (spaces around it removed).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from roost.core.json import INT_MAX, INT_MIN, IntegerOutOfRange, check_integers
from roost.core.json import loads as load_json
from roost.errors import InvalidInput, PayloadTooLarge, ValidationFailed

# A table is data a rule joins on in memory (every process caches whole tables): 50,000 rows of a
# product catalog are a few tens of MB cached; bigger data belongs in a database of its own.
MAX_ROWS = 50_000
# Wide enough for a product catalog or a store's facts; past this it is not lookup data.
MAX_COLUMNS = 50
# One upload, as sent: 4 MiB is the server's default body limit (ROOST_MAX_BODY_BYTES), and holds
# 50,000 rows of about 80 bytes.
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
# Keys name rows in URLs and rules; column names appear in rules.
MAX_KEY_CHARS = 200
MAX_COLUMN_CHARS = 64
# A value is a fact (a name, a price, an address), not a document.
MAX_VALUE_CHARS = 2000
# The answer lists this many faults at most: enough to fix a file, small enough to read.
MAX_REPORTED_FAULTS = 100

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True, slots=True)
class ParsedTable:
    """A checked upload: the key column, every column (upload order) and the rows by key."""

    key_column: str
    columns: tuple[str, ...]
    rows: dict[str, dict[str, Any]]  # key → column → value, in upload order


class UnsupportedFormat(InvalidInput):
    """The upload is neither CSV nor JSON (HTTP 415)."""

    status = 415
    title = "Unsupported media type"


class _Faults:
    """Faults found so far; stops the reading once :data:`MAX_REPORTED_FAULTS` are found."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.rows: set[int] = set()

    def add(self, message: str, *, row: int, line: int | None = None, **where: Any) -> None:
        entry: dict[str, Any] = {"row": row}
        if line is not None:
            entry["line"] = line
        entry.update(where)
        entry["message"] = message
        self.items.append(entry)
        self.rows.add(row)

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_REPORTED_FAULTS

    def raise_if_any(self, total_rows: int) -> None:
        if not self.items:
            return
        first = self.items[0]
        where = f"line {first['line']}" if "line" in first else f"row {first['row']}"
        raise ValidationFailed(
            f"{len(self.rows)} of {total_rows} row(s) are invalid (first: {where}), "
            "so nothing was replaced",
            self.items[:MAX_REPORTED_FAULTS],
        )


def _refuse(message: str, *, line: int | None = None, row: int = 0) -> ValidationFailed:
    """A fault of the file as a whole (its header, its encoding), as a one-entry refusal."""
    faults = _Faults()
    faults.add(message, row=row, line=line)
    return ValidationFailed(f"{message}, so nothing was replaced", faults.items)


def check_column(name: str) -> str | None:
    """Why ``name`` cannot be a column name, or None."""
    if not name:
        return "a column name must not be empty"
    if len(name) > MAX_COLUMN_CHARS:
        return f"column name {name[:20]!r}… is longer than {MAX_COLUMN_CHARS} characters"
    if any(not ch.isprintable() for ch in name):
        return f"column name {name!r} holds a control character"
    return None


def _check_key(key: str) -> str | None:
    if not key:
        return "the key is empty"
    if len(key) > MAX_KEY_CHARS:
        return f"the key is longer than {MAX_KEY_CHARS} characters"
    if any(not ch.isprintable() for ch in key):
        return "the key holds a control character"
    return None


def _check_text(value: str) -> str | None:
    if len(value) > MAX_VALUE_CHARS:
        return f"the value is longer than {MAX_VALUE_CHARS} characters"
    if "\x00" in value:
        return "the value holds a NUL character"
    return None


def cell_value(text: str) -> Any:
    """A CSV cell's value by the module's rule: null, boolean, JSON number or the text."""
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    if _JSON_NUMBER.fullmatch(text):
        if "." not in text and "e" not in text and "E" not in text:
            number = int(text)
            # The one rule for JSON integers (roost.core.json): past 64 bits it stays text.
            return number if INT_MIN <= number <= INT_MAX else text
        value = float(text)
        return value if math.isfinite(value) else text
    return text


def decode(data: bytes) -> str:
    """The upload's text: UTF-8 with or without a byte-order mark; a bad byte names its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _refuse(
            f"the file is not UTF-8 text (byte {exc.start} is invalid)", line=line
        ) from None


def check_size(data: bytes) -> None:
    """Refuse an upload over :data:`MAX_UPLOAD_BYTES` (413)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(
            f"the upload is {len(data)} bytes; a reference table takes at most "
            f"{MAX_UPLOAD_BYTES} bytes per upload"
        )


def _header(cells: Sequence[str], key: str | None) -> tuple[tuple[str, ...], str]:
    columns = tuple(cell.strip() for cell in cells)
    if len(columns) > MAX_COLUMNS:
        raise _refuse(f"the header has {len(columns)} columns; at most {MAX_COLUMNS}", line=1)
    seen: set[str] = set()
    for column in columns:
        if why := check_column(column):
            raise _refuse(f"header: {why}", line=1)
        if column in seen:
            raise _refuse(f"header: column {column!r} appears twice", line=1)
        seen.add(column)
    key_column = columns[0] if key is None else key
    if key_column not in seen:
        raise _refuse(
            f"the key column {key_column!r} is not in the header ({', '.join(columns)})", line=1
        )
    return columns, key_column


def parse_csv(text: str, key: str | None = None) -> ParsedTable:
    """A CSV file with a header row; ``key`` names the key column (default: the first one)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise _refuse("the CSV file is empty: it needs a header row and rows", line=1)
        columns, key_column = _header(header, key)
        key_index = columns.index(key_column)
        faults = _Faults()
        rows: dict[str, dict[str, Any]] = {}
        first_line: dict[str, int] = {}
        number = 0
        line = reader.line_num
        for cells in reader:
            start, line = line + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # blank lines are not rows
            number += 1
            if faults.full:
                continue
            if number > MAX_ROWS:
                faults.add(f"a table holds at most {MAX_ROWS} rows", row=number, line=start)
                break
            if len(cells) != len(columns):
                faults.add(
                    f"the row has {len(cells)} cells but the header has {len(columns)}",
                    row=number,
                    line=start,
                )
                continue
            row_key = cells[key_index].strip()
            if why := _check_key(row_key):
                faults.add(why, row=number, line=start, field=key_column)
                continue
            if row_key in first_line:
                faults.add(
                    f"duplicate key {row_key!r} (first on line {first_line[row_key]})",
                    row=number,
                    line=start,
                    field=key_column,
                    key=row_key,
                )
                continue
            first_line[row_key] = start
            values: dict[str, Any] = {}
            for column, cell in zip(columns, cells, strict=True):
                if column == key_column:
                    values[column] = row_key
                    continue
                if why := _check_text(cell):
                    faults.add(why, row=number, line=start, field=column, key=row_key)
                values[column] = cell_value(cell)
            rows[row_key] = values
    except csv.Error as exc:
        raise _refuse(f"the file is not valid CSV: {exc}", line=reader.line_num) from None
    if number == 0:
        raise _refuse("the CSV file has a header but no rows", line=1)
    faults.raise_if_any(number)
    return ParsedTable(key_column, columns, rows)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def parse_json(text: str) -> ParsedTable:
    """A JSON document ``{"key": column, "rows": [{column: value, ...}, ...]}``."""
    try:
        document = load_json(text)
    except orjson.JSONDecodeError as exc:
        raise _refuse(f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _refuse(f'the body must be an object {{"key", "rows"}}, not {_kind(document)}')
    if unknown := sorted(set(document) - {"key", "rows"}):
        raise _refuse(f"unknown field(s) {', '.join(unknown)}: the body has key and rows")
    key_column, items = document.get("key"), document.get("rows")
    if not isinstance(key_column, str):
        raise _refuse(f"key must be the key column's name (a string), not {_kind(key_column)}")
    if not isinstance(items, list) or not items:
        raise _refuse("rows must be a non-empty array of row objects")
    return parse_rows(key_column, items)


def parse_rows(key_column: str, items: Sequence[Any]) -> ParsedTable:
    """Row objects (column → string, number, boolean or null) keyed by ``key_column``."""
    if why := check_column(key_column):
        raise _refuse(f"key: {why}")
    if not items:
        raise _refuse("a table needs at least one row")
    faults = _Faults()
    columns: dict[str, None] = {key_column: None}
    rows: dict[str, dict[str, Any]] = {}
    first_row: dict[str, int] = {}
    for number, item in enumerate(items, start=1):
        if faults.full:
            break
        if number > MAX_ROWS:
            faults.add(f"a table holds at most {MAX_ROWS} rows", row=number)
            break
        if not isinstance(item, dict):
            faults.add(f"a row must be an object, not {_kind(item)}", row=number)
            continue
        row_key = _json_key(item.get(key_column))
        if row_key is None:
            faults.add(
                f"the key column {key_column!r} must be a string or an integer, "
                f"not {_kind(item.get(key_column)) if key_column in item else 'missing'}",
                row=number,
                field=key_column,
            )
            continue
        if why := _check_key(row_key):
            faults.add(why, row=number, field=key_column)
            continue
        if row_key in first_row:
            faults.add(
                f"duplicate key {row_key!r} (first in row {first_row[row_key]})",
                row=number,
                field=key_column,
                key=row_key,
            )
            continue
        first_row[row_key] = number
        for column, value in _row_faults(item, key_column):
            faults.add(value, row=number, field=column, key=row_key)
        for column in item:
            columns.setdefault(column, None)
        rows[row_key] = {**item, key_column: row_key}
    if len(columns) > MAX_COLUMNS and not faults.items:
        faults.add(f"the rows name {len(columns)} columns; at most {MAX_COLUMNS}", row=1)
    faults.raise_if_any(len(items))
    return ParsedTable(key_column, tuple(columns), rows)


def _json_key(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _row_faults(item: Mapping[str, Any], key_column: str) -> Iterable[tuple[str, str]]:
    """(column, why) for each column name or value of a JSON row that breaks a rule."""
    for column, value in item.items():
        if why := check_column(column):
            yield column[:MAX_COLUMN_CHARS], why
        elif column == key_column:
            continue
        elif isinstance(value, str):
            if why := _check_text(value):
                yield column, why
        elif isinstance(value, dict | list):
            yield column, f"a value is a string, number, boolean or null, not {_kind(value)}"
        elif isinstance(value, float) and not math.isfinite(value):
            yield column, "a number must be finite"
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                check_integers(value)
            except IntegerOutOfRange as exc:
                yield column, exc.message


def parse(data: bytes, fmt: str, key: str | None) -> ParsedTable:
    """An upload in ``fmt`` (``csv`` or ``json``); ``key`` is the CSV key column."""
    check_size(data)
    if fmt == "csv":
        return parse_csv(decode(data), key)
    if fmt == "json":
        if key is not None:
            raise InvalidInput("?key= is for CSV uploads: a JSON body names its key column")
        return parse_json(decode(data))
    raise UnsupportedFormat(f"cannot read {fmt}: send text/csv or application/json")
