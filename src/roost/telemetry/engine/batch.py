"""The ingest batch: points and events of one commit, packed into one blob.

A batch is what the writer commits as one row of the ingest log, what travels over NATS JetStream
in scale mode, and what consumer groups read back by offset. Packing a few thousand points into one
blob and inserting it as one row is what lets ingest run well past the per-row ceiling of the
database (DESIGN.md §4: ~870k rows/s for SQLite executemany; a packed batch of 5,000 points is one
row). Compaction later turns log rows into per-series blocks (``telemetry/engine/blocks.py``).

Layout (little-endian)::

    magic  b"RTB1"
    u32    points, events, len(texts), len(events json), len(msg ids json)
    i64[n] series   sensor pk of each point
    i64[n] ts       device time, ns since the epoch
    i64[n] recv     receive time, ns since the epoch
    i64[n] slot     the value: float64 bits (double), int64 (long), 0/1 (boolean), or the index
                    into ``texts`` (string, json)
    u8[n]  kind     KIND_* of each point
    texts  JSON array of strings (string values, and json values as JSON text)
    events JSON array of [device_pk, ts, recv, type, body] (body: the event as JSON text)
    msgids JSON array of [device_pk, msg_id] (resend de-duplication)

The item at position ``i`` of a batch whose log row starts at offset ``o`` has offset ``o + i``;
points come first, then events.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

KIND_DOUBLE = 0
KIND_LONG = 1
KIND_BOOLEAN = 2
KIND_STRING = 3
KIND_JSON = 4
KIND_BY_TYPE = {
    "double": KIND_DOUBLE,
    "long": KIND_LONG,
    "boolean": KIND_BOOLEAN,
    "string": KIND_STRING,
    "json": KIND_JSON,
}
TYPE_BY_KIND = {kind: name for name, kind in KIND_BY_TYPE.items()}

MAGIC = b"RTB1"
_HEADER = struct.Struct("<4sIIIII")

I64Array = npt.NDArray[np.int64]
U8Array = npt.NDArray[np.uint8]
F64Array = npt.NDArray[np.float64]


class BatchFormatError(ValueError):
    """A blob is not a batch of this format."""


@dataclass(slots=True)
class Event:
    """One event document of a device."""

    device_pk: int
    ts: int
    recv: int
    type: str
    body: str  # the whole event as JSON text


class BatchBuilder:
    """Collects the points and events of one commit in typed arrays (cheap to append to).

    The hot path appends one point with :meth:`add_point`; :meth:`mark` and :meth:`rollback` undo
    the points of a message that turned out to be bad half-way, so a message is taken whole or
    not at all. The point columns are ``array.array``s, not lists: a point costs 33 bytes and
    leaves no Python object behind (a list held an int and a float object per point, ~100 bytes,
    and a million of them scattered over the allocator's arenas kept those arenas alive after the
    batch was gone). A value that is not a double is kept aside in :attr:`others`.
    """

    __slots__ = (
        "all_double",
        "events",
        "kinds",
        "msg_ids",
        "others",
        "recv",
        "series",
        "ts",
        "values",
    )

    def __init__(self) -> None:
        self.series = array("q")
        self.ts = array("q")
        self.recv = array("q")
        self.kinds = array("B")
        # Doubles; 0.0 in the place of any other kind, whose value is in ``others``.
        self.values = array("d")
        self.others: list[tuple[int, Any]] = []  # (position, value) of non-double points
        self.events: list[Event] = []
        self.msg_ids: list[tuple[int, str]] = []
        self.all_double = True

    def __len__(self) -> int:
        return len(self.series) + len(self.events)

    @property
    def points(self) -> int:
        """How many points the batch holds."""
        return len(self.series)

    def add_point(self, series: int, ts: int, recv: int, kind: int, value: Any) -> None:
        """Append one point: a float for double, int for long, bool, str for string and json."""
        if kind:
            self.others.append((len(self.series), value))
            self.all_double = False
            value = 0.0
        self.series.append(series)
        self.ts.append(ts)
        self.recv.append(recv)
        self.kinds.append(kind)
        self.values.append(value)

    def add_event(self, event: Event) -> None:
        """Append one event."""
        self.events.append(event)

    def mark(self) -> tuple[int, int, int]:
        """A position to roll back to."""
        return len(self.series), len(self.events), len(self.msg_ids)

    def rollback(self, mark: tuple[int, int, int]) -> None:
        """Forget everything appended since ``mark``."""
        points, events, msg_ids = mark
        for column in (self.series, self.ts, self.recv, self.kinds, self.values):
            del column[points:]
        others = self.others
        while others and others[-1][0] >= points:
            others.pop()
        del self.events[events:]
        del self.msg_ids[msg_ids:]

    def extend(self, other: BatchBuilder) -> None:
        """Append everything of another builder."""
        base = len(self.series)
        self.series += other.series
        self.ts += other.ts
        self.recv += other.recv
        self.kinds += other.kinds
        self.values += other.values
        self.others += [(base + position, value) for position, value in other.others]
        self.events += other.events
        self.msg_ids += other.msg_ids
        self.all_double = self.all_double and other.all_double

    def encode(self) -> bytes:
        """Pack the batch into one blob."""
        n = len(self.series)
        texts: list[str] = []
        slots = np.frombuffer(self.values, dtype=np.float64).view(np.int64)
        if self.all_double:
            kinds = np.zeros(n, dtype=np.uint8)
        else:
            kinds = np.frombuffer(self.kinds, dtype=np.uint8)
            slots = slots.copy()
            for position, value in self.others:
                kind = self.kinds[position]
                if kind in (KIND_LONG, KIND_BOOLEAN):
                    slots[position] = int(value)
                else:
                    slots[position] = len(texts)
                    texts.append(value)
        return _pack(
            np.frombuffer(self.series, dtype=np.int64),
            np.frombuffer(self.ts, dtype=np.int64),
            np.frombuffer(self.recv, dtype=np.int64),
            slots,
            kinds,
            texts,
            [[e.device_pk, e.ts, e.recv, e.type, e.body] for e in self.events],
            [list(pair) for pair in self.msg_ids],
        )


def _pack(
    series: I64Array,
    ts: I64Array,
    recv: I64Array,
    slots: I64Array,
    kinds: U8Array,
    texts: list[str],
    events: list[list[Any]],
    msg_ids: list[list[Any]],
) -> bytes:
    texts_json = orjson.dumps(texts) if texts else b""
    events_json = orjson.dumps(events) if events else b""
    ids_json = orjson.dumps(msg_ids) if msg_ids else b""
    header = _HEADER.pack(
        MAGIC, len(series), len(events), len(texts_json), len(events_json), len(ids_json)
    )
    return b"".join(
        (
            header,
            series.astype("<i8", copy=False).tobytes(),
            ts.astype("<i8", copy=False).tobytes(),
            recv.astype("<i8", copy=False).tobytes(),
            slots.astype("<i8", copy=False).tobytes(),
            kinds.tobytes(),
            texts_json,
            events_json,
            ids_json,
        )
    )


@dataclass(slots=True)
class DecodedBatch:
    """A batch as numpy columns (views on the blob where possible) and Python lists."""

    series: I64Array
    ts: I64Array
    recv: I64Array
    slots: I64Array
    kinds: U8Array
    texts: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    msg_ids: list[tuple[int, str]] = field(default_factory=list)
    # The blob this batch was decoded from, so that storing it again costs no re-packing.
    raw: bytes | None = None

    @property
    def points(self) -> int:
        """How many points the batch holds."""
        return len(self.series)

    def __len__(self) -> int:
        return len(self.series) + len(self.events)

    def value(self, i: int) -> Any:
        """The value of point ``i`` as Python sees it (float, int, bool, str, or parsed JSON)."""
        return slot_value(int(self.kinds[i]), int(self.slots[i]), self.texts)

    def numeric(self) -> F64Array:
        """Every point's value as float64 (NaN for string and json points)."""
        return numeric_values(self.kinds, self.slots)

    def encode(self) -> bytes:
        """The packed blob: the original one when decoded from a blob, else packed anew."""
        if self.raw is not None:
            return self.raw
        return _pack(
            self.series,
            self.ts,
            self.recv,
            self.slots,
            self.kinds,
            self.texts,
            [[e.device_pk, e.ts, e.recv, e.type, e.body] for e in self.events],
            [list(pair) for pair in self.msg_ids],
        )


