"""The bus port.

Two kinds of traffic cross it:

* **Notifications** (:meth:`Bus.publish` / :meth:`Bus.subscribe`): fan-out, at most once, nothing
  kept. Live streams of committed telemetry, cache invalidation (a sensor changed, a token was
  revoked), commands for the gateway that holds a device's connection. A subscriber that is not
  listening misses the message, and that is fine for these uses.
* **Streams** (:meth:`Bus.stream_publish` / :meth:`Bus.stream_consume`): a durable work queue, at
  least once. In scale mode a gateway publishes each ingest batch and acknowledges the device only
  when the stream has it durably; writers consume, commit to PostgreSQL, then acknowledge. A handler
  that raises gets its messages again.

Subjects are dot-separated tokens (``roost.telemetry.default``). Subscriptions may use NATS
wildcards: ``*`` matches one token, ``>`` (last) one or more. Backends: ``memory://`` (in-process;
its streams live in memory only, because embedded mode commits ingest to SQLite directly) and
``nats://host:port`` (NATS core for notifications, JetStream for streams). The contract suite
``tests/bus/test_bus_contract.py`` runs against both.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from roost.bus.subjects import DEFAULT_PREFIX, check_prefix

NotificationHandler = Callable[[str, bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message delivered from a stream."""

    subject: str
    data: bytes
    sequence: int  # the stream's sequence number (grows; redeliveries keep it)
    redelivered: bool = False


StreamHandler = Callable[[Sequence[StreamMessage]], Awaitable[None]]


# How long a ``msg_id`` is remembered for de-duplication. A device resends an unacknowledged
# batch within seconds (its keep-alive and retry timers are well under a minute); two minutes
# covers a reconnect too, and longer-lived duplicates are caught by the store's sequence numbers.
DEDUPE_WINDOW_S = 120.0
# The largest message either backend takes, unless the NATS server says otherwise (its
# ``max_payload``, 1 MiB by default): code that runs on memory:// meets the limit it will meet
# on nats://.
DEFAULT_MAX_PAYLOAD = 1024 * 1024
# A batch whose handler raised comes back after REDELIVERY_DELAY_S, doubled on each further
# failure up to REDELIVERY_DELAY_MAX_S: quick enough for a transient error (a deadlock retry),
# slow enough that a poison batch or a database that is down does not spin a core.
REDELIVERY_DELAY_S = 0.2
REDELIVERY_DELAY_MAX_S = 30.0


def redelivery_delay(deliveries: int) -> float:
    """Seconds before a batch delivered ``deliveries`` times (and failed) is delivered again."""
    exponent = min(max(deliveries - 1, 0), 16)
    return float(min(REDELIVERY_DELAY_S * 2**exponent, REDELIVERY_DELAY_MAX_S))


class Subscription(abc.ABC):
    """A live subscription or consumer; stop it to stop deliveries."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop receiving (messages in flight are finished or left for redelivery)."""

    @property
    def dropped(self) -> int:
        """Notifications this subscriber lost because it fell too far behind (0 for streams).

        Each notification subscription has a bounded queue; when it is full the oldest waiting
        notification is dropped, so a slow subscriber can neither block the publisher nor make
        the process grow without bound.
        """
        return 0


class Bus(abc.ABC):
    """Notifications and durable streams between Roost's parts."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (and for streams, make sure they exist)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Drain and disconnect."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise roost.errors.Unavailable unless the bus answers."""

    @property
    def in_process(self) -> bool:
        """True when every subscriber lives in this process (``memory://``): nothing published
        here can reach another process, so cross-process work can be skipped."""
        return False

    @property
    def max_payload(self) -> int:
        """The largest ``data`` (bytes) publish and stream_publish take."""
        return DEFAULT_MAX_PAYLOAD

    def check_payload(self, subject: str, data: bytes) -> None:
        """Raise ValueError when ``data`` is larger than :attr:`max_payload`."""
        if len(data) > self.max_payload:
            raise ValueError(
                f"a message of {len(data)} bytes on {subject} exceeds the bus's maximum "
                f"payload of {self.max_payload} bytes"
            )

    # -- notifications -----------------------------------------------------------------------

    @abc.abstractmethod
    async def publish(self, subject: str, data: bytes) -> None:
        """Send a notification to every current subscriber of a matching subject.

        Never waits for subscribers: each has its own bounded queue (see
        :attr:`Subscription.dropped`). Raises ValueError for a subject with a wildcard or data
        larger than :attr:`max_payload`.
        """

    @abc.abstractmethod
    async def subscribe(self, subject: str, handler: NotificationHandler) -> Subscription:
        """Call ``handler(subject, data)`` for each notification matching ``subject``.

        Calls for one subscription are made one at a time, in publish order, from a task of
        their own; an exception from the handler is logged and the next notification follows.
        When this returns, the subscription is in place for every publisher.
        """

    # -- durable streams ---------------------------------------------------------------------

    @abc.abstractmethod
    async def stream_publish(self, subject: str, data: bytes, *, msg_id: str | None = None) -> int:
        """Append to the stream that holds ``subject``; return its sequence once it is durable.

        The stream is the subject's family (``roost.ingest.x`` → ``ROOST_INGEST``, see
        :mod:`roost.bus.subjects`), created on first use. A ``msg_id`` seen again within the
        de-duplication window (:data:`DEDUPE_WINDOW_S`) is stored once (the original sequence is
        answered). Raises roost.errors.Unavailable when the stream cannot take it, ValueError
        when ``data`` is larger than :attr:`max_payload`.
        """

    @abc.abstractmethod
    async def stream_consume(
        self,
        subject: str,
        durable: str,
        handler: StreamHandler,
        *,
        batch: int = 100,
        max_wait_s: float = 0.005,
    ) -> Subscription:
        """Deliver the stream's messages on ``subject`` to ``handler`` in batches (up to ``batch``
        messages, or what arrived within ``max_wait_s``), in order, resuming where the durable
        consumer ``durable`` left off. The batch is acknowledged when the handler returns and
        delivered again when it raises (after :func:`redelivery_delay`, flagged ``redelivered``;
        messages behind it may be delivered meanwhile, so order holds except around a failure).
        Several consumers with the same ``durable`` share the work: no message is given to two
        of them at once, and one a consumer held when it stopped or died goes to another.

        A stream is a work queue: each message goes to one durable. Raises roost.errors.Conflict
        when ``durable`` exists for another subject, or another durable of the stream already
        takes an overlapping subject; Unavailable when the bus cannot be reached.
        """


def open_bus(url: str, *, prefix: str = DEFAULT_PREFIX) -> Bus:
    """The backend named by the URL's scheme: ``memory://`` or ``nats://host:port``.

    ``prefix`` (``ROOST_BUS_PREFIX``) replaces the leading ``roost`` of every subject and stream
    name on NATS, so that installations sharing a NATS account never see each other's messages.
    """
    from roost.errors import ConfigError

    try:
        check_prefix(prefix)
    except ValueError as exc:
        raise ConfigError(f"ROOST_BUS_PREFIX: {exc}") from exc
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from roost.bus.memory import MemoryBus

        return MemoryBus()
    if scheme in {"nats", "tls"}:
        try:
            from roost.bus.nats import NatsBus
        except ImportError as exc:  # nats-py is an optional dependency
            raise ConfigError(
                "the NATS bus needs nats-py: install it with: pip install 'roost[nats]'"
            ) from exc
        return NatsBus(url, prefix=prefix)
    raise ConfigError(f"unsupported bus URL scheme {scheme!r}: use memory:// or nats://host:port")
