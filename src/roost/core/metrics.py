"""Operational metrics kept as plain integers on the hot path and read by Prometheus at scrape time.

Counting a message must not take a lock (prometheus-client's ``Counter.inc`` takes one): the hot
paths (every MQTT PUBLISH, every commit) add to plain ints in dicts on the event loop's thread,
and :class:`OperationalCollector`, registered once with prometheus-client, turns them into
metric families when ``/metrics`` is scraped. Gauges are not bookkept at all: the room that owns
the value registers a *source* (a function of its live object, or a database query cached for
:data:`QUERY_CACHE_S`) that is read at scrape time.

Rooms register their own sources (``gauge_source``, ``table_gauge``); a source is held through a
weak reference to its owner, so a Roost that is gone (tests build many) leaves nothing behind,
and a later owner of the same metric replaces an earlier one. The metrics are listed, with
their labels, in ``docs/operations.md``.
"""

from __future__ import annotations

import bisect
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from prometheus_client import REGISTRY
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from roost.errors import RateLimited, RoostError, Unavailable

if TYPE_CHECKING:
    from roost.core.ingest import IngestOutcome
    from roost.store.database import Database

log = logging.getLogger(__name__)

Labels = tuple[str, ...]

#: Database-backed gauges (devices by presence, commands and executions by status) are one
#: GROUP BY each; a scrape every few seconds from several Prometheus servers reuses the answer.
QUERY_CACHE_S: Final = 5.0

#: Acknowledgement latency buckets (seconds): group commit answers in about a millisecond when
#: idle, tens of milliseconds under load, seconds only when the store is in trouble.
ACK_LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Commit batch size buckets (items): one lone point up to the writer's largest batches.
BATCH_SIZE_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000)

#: Below this many points a commit's latencies are counted in a plain loop: numpy's fixed cost
#: per call (several microseconds) is more than the loop's for a lone device's small batches.
_VECTOR_FROM: Final = 32

#: MQTT protocol levels as operators name them.
PROTOCOL_NAMES: Final = {3: "3.1", 4: "3.1.1", 5: "5"}


class Tally:
    """A counter per label tuple: ``inc`` is a dict update, no lock (event-loop thread only)."""

    __slots__ = ("documentation", "labels", "name", "values")

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        # A count without labels is shown from the start (0), not only once it happened.
        self.values: dict[Labels, int] = {} if self.labels else {(): 0}

    def inc(self, key: Labels, amount: int = 1) -> None:
        """Add ``amount`` to the count of ``key`` (one value per label, in order)."""
        values = self.values
        values[key] = values.get(key, 0) + amount

    def family(self) -> Metric:
        """The counter family as prometheus-client exposes it (``_total`` is added by it)."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in list(self.values.items()):
            family.add_metric(list(key), value)
        return family


class Buckets:
    """A histogram with fixed bounds, filled by plain increments (one observation or many)."""

    __slots__ = ("bounds", "counts", "documentation", "name", "total")

    def __init__(self, name: str, documentation: str, bounds: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(bound) for bound in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        """Count ``count`` observations of ``value``."""
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.total += value * count

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        """Count every value of an array (one numpy pass, whatever its length)."""
        if not len(values):
            return
        slots = np.searchsorted(self.bounds, values, side="left")
        for slot, count in enumerate(np.bincount(slots, minlength=len(self.counts)).tolist()):
            if count:
                self.counts[slot] += count
        self.total += float(values.sum())

    def family(self) -> Metric:
        """The histogram family with cumulative buckets."""
        family = HistogramMetricFamily(self.name, self.documentation)
        cumulative, buckets = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family.add_metric([], buckets, self.total)
        return family


GaugeValues = dict[Labels, float]


@dataclass(slots=True)
class _Source:
    """A gauge read at scrape time from its owner (held weakly)."""

    name: str
    documentation: str
    labels: Labels
    owner: weakref.ref[Any]
    read: Callable[[Any], GaugeValues] | None = None
    query: Callable[[Any], Awaitable[GaugeValues]] | None = None
    cached: GaugeValues = field(default_factory=dict)
    cached_at: float = float("-inf")


class _Sources:
    """The registered gauge sources, by metric name (a later registration replaces one)."""

    def __init__(self) -> None:
        self.by_name: dict[str, _Source] = {}

    def add(self, source: _Source) -> None:
        self.by_name[source.name] = source

    def live(self) -> Iterator[tuple[_Source, Any]]:
        for source in list(self.by_name.values()):
            owner = source.owner()
            if owner is not None:
                yield source, owner


# -- the metrics ----------------------------------------------------------------------------

MQTT_CONNECTS = Tally(
    "roost_mqtt_connects", "MQTT connections accepted (CONNACK success)", ("protocol", "transport")
)
INGEST_MESSAGES = Tally(
    "roost_ingest_messages",
    "Device messages taken or refused by the ingest doors",
    ("door", "outcome", "reason"),
)
INGEST_POINTS = Tally("roost_ingest_points", "Telemetry points accepted", ("door",))
INGEST_EVENTS = Tally("roost_ingest_events", "Device events accepted", ("door",))
COMMIT_FAILURES = Tally(
    "roost_ingest_commit_failures", "Group commits that failed (their devices resend)", ()
)
ACK_LATENCY = Buckets(
    "roost_ingest_ack_latency_seconds",
    "From an item's receipt to the commit that releases its acknowledgement",
    ACK_LATENCY_BUCKETS,
)
COMMIT_BATCH = Buckets(
    "roost_ingest_commit_batch_size",
    "Items (points and events) per group commit",
    BATCH_SIZE_BUCKETS,
)
#: Messages, points and events accepted per door (the hot path's counts; see ingest_outcome).
_ACCEPTED: dict[str, list[int]] = {}
_TALLIES = [MQTT_CONNECTS, INGEST_MESSAGES, INGEST_POINTS, INGEST_EVENTS, COMMIT_FAILURES]
_HISTOGRAMS = (ACK_LATENCY, COMMIT_BATCH)
_SOURCES = _Sources()


# -- what the hot paths call ----------------------------------------------------------------


def ingest_outcome(door: str, outcome: IngestOutcome) -> None:
    """Count one message's final outcome at a door (``mqtt``, ``http``, ``websocket``)."""
    if outcome.errors or outcome.busy or outcome.duplicate:
        _unusual_outcome(door, outcome)
        return
    # The common case, once per message: three int additions, no tuple, no call.
    counts = _ACCEPTED.get(door)
    if counts is None:
        counts = _ACCEPTED[door] = [0, 0, 0]
    counts[0] += 1
    counts[1] += outcome.accepted
    counts[2] += outcome.events