def slot_value(kind: int, slot: int, texts: list[str]) -> Any:
    """Turn a stored slot back into the value it holds."""
    if kind == KIND_DOUBLE:
        return float(np.int64(slot).view(np.float64))
    if kind == KIND_LONG:
        return int(slot)
    if kind == KIND_BOOLEAN:
        return bool(slot)
    if kind == KIND_STRING:
        return texts[slot]
    return orjson.loads(texts[slot])


def numeric_values(kinds: U8Array, slots: I64Array) -> F64Array:
    """Slots as float64: doubles as they are, longs and booleans converted, text as NaN."""
    if not kinds.any():
        return slots.view(np.float64)
    out = slots.view(np.float64).copy()
    integral = (kinds == KIND_LONG) | (kinds == KIND_BOOLEAN)
    out[integral] = slots[integral].astype(np.float64)
    out[kinds >= KIND_STRING] = np.nan
    return out


def decode(blob: bytes | memoryview) -> DecodedBatch:
    """Unpack a blob made by :meth:`BatchBuilder.encode`."""
    view = memoryview(blob)
    if len(view) < _HEADER.size:
        raise BatchFormatError("too short for a batch header")
    magic, n, n_events, texts_len, events_len, ids_len = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise BatchFormatError(f"not a batch: magic {bytes(magic)!r}")
    expected = _HEADER.size + 33 * n + texts_len + events_len + ids_len
    if len(view) != expected:
        raise BatchFormatError(f"batch of {len(view)} bytes, expected {expected}")
    offset = _HEADER.size

    def column(dtype: str, count: int, width: int) -> Any:
        nonlocal offset
        array = np.frombuffer(view, dtype=dtype, count=count, offset=offset)
        offset += count * width
        return array

    series = column("<i8", n, 8)
    ts = column("<i8", n, 8)
    recv = column("<i8", n, 8)
    slots = column("<i8", n, 8)
    kinds = column("u1", n, 1)

    def part(length: int) -> Any:
        nonlocal offset
        chunk = view[offset : offset + length]
        offset += length
        return orjson.loads(chunk) if length else []

    texts = part(texts_len)
    events = [Event(*item) for item in part(events_len)]
    msg_ids = [(int(d), str(m)) for d, m in part(ids_len)]
    if len(events) != n_events:
        raise BatchFormatError("event count does not match the header")
    # The columns are views on ``blob``; a bytes blob is kept as it is (no copy).
    raw = blob if isinstance(blob, bytes) else bytes(view)
    return DecodedBatch(series, ts, recv, slots, kinds, texts, events, msg_ids, raw=raw)


