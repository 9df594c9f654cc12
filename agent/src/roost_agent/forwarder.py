"""The forwarder: sends the outbox to the server, in order, and deletes only what it acknowledged.

Each batch (up to ``[queue] batch_points`` points, so a backlog goes out in few large messages)
is published at QoS 1 as ``{"msg_id": …, "items": [...]}`` on ``devices/{id}/telemetry`` or
``devices/{id}/events``. Up to :data:`WINDOW` batches are in flight at once: waiting for each
PUBACK before sending the next would cap a backlog at one batch per round trip.

What a PUBACK says decides the batch's fate:

* success: the batch and its items are deleted from the outbox;
* 0x99 "payload format invalid" (the server refused an item, and so the whole message): a batch
  of several items is split into one batch per item, so only the bad item is lost (it is logged
  with the server's reason); a single refused item is dropped and counted;
* any other failure (the server could not commit, say): the batch is sent again under the same
  message id after :data:`RETRY_AFTER_S`.

Batches of an earlier run (the agent was stopped or killed between publishing and the PUBACK)
are sent first, under their persisted ids: the server stores each message id once.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Any

from roost_agent.link import Link
from roost_agent.store import Batch, Outbox

logger = logging.getLogger(__name__)

# Batches published and not yet acknowledged. Eight 500-point batches keep a LAN link busy while
# a round trip is pending, and stay far below the server's Receive Maximum (256).
WINDOW = 8
# A batch's JSON at most (bytes): well under the server's default MQTT packet limit (1 MiB), so
# a batch of large events is still taken whole.
MAX_BATCH_BYTES = 256 * 1024
# The largest message the server takes by default (ROOST_MQTT_MAX_PACKET_BYTES); an item larger
# than that alone can never be delivered and is dropped with a log line.
MAX_MESSAGE_BYTES = 1024 * 1024 - 1024
# After a PUBACK failure other than a refusal (the server could not commit), wait this long
# before sending again: the condition is usually gone in a second or two.
RETRY_AFTER_S = 2.0
# PUBACK 0x99 "Payload format invalid": the server refused an item of the message.
REFUSED = 0x99


class Forwarder:
    """Moves batches from the outbox to the server over the link, on a thread of its own."""

    def __init__(self, outbox: Outbox, link: Link, batch_points: int, window: int = WINDOW):
        self.outbox = outbox
        self.link = link
        self.batch_points = batch_points
        self.window = window
        self._acks: queue.SimpleQueue[tuple[int, int, str]] = queue.SimpleQueue()
        self._inflight: dict[int, tuple[Batch, int]] = {}
        self._resend: collections.deque[Batch] = collections.deque()
        self._cursor = 0
        self._hold_until = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent_points = 0
        self.sent_batches = 0
        self.refused_points = 0
        self.last_ack_at: float | None = None
        link.on_puback(self._on_puback)
        link.on_connect(self._wake.set)
        outbox.on_put = self._wake.set

    def start(self) -> None:
        """Resend what an earlier run left in flight, then keep forwarding."""
        pending = self.outbox.pending()
        self._resend.extend(pending)
        self._cursor = max((b.last_seq for b in pending), default=0)
        if pending:
            logger.info("resending %d batches of the last run under their ids", len(pending))
        self._thread = threading.Thread(target=self._run, name="roost-forwarder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (batches in flight stay in the outbox and go out on the next start)."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    def stats(self) -> dict[str, Any]:
        """What was forwarded since the agent started."""
        return {
            "sent_points": self.sent_points,
            "sent_batches": self.sent_batches,
            "refused_points": self.refused_points,
            "in_flight_batches": len(self._inflight),
            "last_ack_at": self.last_ack_at,
        }

    def _on_puback(self, mid: int, code: int, reason: str) -> None:
        self._acks.put((mid, code, reason))  # paho's thread: no database work here
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._settle()
                self._fill()
            except Exception:  # a broken disk, say: log, wait, try again rather than die
                logger.exception("forwarding failed; trying again")
                self._stopping.wait(RETRY_AFTER_S)
            delay = self._hold_until - time.monotonic()
            self._wake.wait(max(delay, 0.05) if delay > 0 else 5.0)

    def _settle(self) -> None:
        """Act on the PUBACKs that came in: delete, split or send again."""
        acked: list[Batch] = []
        while True:
            try:
                mid, code, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue
            batch, points = entry
            if code < 0x80:
                acked.append(batch)
                self.sent_points += points
                self.sent_batches += 1
            elif code == REFUSED and batch.first_seq != batch.last_seq:
                parts = self.outbox.split(batch)
                logger.warning(
                    "the server refused batch %s (%s): sending its %d items one by one",
                    batch.msg_id,
                    reason,
                    len(parts),
                )
                self._resend.extendleft(reversed(parts))
            elif code == REFUSED:
                logger.error(
                    "the server refused %s item %d (%s): dropped",
                    batch.kind,
                    batch.first_seq,
                    reason,
                )
                self.refused_points += points
                acked.append(batch)
            else:
                logger.warning(
                    "batch %s not taken (%s, 0x%02x): sending it again", batch.msg_id, reason, code
                )
                self._resend.appendleft(batch)
                self._hold_until = time.monotonic() + RETRY_AFTER_S
        if acked:
            self.outbox.ack(acked)
            self.last_ack_at = time.time()

    def _fill(self) -> None:
        """Publish batches until the window is full, the queue empty or the link down."""
        while (
            self.link.connected.is_set()
            and len(self._inflight) < self.window
            and time.monotonic() >= self._hold_until
            and not self._stopping.is_set()
        ):
            if self._resend:
                batch: Batch | None = self._resend.popleft()
            else:
                batch = self.outbox.next_batch(self._cursor, self.batch_points, MAX_BATCH_BYTES)
            if batch is None:
                return
            self._cursor = max(self._cursor, batch.last_seq)
            made = self.outbox.payload(batch)
            if made is None:  # all its items were dropped (queue full, drop_oldest)
                self.outbox.ack([batch])
                continue
            payload, points = made
            if len(payload) > MAX_MESSAGE_BYTES:
                if batch.first_seq == batch.last_seq:
                    logger.error(
                        "%s item %d is %d bytes, over the server's message limit: dropped",
                        batch.kind,
                        batch.first_seq,
                        len(payload),
                    )
                    self.refused_points += points
                    self.outbox.ack([batch])
                else:
                    self._resend.extendleft(reversed(self.outbox.split(batch)))
                continue
            info = self.link.publish(self.link.topic(batch.kind), payload, 1)
            self._inflight[info.mid] = (batch, points)
