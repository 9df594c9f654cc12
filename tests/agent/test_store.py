"""The agent's outbox on a real SQLite file: durable puts, batches whose message id survives a
restart, the two full-queue policies, and the bound on bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from roost_agent.store import Outbox, QueueFull, count_points


def points(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"sensor_id": "t", "ts": 1_700_000_000_000 + i, "value": i} for i in range(start, n)]


def items_of(payload: bytes) -> tuple[str, list[dict[str, object]]]:
    document = json.loads(payload)
    assert set(document) == {"msg_id", "items"}
    return document["msg_id"], document["items"]


def test_points_are_counted_per_sensor_value() -> None:
    assert count_points("telemetry", {"sensor_id": "t", "value": 1}) == 1
    assert count_points("telemetry", {"ts": 1, "values": {"a": 1, "b": 2, "c": 3}}) == 3
    assert count_points("telemetry", {"ts": 1, "a": 1, "b": 2}) == 2
    assert count_points("events", {"event": "door", "a": 1, "b": 2}) == 1


def test_what_was_put_is_there_after_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    box = Outbox(path, 10_000_000, "drop_oldest")
    assert box.put("telemetry", points(100)) == 100
    assert box.put("events", [{"event": "door", "n": 1}]) == 1
    box.close()
    again = Outbox(path, 10_000_000, "drop_oldest")
    stats = again.stats()
    assert stats["queued_points"] == 101 and stats["queued_items"] == 101
    assert stats["queued_bytes"] > 0 and stats["dropped_points"] == 0
    again.close()


def test_a_batch_keeps_its_message_id_and_items_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    box = Outbox(path, 10_000_000, "drop_oldest")
    box.put("telemetry", points(30))
    batch = box.next_batch(0, 20, 1 << 20)
    assert batch is not None
    made = box.payload(batch)
    assert made is not None
    first, count = made
    assert count == 20
    box.put("telemetry", points(40, 30))  # queued after the batch: never part of it
    box.close()  # a crash before the PUBACK

    again = Outbox(path, 10_000_000, "drop_oldest")
    [pending] = again.pending()
    assert pending == batch
    resent = again.payload(pending)
    assert resent is not None and resent[0] == first  # the same message, byte for byte
    msg_id, items = items_of(first)
    assert msg_id == batch.msg_id and [i["value"] for i in items] == list(range(20))

    assert again.ack([pending]) == 20
    assert again.pending() == []
    following = again.next_batch(pending.last_seq, 100, 1 << 20)
    assert following is not None and following.msg_id != batch.msg_id
    made = again.payload(following)
    assert made is not None
    assert [i["value"] for i in items_of(made[0])[1]] == list(range(20, 40))
    assert again.stats()["queued_points"] == 20
    again.close()


def test_a_batch_holds_one_kind_and_at_most_batch_points(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "queue.db", 10_000_000, "refuse")
    box.put("telemetry", [{"ts": 1, "values": {"a": i, "b": i}} for i in range(10)])  # 20 points
    box.put("events", [{"event": "door", "n": 1}])
    box.put("telemetry", points(3))
    first = box.next_batch(0, 7, 1 << 20)
    assert first is not None and first.kind == "telemetry"
    assert first.last_seq - first.first_seq + 1 == 3  # 3 items of 2 points; a 4th would be 8
    cursor = first.last_seq
    kinds = []
    while (batch := box.next_batch(cursor, 7, 1 << 20)) is not None:
        kinds.append(batch.kind)
        cursor = batch.last_seq
    assert kinds == ["telemetry", "telemetry", "telemetry", "events", "telemetry"]
    box.close()


def test_drop_oldest_makes_room_and_counts_what_it_dropped(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    box = Outbox(path, 20_000, "drop_oldest")
    for start in range(0, 2000, 100):
        box.put("telemetry", points(start + 100, start))
    stats = box.stats()
    assert stats["queued_bytes"] <= 20_000
    assert stats["dropped_points"] > 0
    assert stats["queued_points"] + stats["dropped_points"] == 2000
    batch = box.next_batch(0, 10_000, 1 << 30)
    assert batch is not None
    made = box.payload(batch)
    assert made is not None
    kept = [i["value"] for i in items_of(made[0])[1]]
    assert kept == list(range(stats["dropped_points"], 2000))  # the newest stay
    box.close()
    assert Outbox(path, 20_000, "drop_oldest").stats()["dropped_points"] == stats["dropped_points"]


def test_refuse_raises_and_keeps_what_is_queued(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "queue.db", 20_000, "refuse")
    taken = 0
    with pytest.raises(QueueFull, match="full"):
        for start in range(0, 2000, 100):
            box.put("telemetry", points(start + 100, start))
            taken += 100
    stats = box.stats()
    assert 0 < stats["queued_points"] == taken < 2000
    assert stats["dropped_points"] == 0 and stats["queued_bytes"] <= 20_000
    with pytest.raises(QueueFull):  # still full: the same put is refused again
        box.put("telemetry", points(taken + 100, taken))
    assert box.stats()["queued_points"] == taken
    box.close()


def test_a_put_larger_than_the_whole_queue_is_refused_under_either_policy(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "queue.db", 5_000, "drop_oldest")
    box.put("telemetry", points(10))
    with pytest.raises(QueueFull, match="max_bytes"):
        box.put("telemetry", points(1000))
    assert box.stats()["queued_points"] == 10 and box.stats()["dropped_points"] == 0
    box.close()


def test_a_refused_batch_is_split_into_one_batch_per_item_with_new_ids(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "queue.db", 10_000_000, "drop_oldest")
    box.put("telemetry", points(5))
    batch = box.next_batch(0, 100, 1 << 20)
    assert batch is not None
    parts = box.split(batch)
    assert [(p.first_seq, p.last_seq) for p in parts] == [(s, s) for s in range(1, 6)]
    assert batch.msg_id not in {p.msg_id for p in parts}
    assert box.pending() == parts
    box.close()
