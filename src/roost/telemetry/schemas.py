"""Request and response bodies of the telemetry routes: ingest acks, points, events, consumer
groups."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    Field,
)

from roost.core.ids import SLUG_PATTERN
from roost.http.schemas import Body, Out, documented


class IngestAck(Out):
    """What a telemetry or event POST stored (durably, before this answer)."""

    accepted: int = Field(description="Points stored")
    events: int = Field(description="Events stored")
    duplicate: bool | None = Field(default=None, description="A resend of a stored message id")
    flagged_future: int | None = Field(
        default=None, description="Points timestamped more than 5 minutes ahead of the server"
    )


class PointOut(Out):
    ts: str = Field(description="RFC 3339 UTC")
    value: Any = None


class SeriesOut(Out):
    device_id: str
    sensor: str
    type: str
    unit: str
    interval_s: float | None = None
    items: list[dict[str, Any]] = Field(
        description="[{ts, value}] raw, or [{ts, avg, min, …}] with agg and interval"
    )


class LatestItem(Out):
    sensor: str
    type: str
    unit: str
    ts: str
    value: Any = None
    received_at: str


class LatestOut(Out):
    device_id: str
    items: list[LatestItem]


class FleetLatestOut(Out):
    items: list[dict[str, Any]] = Field(description="[{device_id, sensors: {sensor: {ts, value}}}]")
    total: int


class EventOut(Out):
    ts: str
    received_at: str
    event: str
    offset: int
    body: dict[str, Any]


class EventsOut(Out):
    device_id: str
    items: list[EventOut]


class ConsumerGroupIn(Body):
    id: str = Field(
        min_length=1, max_length=128, json_schema_extra=documented(pattern=SLUG_PATTERN)
    )
    start: Literal["earliest", "latest"] = "earliest"


class ConsumerGroupOut(Out):
    id: str
    committed_offset: int
    log_first_offset: int
    log_next_offset: int
    created_at: datetime
    updated_at: datetime


class OffsetIn(Body):
    offset: int = Field(description="Every item at or below this offset is consumed")


class StreamPullOut(Out):
    group: str
    items: list[dict[str, Any]] = Field(
        description="[{offset, type: telemetry|event, device_id, sensor|event, ts, value|body}]"
    )
    next_offset: int = Field(description="Pull again with after_offset=this; commit it when done")
    committed_offset: int
    truncated: bool = Field(description="The log no longer holds some items after the offset")
    log_next_offset: int
