"""The ingest port's types: what a door hands in and what it gets back.

Every door (MQTT, HTTP, WebSocket) calls :class:`roost.telemetry.ingest.service.IngestService`:

* ``await ingest.device_context(identity)`` once per connection (or request): the device's sensor
  map, loaded on first use and kept current through the bus;
* ``ingest.try_submit(ctx, kind, payload, recv_ns, msg_id=None)`` on the hot path: normalises the
  JSON payload and appends it to the batch being built, synchronously. It answers ``None`` when the
  message needs slow work first (a sensor must be created), then the door awaits
  ``ingest.submit(...)`` with the same arguments;
* the outcome's ``ticket`` completes when the batch holding the message is durable; only then may
  the door acknowledge (PUBACK, HTTP 200, WebSocket ack).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any


class IngestKind(enum.Enum):
    """What a payload holds, by the door or topic it came through."""

    TELEMETRY = "telemetry"  # sensor or key/value form
    EVENTS = "events"  # event documents
    AUTO = "auto"  # either, told apart by shape (the bare ``{device id}`` MQTT topic)


class CommitTicket:
    """Completes when the batch holding some accepted items is committed (or failed to be).

    Many messages share one ticket (the batch of one group commit): callbacks cost nothing per
    message, which matters at 100k messages/s.
    """

    __slots__ = ("_callbacks", "_error", "_future", "done")

    def __init__(self) -> None:
        self.done = False
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[BaseException | None], None]] = []
        self._future: asyncio.Future[None] | None = None

    def add_done_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(error or None)`` once the batch is durable (at once if it is)."""
        if self.done:
            callback(self._error)
        else:
            self._callbacks.append(callback)

    def resolve(self, error: BaseException | None = None) -> None:
        """Mark the batch committed (``error`` None) or failed; run the callbacks."""
        if self.done:
            return
        self.done = True
        self._error = error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(error)
        if self._future is not None and not self._future.done():
            if error is None:
                self._future.set_result(None)
            else:
                self._future.set_exception(error)

    def __await__(self) -> Generator[Any, None, None]:
        if self.done:
            if self._error is not None:
                raise self._error
            return
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        yield from self._future.__await__()


@dataclass(slots=True)
class IngestOutcome:
    """What happened to one message.

    ``errors`` lists every refused item as ``{"index", "field", "message"}`` (index into the
    message's array, 0 for a single object). A message is taken whole or not at all: when
    ``errors`` is not empty, ``accepted`` is 0 and nothing of it was stored. ``busy`` means the
    writer is full and nothing was taken: the door pushes back (stops reading, 503) and retries.
    ``duplicate`` means the message id was seen before: nothing new was stored, and the door
    acknowledges as for a success.
    """

    accepted: int = 0
    events: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    ticket: CommitTicket | None = None
    busy: bool = False
    duplicate: bool = False
    flagged_future: int = 0  # points more than FUTURE_TOLERANCE ahead of the server's clock

    @property
    def ok(self) -> bool:
        """True when the message was taken (or was a known duplicate)."""
        return not self.errors and not self.busy
