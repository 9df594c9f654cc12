"""The outbox: a durable local queue of telemetry and events waiting for the server.

One SQLite file in WAL mode with ``synchronous=FULL``: :meth:`Outbox.put` returns only once the
items are on disk, so a local app told "queued" never loses them to a crash or a power cut.

Exactly once, end to end. The forwarder takes items in order as *batches*; a batch is a row
naming a message id and a range of item sequence numbers, committed **before** the batch is
first published. After a crash or restart the same batch goes out again under the same id, and
the server (which remembers the message ids it has stored) stores it once. A batch's items are
deleted only after the server's PUBACK. Sequence numbers are never reused (``AUTOINCREMENT``),
so a batch's range never takes in items queued after it.

Disk use is bounded by ``max_bytes`` (the items' JSON plus a per-row allowance). When a put
would go past it, the policy decides: ``drop_oldest`` deletes the oldest items until the new
ones fit and counts the dropped points (in :meth:`Outbox.stats` and the log); ``refuse`` raises
:class:`QueueFull` and keeps what is queued. A full disk raises :class:`QueueFull` too (after
``drop_oldest`` has made room once, in vain).
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

KINDS = ("telemetry", "events")
# What a row costs SQLite beyond its JSON (rowid, header, the index-free b-tree cell): counted
# so that max_bytes bounds the file, not only the payloads, within a few per cent.
ROW_OVERHEAD = 24
# Keys of a telemetry item that are not sensors (the server's rule: roost.telemetry.rules).
RESERVED_KEYS = frozenset({"ts", "timestamp", "msg_id"})
# Checkpoint the WAL back into the main file once it holds this many pages (SQLite's default is
# 1000 pages); a smaller WAL keeps the disk use near what stats() reports.
WAL_AUTOCHECKPOINT_PAGES = 1000

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    body BLOB NOT NULL,
    points INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    msg_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class QueueFull(Exception):
    """The queue cannot take the items: the ``refuse`` policy at ``max_bytes``, or a full disk."""


@dataclass(frozen=True)
class Batch:
    """Queued items of one kind, sent as one message ``{"msg_id", "items"}``."""

    msg_id: str
    kind: str
    first_seq: int
    last_seq: int


def count_points(kind: str, item: Any) -> int:
    """The points an item holds: one per sensor value (an event or the sensor form: one)."""
    if kind != "telemetry" or not isinstance(item, dict) or "sensor_id" in item:
        return 1
    values = item.get("values")
    if isinstance(values, dict):
        return max(1, len(values))
    if "event" in item:
        return 1
    return max(1, sum(1 for key in item if key not in RESERVED_KEYS))


def _new_msg_id() -> str:
    """A message id no other batch of any agent will use (128 random bits, hex)."""
    return secrets.token_hex(16)


class Outbox:
    """The durable queue between the local API and the forwarder (thread-safe)."""

    def __init__(self, path: Path, max_bytes: int, when_full: str) -> None:
        if when_full not in ("drop_oldest", "refuse"):
            raise ValueError(f"when_full must be drop_oldest or refuse, not {when_full!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Called (outside the lock) after every put: the forwarder's wake-up.
        self.on_put: Callable[[], None] | None = None
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT COUNT(*), SUM(points), SUM(size) FROM items").fetchone()
        self._items = int(row[0])
        self._points = int(row[1] or 0)
        self._bytes = int(row[2] or 0)
        dropped = self._db.execute(
            "SELECT value FROM counters WHERE name = 'dropped_points'"
        ).fetchone()
        self._dropped = int(dropped[0]) if dropped else 0

    # -- the local side ------------------------------------------------------------------------

    def put(self, kind: str, items: list[dict[str, Any]]) -> int:
        """Queue ``items`` durably (on disk when this returns); the number of points queued."""
        if kind not in KINDS:
            raise ValueError(f"kind must be telemetry or events, not {kind!r}")
        if not items:
            return 0
        rows = []
        total = 0
        points = 0
        for item in items:
            body = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
            n = count_points(kind, item)
            size = len(body) + ROW_OVERHEAD
            rows.append((kind, body, n, size))
            total += size
            points += n
        if total > self.max_bytes:
            raise QueueFull(
                f"{total} bytes cannot fit in a queue of [queue] max_bytes = {self.max_bytes}"
            )
        with self._lock:
            self._insert(rows, total, points)
        if self.on_put is not None:
            self.on_put()
        return points

    def _insert(self, rows: list[tuple[str, bytes, int, int]], total: int, points: int) -> None:
        over = self._bytes + total - self.max_bytes
        if over > 0 and self.when_full == "refuse":
            raise QueueFull(
                f"the queue is full ({self._bytes} of {self.max_bytes} bytes, when_full = refuse)"
            )
        for attempt in range(2):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    dropped = self._drop_oldest(over) if over > 0 else (0, 0, 0)
                    self._db.executemany(
                        "INSERT INTO items (kind, body, points, size) VALUES (?, ?, ?, ?)", rows
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if "full" not in str(exc) and "disk" not in str(exc):
                    raise
                # A full disk: under drop_oldest make room for the new items once more.
                if attempt == 0 and self.when_full == "drop_oldest" and self._items:
                    over = max(over, total)
                    continue
                raise QueueFull(f"the disk of {self.path} is full: {exc}") from exc
            self._forget(*dropped)
            self._items += len(rows)
            self._points += points
            self._bytes += total
            return

    def _drop_oldest(self, need: int) -> tuple[int, int, int]:
        """Delete the oldest items holding at least ``need`` bytes (inside a transaction)."""
        freed = points = count = 0
        cutoff = 0
        cursor = self._db.execute("SELECT seq, points, size FROM items ORDER BY seq")
        try:
            for seq, n, size in cursor:
                cutoff = seq
                freed += size
                points += n
                count += 1
                if freed >= need:
                    break
        finally:
            cursor.close()
        self._db.execute("DELETE FROM items WHERE seq <= ?", (cutoff,))
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES ('dropped_points', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (points,),
        )
        self._dropped += points
        logger.warning(
            "queue full (max_bytes=%d): dropped the %d oldest points (%d dropped in all)",
            self.max_bytes,
            points,
            self._dropped,
        )
        return count, points, freed

    def _forget(self, count: int, points: int, size: int) -> None:
        self._items -= count
        self._points -= points
        self._bytes -= size

    def stats(self) -> dict[str, Any]:
        """What is queued, what was dropped, and the bound."""
        with self._lock:
            return {
                "queued_points": self._points,
                "queued_items": self._items,
                "queued_bytes": self._bytes,
                "dropped_points": self._dropped,
                "max_bytes": self.max_bytes,
                "when_full": self.when_full,
            }

    # -- the forwarder's side ------------------------------------------------------------------

    def pending(self) -> list[Batch]:
        """Batches made before (sent at least once, maybe stored): to resend under their ids."""
        with self._lock:
            rows = self._db.execute(
                "SELECT msg_id, kind, first_seq, last_seq FROM batches ORDER BY first_seq"
            ).fetchall()
        return [Batch(*row) for row in rows]

    def next_batch(self, after: int, max_points: int, max_bytes: int) -> Batch | None:
        """Make (and commit) the next batch of items after sequence ``after``; None if none."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, points, size FROM items WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, max_points),
            ).fetchall()
            if not rows:
                return None
            kind = rows[0][1]
            last = rows[0][0]
            points = size = 0
            for seq, row_kind, n, row_size in rows:
                if row_kind != kind or (
                    points and (points + n > max_points or size + row_size > max_bytes)
                ):
                    break
                last = seq
                points += n
                size += row_size
            batch = Batch(_new_msg_id(), kind, rows[0][0], last)
            self._db.execute(
                "INSERT INTO batches (msg_id, kind, first_seq, last_seq) VALUES (?, ?, ?, ?)",
                (batch.msg_id, batch.kind, batch.first_seq, batch.last_seq),
            )
        return batch

    def payload(self, batch: Batch) -> tuple[bytes, int] | None:
        """The message of ``batch`` and its point count; None when its items were all dropped."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body, points FROM items WHERE seq BETWEEN ? AND ? ORDER BY seq",
                (batch.first_seq, batch.last_seq),
            ).fetchall()
        if not rows:
            return None
        head = b'{"msg_id":"' + batch.msg_id.encode() + b'","items":['
        return head + b",".join(row[0] for row in rows) + b"]}", sum(row[1] for row in rows)

    def ack(self, batches: list[Batch]) -> int:
        """Delete the batches the server acknowledged, and their items; points removed."""
        if not batches:
            return 0
        with self._lock:
            removed = [0, 0, 0]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for batch in batches:
                    span = (batch.first_seq, batch.last_seq)
                    row = self._db.execute(
                        "SELECT COUNT(*), SUM(points), SUM(size) FROM items "
                        "WHERE seq BETWEEN ? AND ?",
                        span,
                    ).fetchone()
                    self._db.execute("DELETE FROM items WHERE seq BETWEEN ? AND ?", span)
                    self._db.execute("DELETE FROM batches WHERE msg_id = ?", (batch.msg_id,))
                    removed[0] += int(row[0])
                    removed[1] += int(row[1] or 0)
                    removed[2] += int(row[2] or 0)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._forget(*removed)
        return removed[1]

    def split(self, batch: Batch) -> list[Batch]:
        """Replace a refused batch by one batch per item (new ids: the refusal stored nothing)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seqs = [
                    row[0]
                    for row in self._db.execute(
                        "SELECT seq FROM items WHERE seq BETWEEN ? AND ? ORDER BY seq",
                        (batch.first_seq, batch.last_seq),
                    )
                ]
                self._db.execute("DELETE FROM batches WHERE msg_id = ?", (batch.msg_id,))
                parts = [Batch(_new_msg_id(), batch.kind, seq, seq) for seq in seqs]
                self._db.executemany(
                    "INSERT INTO batches (msg_id, kind, first_seq, last_seq) VALUES (?, ?, ?, ?)",
                    [(p.msg_id, p.kind, p.first_seq, p.last_seq) for p in parts],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return parts

    def close(self) -> None:
        """Checkpoint the WAL and close the file."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # a busy or broken file: closing still matters more
                logger.debug("checkpoint on close failed: %s", exc)
            self._db.close()
