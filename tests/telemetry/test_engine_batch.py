"""Cutting a batch into parts that fit the bus's maximum payload, losing and reordering nothing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.telemetry.engine.batch import (
    KIND_BY_TYPE,
    BatchBuilder,
    DecodedBatch,
    Event,
    decode,
    split,
)

VALUES: dict[str, Any] = {
    "double": st.floats(allow_nan=False, width=64),
    "long": st.integers(-(2**63), 2**63 - 1),
    "boolean": st.booleans(),
    "string": st.text(max_size=300),
    "json": st.dictionaries(st.text(max_size=5), st.integers(-1000, 1000), max_size=4).map(
        lambda d: orjson.dumps(d).decode()
    ),
}


@st.composite
def batches(draw: st.DrawFn) -> DecodedBatch:
    builder = BatchBuilder()
    for n in range(draw(st.integers(0, 120))):
        kind = draw(st.sampled_from(sorted(VALUES)))
        builder.add_point(n % 7 + 1, 10 * n, 10 * n + 1, KIND_BY_TYPE[kind], draw(VALUES[kind]))
    for n in range(draw(st.integers(0, 40))):
        body = orjson.dumps({"n": n, "text": draw(st.text(max_size=400))}).decode()
        builder.add_event(Event(1 + n % 3, n, n + 1, "tap", body))
    builder.msg_ids = [(1, f"m{n}") for n in range(draw(st.integers(0, 5)))]
    return decode(builder.encode())


def items(batch: DecodedBatch) -> list[Any]:
    points = [
        (int(batch.series[i]), int(batch.ts[i]), int(batch.kinds[i]), batch.value(i))
        for i in range(batch.points)
    ]
    return points + [(e.device_pk, e.ts, e.type, e.body) for e in batch.events]


@settings(max_examples=150, deadline=None)
@given(batch=batches(), limit=st.integers(2048, 20_000))
def test_parts_fit_and_hold_every_item_once_in_order(batch: DecodedBatch, limit: int) -> None:
    parts = split(batch, limit)
    whole = items(batch)
    rebuilt: list[Any] = []
    for position, part in parts:
        blob = part.encode()
        assert len(blob) <= limit or len(parts) == 1
        assert items(part) == whole[position : position + len(part)]
        assert items(decode(blob)) == items(part)
        rebuilt += items(part)
    assert rebuilt == whole
    assert [m for _, part in parts for m in part.msg_ids] == batch.msg_ids
    if len(batch.encode()) <= limit:
        assert parts == [(0, batch)]


def test_a_large_numeric_batch_is_cut_into_few_parts() -> None:
    builder = BatchBuilder()
    for n in range(100_000):
        builder.add_point(n % 50, n, n, 0, n / 10)
    batch = decode(builder.encode())
    parts = split(batch, 1024 * 1024)
    per_part = (int(1024 * 1024 * 0.9) - 24) // 33  # 90 % of 1 MiB, less the header
    assert [position for position, _ in parts] == [0, per_part, 2 * per_part, 3 * per_part]
    assert sum(len(part) for _, part in parts) == 100_000


def test_one_item_larger_than_the_limit_is_refused() -> None:
    builder = BatchBuilder()
    builder.add_point(1, 1, 1, KIND_BY_TYPE["string"], "x" * 5000)
    builder.add_point(1, 2, 2, KIND_BY_TYPE["double"], 1.0)
    with pytest.raises(ValueError, match="exceeds 4096 bytes"):
        split(decode(builder.encode()), 4096)
