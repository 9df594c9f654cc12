"""The MQTT session state that outlives a connection: subscriptions, undelivered messages, QoS 2.

In MQTT terms a *session* is what the server keeps for a client id between connections when the
client asks for it (3.1.1 clean session 0, 5.0 clean start 0 with a session expiry). Roost keeps
it in memory, bounded per session, until it expires; a clean connection starts a fresh one and
drops it at disconnect. Sessions are keyed by (device, client id), so one device can never resume
or take over another device's session by choosing its client id.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from roost.mqtt.packets import Will
from roost.mqtt.topics import topic_matches

if TYPE_CHECKING:
    from roost.core.device_identity import DeviceIdentity
    from roost.core.ingest import CommitTicket
    from roost.mqtt.session import MQTTSession

log = logging.getLogger(__name__)

#: Outbound message phases: waiting for PUBACK/PUBREC, then (QoS 2) for PUBCOMP.
PHASE_PUBLISHED = 1
PHASE_RELEASED = 2


class Grant:
    """One subscription: the QoS granted and the v5 subscription identifier, if any."""

    __slots__ = ("qos", "subscription_id")

    def __init__(self, qos: int, subscription_id: int | None) -> None:
        self.qos = qos
        self.subscription_id = subscription_id

    def __repr__(self) -> str:
        return f"Grant(qos={self.qos}, subscription_id={self.subscription_id})"


class OutboundMessage:
    """A server-to-device message at QoS 1 or 2, queued or in flight."""

    __slots__ = ("on_ack", "payload", "phase", "qos", "subscription_ids", "topic")

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        subscription_ids: tuple[int, ...] = (),
        on_ack: Callable[[], None] | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.subscription_ids = subscription_ids
        self.phase = PHASE_PUBLISHED
        # Called once when the client acknowledges it (PUBACK, or PUBCOMP at QoS 2).
        self.on_ack = on_ack

    def acknowledged(self) -> None:
        """The client has it: tell whoever asked (once)."""
        callback, self.on_ack = self.on_ack, None
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("delivery callback for %s failed", self.topic)


class PendingWill:
    """A will waiting out its v5 Will Delay Interval (cancelled if the session resumes)."""

    __slots__ = ("ctx", "identity", "will")

    def __init__(self, identity: DeviceIdentity, ctx: Any, will: Will) -> None:
        self.identity = identity
        self.ctx = ctx
        self.will = will


class SessionState:
    """What the server remembers for one (device, client id)."""

    __slots__ = (
        "client_id",
        "connection",
        "device_pk",
        "expiry_s",
        "generation",
        "inflight",
        "next_packet_id",
        "pending_will",
        "qos2_in",
        "queue",
        "subscriptions",
    )

    def __init__(self, device_pk: int, client_id: str, expiry_s: int) -> None:
        self.device_pk = device_pk
        self.client_id = client_id
        #: Seconds the session outlives its connection (0: it ends with the connection).
        self.expiry_s = expiry_s
        #: Bumped at every attach and detach, so stale timers can tell they are stale.
        self.generation = 0
        self.connection: MQTTSession | None = None
        # Created on first use: most sessions of an idle fleet never need them.
        self.subscriptions: dict[str, Grant] | None = None
        self.inflight: dict[int, OutboundMessage] | None = None
        self.queue: deque[OutboundMessage] | None = None
        #: QoS 2 packet ids received and not yet released → the ticket of their storage
        #: (None once durable), so that a resend is neither stored twice nor acknowledged early.
        self.qos2_in: dict[int, CommitTicket | None] | None = None
        self.next_packet_id = 1
        self.pending_will: PendingWill | None = None

    # -- subscriptions ------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, qos: int, subscription_id: int | None) -> bool:
        """Add or replace a subscription; True when it replaced an existing one."""
        subs = self.subscriptions
        if subs is None:
            subs = self.subscriptions = {}
        existed = topic_filter in subs
        subs[topic_filter] = Grant(qos, subscription_id)
        return existed

    def unsubscribe(self, topic_filter: str) -> bool:
        """Remove a subscription; False when there was none."""
        subs = self.subscriptions
        if not subs or topic_filter not in subs:
            return False
        del subs[topic_filter]
        return True

    def match(self, topic: str) -> tuple[int, tuple[int, ...]]:
        """The highest QoS granted for ``topic`` (-1: no subscription) and the v5 ids that match."""
        subs = self.subscriptions
        if not subs:
            return -1, ()
        best = -1
        ids: list[int] = []
        for topic_filter, grant in subs.items():
            if topic_matches(topic_filter, topic):
                best = max(best, grant.qos)
                if grant.subscription_id is not None:
                    ids.append(grant.subscription_id)
        return best, tuple(ids)

    # -- outbound QoS 1/2 ---------------------------------------------------------------------

    def enqueue(self, message: OutboundMessage, limit: int) -> bool:
        """Queue a message for delivery; False when ``limit`` undelivered messages are waiting."""
        queue = self.queue
        if queue is None:
            queue = self.queue = deque()
        if len(queue) + len(self.inflight or ()) >= limit:
            return False
        queue.append(message)
        return True

    def allocate_packet_id(self) -> int:
        """A packet id not used by any message in flight to the client."""
        inflight = self.inflight
        if inflight is None:
            inflight = self.inflight = {}
        packet_id = self.next_packet_id
        while packet_id in inflight:
            packet_id = packet_id % 0xFFFF + 1
        self.next_packet_id = packet_id % 0xFFFF + 1
        return packet_id

    def clear_undelivered(self) -> None:
        """Forget queued and in-flight messages (a clean session ending)."""
        self.queue = None
        self.inflight = None

    def undelivered(self) -> int:
        """How many messages wait to be delivered or acknowledged."""
        return len(self.queue or ()) + len(self.inflight or ())