def _unusual_outcome(door: str, outcome: IngestOutcome) -> None:
    if outcome.errors:
        INGEST_MESSAGES.inc((door, "refused", "invalid"))
    elif outcome.busy:
        INGEST_MESSAGES.inc((door, "refused", "busy"))
    else:
        INGEST_MESSAGES.inc((door, "accepted", "duplicate"))


def ingest_refused(door: str, reason: str) -> None:
    """Count a message a door refused before ingest judged it (``rate_limited``, ``busy``,
    ``not_authorized``, ``error``)."""
    INGEST_MESSAGES.inc((door, "refused", reason))


def ingest_error(door: str, error: BaseException) -> None:
    """Count a message refused with an error, named by its kind."""
    if isinstance(error, RateLimited):
        reason = "rate_limited"
    elif isinstance(error, Unavailable):
        reason = "busy"
    elif isinstance(error, RoostError) and error.status in (400, 422):
        reason = "invalid"
    else:
        reason = "error"
    INGEST_MESSAGES.inc((door, "refused", reason))


class CommittedBatch(Protocol):
    """What :func:`batch_committed` reads of a committed batch (the engine's DecodedBatch)."""

    @property
    def recv(self) -> npt.NDArray[np.int64]: ...

    @property
    def events(self) -> Sequence[Any]: ...

    def __len__(self) -> int: ...


def batch_committed(batch: CommittedBatch) -> None:
    """A group commit is durable: its items' acknowledgement latency and the batch size."""
    now = time.time_ns()
    COMMIT_BATCH.observe(len(batch))
    recv = batch.recv
    if len(recv) > _VECTOR_FROM:
        ACK_LATENCY.observe_many((now - recv).astype(np.float64) / 1e9)
    else:
        for received in recv.tolist():
            ACK_LATENCY.observe((now - received) / 1e9)
    for event in batch.events:
        ACK_LATENCY.observe((now - event.recv) / 1e9)


def commit_failed() -> None:
    """A group commit failed."""
    COMMIT_FAILURES.inc(())


def mqtt_connected(level: int, peer: str) -> None:
    """An MQTT connection was accepted."""
    MQTT_CONNECTS.inc((PROTOCOL_NAMES.get(level, str(level)), mqtt_transport(peer)))


