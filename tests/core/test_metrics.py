"""The operational metrics' own parts: bucket boundaries, the vector and plain paths agreeing, and
gauge sources that live as long as their owner, read through prometheus-client's exposition."""

from __future__ import annotations

import gc
import warnings

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from roost.core import metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def exposed(collector: metrics.OperationalCollector) -> Samples:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_value_on_a_bound_falls_in_that_bucket() -> None:
    plain = metrics.Buckets("t_plain", "test", (0.1, 1.0))
    vector = metrics.Buckets("t_vector", "test", (0.1, 1.0))
    values = [0.05, 0.1, 0.5, 1.0, 1.5, 7.0]
    for value in values:
        plain.observe(value)
    vector.observe_many(np.array(values, dtype=np.float64))
    assert plain.counts == vector.counts == [2, 2, 2]
    assert plain.total == vector.total == sum(values)
    family = plain.family()
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 2, "1.0": 4, "+Inf": 6}


def test_batch_committed_counts_every_item() -> None:
    class Event:
        def __init__(self, recv: int) -> None:
            self.recv = recv

    class Batch:
        def __init__(self, points: int, events: int, recv: int) -> None:
            self.recv = np.full(points, recv, dtype=np.int64)
            self.events = [Event(recv) for _ in range(events)]

        def __len__(self) -> int:
            return len(self.recv) + len(self.events)

    before_latency = sum(metrics.ACK_LATENCY.counts)
    before_batches = sum(metrics.COMMIT_BATCH.counts)
    metrics.batch_committed(Batch(3, 1, 0))  # plain loop
    metrics.batch_committed(Batch(100, 0, 0))  # numpy
    assert sum(metrics.ACK_LATENCY.counts) - before_latency == 104
    assert sum(metrics.COMMIT_BATCH.counts) - before_batches == 2
    # Received at the epoch: every latency is beyond the last bound.
    assert metrics.ACK_LATENCY.counts[-1] >= 104


def test_a_gauge_source_lives_as_long_as_its_owner() -> None:
    # Garbage of earlier tests first, with its ResourceWarnings not blamed on this test: its own
    # gc.collect() below would otherwise finalize a client socket some earlier module dropped
    # (seen once after the browser tests, not reproduced under tracemalloc).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()

    class Owner:
        size = 7

    owner = Owner()
    metrics.gauge_source("t_owned", "test", ("kind",), owner, lambda o: {("a",): o.size})
    collector = metrics.OperationalCollector()
    assert exposed(collector)[("t_owned", (("kind", "a"),))] == 7
    del owner
    gc.collect()
    assert not any(name == "t_owned" for name, _ in exposed(collector))


def test_accepted_and_refused_messages_by_door() -> None:
    from roost.core.ingest import IngestOutcome

    door = "test-door"
    metrics.ingest_outcome(door, IngestOutcome(accepted=3, events=1))
    metrics.ingest_outcome(door, IngestOutcome(accepted=2))
    metrics.ingest_outcome(door, IngestOutcome(duplicate=True))
    metrics.ingest_outcome(door, IngestOutcome(errors=[{"index": 0, "message": "bad"}]))
    metrics.ingest_refused(door, "rate_limited")
    samples = exposed(metrics.OperationalCollector())

    def messages(outcome: str, reason: str) -> float:
        labels = (("door", door), ("outcome", outcome), ("reason", reason))
        return samples[("roost_ingest_messages_total", labels)]

    assert messages("accepted", "") == 2
    assert messages("accepted", "duplicate") == 1
    assert messages("refused", "invalid") == 1
    assert messages("refused", "rate_limited") == 1
    assert samples[("roost_ingest_points_total", (("door", door),))] == 5
    assert samples[("roost_ingest_events_total", (("door", door),))] == 1