def concat(batches: list[DecodedBatch]) -> DecodedBatch:
    """One batch holding every point and event of ``batches``, in order."""
    if len(batches) == 1:
        return batches[0]
    texts: list[str] = []
    slot_parts = []
    for batch in batches:
        slots = batch.slots
        if batch.texts:
            slots = slots.copy()
            textual = batch.kinds >= KIND_STRING
            slots[textual] += len(texts)
            texts += batch.texts
        slot_parts.append(slots)
    return DecodedBatch(
        series=np.concatenate([b.series for b in batches]),
        ts=np.concatenate([b.ts for b in batches]),
        recv=np.concatenate([b.recv for b in batches]),
        slots=np.concatenate(slot_parts) if slot_parts else np.empty(0, np.int64),
        kinds=np.concatenate([b.kinds for b in batches]),
        texts=texts,
        events=[e for b in batches for e in b.events],
        msg_ids=[m for b in batches for m in b.msg_ids],
    )


# Bytes a point takes in a blob besides its text: four int64 columns and a kind byte.
_POINT_BYTES = 33
# Bytes an event takes besides its type and body (the JSON array around them, numbers).
_EVENT_BYTES = 80


def split(batch: DecodedBatch, max_bytes: int) -> list[tuple[int, DecodedBatch]]:
    """Cut a batch into parts whose blobs hold at most ``max_bytes`` each.

    Answers ``(position of the part's first item in batch, part)``; a part holds points only or
    events only, so each part's items keep consecutive positions (points come first, then
    events). The message ids go with the last part. A batch that fits is answered whole. Raises
    ValueError when one item alone is larger than ``max_bytes``.
    """
    if len(batch.encode()) <= max_bytes:
        return [(0, batch)]
    budget = max(1, int(max_bytes * 0.9) - _HEADER.size)
    ranges: list[tuple[bool, int, int]] = []  # (events?, start, end)
    if batch.points:
        sizes = np.full(batch.points, _POINT_BYTES, dtype=np.int64)
        textual = np.flatnonzero(batch.kinds >= KIND_STRING)
        for i in textual:
            sizes[i] += len(batch.texts[int(batch.slots[i])].encode()) + 8
        ranges += [(False, a, b) for a, b in _cut(np.cumsum(sizes), budget)]
    if batch.events:
        sizes = np.array(
            [_EVENT_BYTES + len(e.type) + len(e.body.encode()) for e in batch.events],
            dtype=np.int64,
        )
        ranges += [(True, a, b) for a, b in _cut(np.cumsum(sizes), budget)]
    parts: list[tuple[int, DecodedBatch]] = []
    for n, (events, start, end) in enumerate(ranges):
        msg_ids = batch.msg_ids if n == len(ranges) - 1 else []
        part = _events_part(batch, start, end) if events else _points_part(batch, start, end)
        part.msg_ids = list(msg_ids)
        parts += _fit(start + (batch.points if events else 0), part, max_bytes)
    return parts