def mqtt_transport(peer: str) -> str:
    """``websocket`` for MQTT over WebSocket (its peer is named ``ws:…``), else ``tcp``."""
    return "websocket" if peer.startswith("ws") else "tcp"


# -- gauges read at scrape time -------------------------------------------------------------


def tally(name: str, documentation: str, labels: Sequence[str] = ()) -> Tally:
    """A counter of a room, exposed at ``/metrics`` (``_total`` is added); one per name."""
    for existing in _TALLIES:
        if existing.name == name:
            return existing
    made = Tally(name, documentation, labels)
    _TALLIES.append(made)
    return made


def gauge_source(
    name: str,
    documentation: str,
    labels: Sequence[str],
    owner: object,
    read: Callable[[Any], GaugeValues],
) -> None:
    """Expose ``read(owner)`` (label tuple → value) as the gauge ``name`` while ``owner`` lives."""
    _SOURCES.add(_Source(name, documentation, tuple(labels), weakref.ref(owner), read=read))


def table_gauge(
    name: str,
    documentation: str,
    db: Database,
    column: sa.Column[Any],
    values: Iterable[str] = (),
) -> None:
    """Expose the row count per value of ``column`` (every tenant) as the gauge ``name``, read
    with one GROUP BY per :data:`QUERY_CACHE_S`; ``values`` are shown as 0 when no row has them."""
    known: GaugeValues = {(value,): 0.0 for value in values}

    async def query(database: Database) -> GaugeValues:
        statement = sa.select(column, sa.func.count()).group_by(column)
        async with database.read() as conn:
            rows = (await conn.execute(statement)).all()
        counts: GaugeValues = dict(known)
        counts.update({(str(value),): float(count) for value, count in rows})
        return counts

    label = column.name
    _SOURCES.add(_Source(name, documentation, (label,), weakref.ref(db), query=query))


def query_gauge(
    name: str,
    documentation: str,
    labels: Sequence[str],
    owner: object,
    query: Callable[[Any], Awaitable[GaugeValues]],
) -> None:
    """Expose ``await query(owner)`` as the gauge ``name`` while ``owner`` lives, read at most
    once per :data:`QUERY_CACHE_S` (a database question too specific for :func:`table_gauge`)."""
    _SOURCES.add(_Source(name, documentation, tuple(labels), weakref.ref(owner), query=query))


async def refresh() -> None:
    """Run the database-backed sources whose answer is older than :data:`QUERY_CACHE_S`."""
    now = time.monotonic()
    for source, owner in _SOURCES.live():
        if source.query is None or now - source.cached_at < QUERY_CACHE_S:
            continue
        try:
            source.cached = await source.query(owner)
            source.cached_at = now
        except Exception as exc:  # a store that is down must not take /metrics with it
            log.warning("metric %s could not be read: %s", source.name, exc)


class OperationalCollector:
    """Yields every Roost operational metric family when prometheus-client collects."""

    def collect(self) -> Iterator[Metric]:
        """The tallies, histograms and gauge sources as they are now."""
        for door, (messages, points, events) in list(_ACCEPTED.items()):
            INGEST_MESSAGES.values[(door, "accepted", "")] = messages
            if points:
                INGEST_POINTS.values[(door,)] = points
            if events:
                INGEST_EVENTS.values[(door,)] = events
        for counter in _TALLIES:
            yield counter.family()
        for histogram in _HISTOGRAMS:
            yield histogram.family()
        for source, owner in _SOURCES.live():
            values = source.cached if source.read is None else _read(source, owner)
            family = GaugeMetricFamily(source.name, source.documentation, labels=source.labels)
            for key, value in values.items():
                family.add_metric(list(key), value)
            yield family


def _read(source: _Source, owner: Any) -> GaugeValues:
    assert source.read is not None
    try:
        return source.read(owner)
    except Exception as exc:
        log.warning("metric %s could not be read: %s", source.name, exc)
        return {}


_COLLECTOR = OperationalCollector()
REGISTRY.register(_COLLECTOR)


__all__ = [
    "ACK_LATENCY",
    "COMMIT_BATCH",
    "INGEST_MESSAGES",
    "MQTT_CONNECTS",
    "OperationalCollector",
    "Tally",
    "batch_committed",
    "commit_failed",
    "gauge_source",
    "ingest_error",
    "ingest_outcome",
    "ingest_refused",
    "mqtt_connected",
    "query_gauge",
    "refresh",
    "table_gauge",
    "tally",
]
