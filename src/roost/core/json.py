"""The one rule for numbers in the JSON a client sends, on every door: integers fit in 64 bits.

Roost keeps JSON with orjson, which represents integers from -2**63 (the least signed 64-bit
integer) to 2**64 - 1 (the greatest unsigned one) exactly, and refuses to write any other
(``Integer exceeds 64-bit range``). What it reads it treats worse: an integer literal beyond that
range silently becomes the nearest double (``18446744073709551616`` → ``1.8446744073709552e19``).
So every door applies one rule before anything is stored: **an integer outside**
:data:`INT_MIN` .. :data:`INT_MAX` **is refused** with :class:`IntegerOutOfRange`, which names the
field (HTTP 422 problem+json; MQTT 5 PUBACK 0x99 with the field in the reason string). Such a
number is refused rather than kept as text because text would change the value's JSON type
under the client's feet (a device that sent a number would read back a string), and a database
of doubles and 64-bit integers cannot compare or aggregate it; a client that needs bigger
integers sends them as strings, and then knows it did. A float literal of any finite magnitude
(``1e20``) is a float and is taken as one.

* :func:`loads` parses raw bytes (MQTT payloads, HTTP bodies read whole, WebSocket frames) with
  orjson and applies the rule. It costs a byte scan on the hot ingest path: an integer literal
  beyond 64 bits has at least 19 digits, and a 19-digit one starts with 9, so only a message
  holding such a digit run (rare: nanosecond timestamps have 19 digits but start with 1) is looked
  at further — its parsed values for a float of magnitude ≥ 2**63, and only when there is one, its
  text again with the standard library's exact integers, to tell ``18446744073709551616`` from
  ``1.8446744073709552e19``.
* :func:`check_integers` applies the rule to values already parsed (FastAPI parses request
  bodies with the standard library, whose integers have no bound).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import orjson

from roost.errors import ValidationFailed

#: The least and greatest integers orjson reads and writes exactly (signed and unsigned 64-bit).
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1
#: The ``code`` of the error entry, for clients and for doors that choose a status by it.
OUT_OF_RANGE_CODE: Final = "integer_out_of_range"

# Every digit to b"0": a digit run becomes a run of b"0" that bytes.find locates at C speed.
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
# 2**63 has 19 digits: no shorter integer literal is out of range.
_RUN_19: Final = b"0" * 19
_NINE: Final = ord("9")
_ZERO: Final = ord("0")
# Magnitude from which orjson's floats may stand for an out-of-range integer literal.
_FLOAT_SUSPECT: Final = float(2**63)


class IntegerOutOfRange(ValidationFailed):
    """A JSON integer outside :data:`INT_MIN` .. :data:`INT_MAX`; ``path`` says where it is."""

    def __init__(self, path: Sequence[str | int], value: int) -> None:
        self.path = tuple(path)
        self.value = value
        self.field = field_path(self.path)
        self.message = (
            f"the integer {_abbreviated(value)} is outside {INT_MIN}..{INT_MAX}; "
            "send larger numbers as strings"
        )
        where = self.field or "the document"
        super().__init__(
            f"{where}: {self.message}",
            [{"field": self.field or "body", "message": self.message, "code": OUT_OF_RANGE_CODE}],
            status=422,
        )


def field_path(path: Sequence[str | int]) -> str:
    """A path as the API names fields: object keys and array indexes joined by dots."""
    return ".".join(str(part) for part in path)


def _abbreviated(value: int) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text.lstrip('-'))} digits)"


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """``orjson.loads`` under the rule: raise :class:`IntegerOutOfRange` for a too-big integer.

    Malformed JSON raises ``orjson.JSONDecodeError`` as before, except that an integer too
    long even for a double (orjson: "number is infinity") is out of range, not malformed.
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raw = _as_bytes(data)
        zeros = raw.translate(_DIGITS_AS_ZERO)
        if _has_long_digit_run(raw, zeros, zeros.find(_RUN_19)):  # 309 digits: infinite
            _refuse_exact(data)
        raise
    # Inlined for the hot path: one C pass to translate, one to search (~1 ns a byte; find is
    # cheaper than ``in`` on short texts).
    raw = data if type(data) is bytes else _as_bytes(data)
    zeros = raw.translate(_DIGITS_AS_ZERO)
    at = zeros.find(_RUN_19)
    if at >= 0 and _has_long_digit_run(raw, zeros, at) and _holds_big_float(value):
        _refuse_exact(data)
    return value


def check_integers(value: Any, *prefix: str | int) -> None:
    """Raise :class:`IntegerOutOfRange` (its path after ``prefix``) for a too-big integer."""
    found = _first_out_of_range(value) if _holds_big_int(value) else None
    if found is not None:
        path, number = found
        raise IntegerOutOfRange((*prefix, *path), number)


def _as_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


def _has_long_digit_run(raw: bytes, zeros: bytes, at: int) -> bool:
    """True when ``raw`` holds 20 digits in a row, or 19 starting with 9 (see the module);
    ``zeros`` is ``raw`` with every digit made ``0``, ``at`` its first run of 19 (or -1)."""
    size = len(zeros)
    while at >= 0:  # each hit is a run's first digit: the search goes on after the run
        end = at + 19
        if raw[at] == _NINE or (end < size and zeros[end] == _ZERO):
            return True
        at = zeros.find(_RUN_19, end)
    return False


def _holds_big_float(value: Any) -> bool:
    """True when a parsed document holds a float of magnitude ≥ 2**63 (no recursion)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float and not -_FLOAT_SUSPECT < item < _FLOAT_SUSPECT:
            return True
    return False


def _holds_big_int(value: Any) -> bool:
    """True when parsed values hold an integer outside the range (no recursion, no paths)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX and not isinstance(item, bool):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _refuse_exact(data: bytes | bytearray | memoryview | str) -> None:
    """Parse again with exact integers; raise IntegerOutOfRange for the first too-big one."""
    try:
        exact = json.loads(bytes(data) if isinstance(data, memoryview) else data)
    except (ValueError, RecursionError):
        return  # not JSON the standard library reads either: the caller's error stands
    check_integers(exact)


def _first_out_of_range(value: Any) -> tuple[tuple[str | int, ...], int] | None:
    """The path and value of the first integer outside the range, in document order."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, int):
            if not isinstance(item, bool) and not INT_MIN <= item <= INT_MAX:
                return path, item
        elif isinstance(item, dict):
            stack.extend((v, (*path, k)) for k, v in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend((v, (*path, i)) for i, v in reversed(list(enumerate(item))))
    return None