def _cut(cumulative: npt.NDArray[np.int64], budget: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) ranges whose sizes (given as a running total) fit the budget."""
    out: list[tuple[int, int]] = []
    start, base, total = 0, 0, len(cumulative)
    while start < total:
        end = int(np.searchsorted(cumulative, base + budget, side="right"))
        end = max(end, start + 1)  # an item larger than the budget goes alone (checked later)
        out.append((start, end))
        base = int(cumulative[end - 1])
        start = end
    return out


def _fit(position: int, part: DecodedBatch, max_bytes: int) -> list[tuple[int, DecodedBatch]]:
    """The part, halved again while its blob is still too large (estimates are estimates)."""
    if len(part.encode()) <= max_bytes:
        return [(position, part)]
    if len(part) <= 1:
        raise ValueError(f"one item of {len(part.encode())} bytes exceeds {max_bytes} bytes")
    half = len(part) // 2
    if part.points:
        first, second = _points_part(part, 0, half), _points_part(part, half, part.points)
    else:
        first, second = _events_part(part, 0, half), _events_part(part, half, len(part.events))
    second.msg_ids = part.msg_ids
    return _fit(position, first, max_bytes) + _fit(position + half, second, max_bytes)


def _points_part(batch: DecodedBatch, start: int, end: int) -> DecodedBatch:
    slots = batch.slots[start:end]
    kinds = batch.kinds[start:end]
    texts: list[str] = []
    textual = np.flatnonzero(kinds >= KIND_STRING)
    if len(textual):
        slots = slots.copy()
        texts = [batch.texts[int(slots[i])] for i in textual]
        slots[textual] = np.arange(len(textual), dtype=np.int64)
    return DecodedBatch(
        series=batch.series[start:end],
        ts=batch.ts[start:end],
        recv=batch.recv[start:end],
        slots=slots,
        kinds=kinds,
        texts=texts,
    )


def _events_part(batch: DecodedBatch, start: int, end: int) -> DecodedBatch:
    empty = np.empty(0, dtype=np.int64)
    return DecodedBatch(
        series=empty,
        ts=empty,
        recv=empty,
        slots=empty,
        kinds=np.empty(0, dtype=np.uint8),
        events=batch.events[start:end],
    )
