"""Roost's MQTT device gateway: the registry of connections and sessions, and its public API.

A :class:`Gateway` owns every :class:`~roost.mqtt.session.MQTTSession` (one per connection, from
TCP or WebSocket) and every :class:`~roost.mqtt.state.SessionState` (per device and client id,
kept between connections for persistent clients). Its API for the rest of Roost:

* ``deliver(device_pk, topic, payload, qos) -> bool`` publishes to the device's sessions whose
  subscriptions match (QoS = min(requested, granted)); QoS 1/2 copies are queued for a persistent
  session that is offline and resent with DUP after a reconnect. False when no session took it.
* ``route(topic, handler)`` registers the handler for device PUBLISHes on a topic a capability
  declared (:class:`~roost.core.devicelink.DeviceTopic`): a state report, a command response, a
  job update. The gateway's :class:`~roost.mqtt.topics.DeviceTopics` table, filled by the
  runtime with every room's declarations, is its ACL; it knows no capability itself.
* ``on_subscribe(hook)`` calls ``hook(identity, topic_filter)`` after a granted SUBSCRIBE (to send
  the current delta or pending jobs).
* ``on_connection(hook)`` calls ``hook(identity, True)`` after a connection's CONNACK and
  ``hook(identity, False)`` when it ends (presence; resending the delta, pending commands and
  jobs to a session that resumed without subscribing again).

Time is injected: ``tick(now)`` runs every timer (keep alive, CONNECT timeout, credential expiry,
will delay, session expiry) in one sweep, which :meth:`Gateway.start` schedules once per
:data:`SWEEP_INTERVAL_S` for the whole gateway instead of a timer per connection.

Refusal decisions (MQTT 5 reason code; MQTT 3.1.1 behaviour, which MQTT 3.1 — protocol name
``MQIsdp``, level 3 — shares). At CONNECT the authenticator's exception decides:
``AuthenticationFailed`` → 0x86, ``PermissionDenied`` → 0x87, anything else → 0x88 (see
:mod:`roost.credentials.authenticator`):

==========================================  =============================  ======================
case                                        MQTT 5                         MQTT 3.1.1
==========================================  =============================  ======================
protocol other than 3.1, 3.1.1 and 5        CONNACK 0x84                   CONNACK 1
address over its failed-credential limit   CONNACK 0x9F (not checked)     CONNACK 3
no / malformed / bad / expired token        CONNACK 0x86                   CONNACK 4
revoked token, deleted device, username     CONNACK 0x87                   CONNACK 5
not the token's device
authenticator or store unavailable          CONNACK 0x88                   CONNACK 3
device holds its most connections           CONNACK 0x97                   CONNACK 5
enhanced auth (authentication method)       CONNACK 0x8C                   n/a
will to a topic the device may not publish  CONNACK 0x90 (will topic not   CONNACK 5 (not
to (checked once authenticated)             accepted by this server)       authorized)
client id too long (> 256)                  CONNACK 0x85                   CONNACK 2
empty client id                             assigned, returned in CONNACK  assigned (clean only)
same (device, client id) connects again     old one: DISCONNECT 0x8E       old one closed
SUBSCRIBE outside the device's topics       SUBACK 0x87 for that filter    SUBACK 0x80
bad filter / $share / over 32 filters       SUBACK 0x8F / 0x9E / 0x97      SUBACK 0x80
PUBLISH to a forbidden topic, QoS 1/2       PUBACK/PUBREC 0x87             connection closed
PUBLISH to a forbidden topic, QoS 0         DISCONNECT 0x87                connection closed
payload refused by ingest                   PUBACK/PUBREC 0x99 + reason,   acknowledged; reasons
                                            and as for 3.1.1               on the rejected topic,
                                                                           and recorded as an
                                                                           event of the device
commit failed (ticket error)                PUBACK/PUBREC 0x80             connection closed (the
                                                                           device resends)
state/command/job topic, no handler yet     PUBACK/PUBREC 0x83             acknowledged, logged
over the device's message rate              DISCONNECT 0x96, not acked     connection closed
over the device's byte rate                 DISCONNECT 0x97, not acked     connection closed
more unacked QoS>0 than Receive Maximum     DISCONNECT 0x93                reading paused
packet over the maximum size                DISCONNECT 0x95                connection closed
malformed packet / protocol error           DISCONNECT 0x81 / 0x82         connection closed
keep alive x 1.5 without a packet           DISCONNECT 0x8D                connection closed
credential revoked (or device deleted)      DISCONNECT 0x87, no will       closed, no will
credential expired during the session       DISCONNECT 0x87, no will       closed, no will
server shutting down                        DISCONNECT 0x8B, no will       closed, no will
==========================================  =============================  ======================

The rejected topic is where a device learns why its message was refused, for every protocol
version: the ingest room declares ``devices/{id}/telemetry/rejected`` (for ``…/telemetry`` and
the bare id) and ``devices/{id}/events/rejected`` (:mod:`roost.telemetry.ingest.mqtt`); the
gateway hands the refusal to the ingest port (``record_refusal``), which publishes it through the
device link.

Abuse limits (:mod:`roost.core.limits`): a PUBLISH over the device's rate is refused before
it is taken, so nothing acknowledged is lost. 0x96 "Message rate too high" is the spec's code for
a client sending messages too fast; for bytes 0x97 "Quota exceeded" (an administrative limit),
which is also the CONNACK code for a device over its connection limit: a retry would not help
until one of its connections ends, unlike 0x9F "Connection rate exceeded", which is what an
address over its failed-credential limit gets (its credential is then not even looked at).

Revocation uses 0x87 "Not authorized": the reason is the credential, and the client should not
simply retry as it would after 0x89 "Server busy". A revoked session's will is not published: the
credential that registered it is no longer trusted. Retained PUBLISHes are taken as ordinary
ones: no client may subscribe to a device's uplink topics, so a retained copy could never be seen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from roost.core import metrics
from roost.core.devicelink import DevicePublish, DeviceTopic, RouteHandler
from roost.core.ingest import CommitTicket, IngestKind, IngestOutcome
from roost.core.limits import source_host
from roost.mqtt import outbound
from roost.mqtt.decoder import MQTTDecoder
from roost.mqtt.host import GatewayConfig
from roost.mqtt.inbound import run_handler
from roost.mqtt.packets import PROTOCOL_V5, Properties, ReasonCode, Will
from roost.mqtt.ports import DeviceAuthenticator, IngestPort, Link
from roost.mqtt.session import MQTTSession
from roost.mqtt.state import PendingWill, SessionState
from roost.mqtt.topics import DeviceTopics

if TYPE_CHECKING:
    from roost.core.device_identity import DeviceIdentity
    from roost.core.limits import DeviceLimits

log = logging.getLogger(__name__)

#: How often the sweep checks keep alives and timers: keep alive is enforced within a second of
#: 1.5 x the interval, and one pass over 10,000 idle connections costs a few milliseconds.
SWEEP_INTERVAL_S: Final = 1.0

SubscribeHook = Callable[["DeviceIdentity", str], None]
ConnectionHook = Callable[["DeviceIdentity", bool], None]

_WILL_TIMER: Final = 1
_EXPIRY_TIMER: Final = 2


class Gateway:
    """Every MQTT connection and session of one Roost process (see the module docstring)."""

    def __init__(
        self,
        authenticator: DeviceAuthenticator,
        ingest: IngestPort,
        config: GatewayConfig | None = None,
        *,
        topics: DeviceTopics | None = None,
        clock: Callable[[], float] = time.monotonic,
        clock_ns: Callable[[], int] = time.time_ns,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.authenticator = authenticator
        self.ingest = ingest
        self.config = config or GatewayConfig()
        self.clock = clock
        self.clock_ns = clock_ns
        self.wall_clock = wall_clock
        self.connections: set[MQTTSession] = set()
        # The device ACL: the topics the capabilities declared (empty: a device may publish
        # nowhere), and the handlers their services bound to the non-ingest ones.
        self.topics = topics if topics is not None else DeviceTopics()
        self.routes: dict[DeviceTopic, RouteHandler] = {}
        self._states: dict[int, dict[str, SessionState]] = {}
        self._timers: list[tuple[float, int, int, SessionState, int]] = []
        self._timer_seq = itertools.count()
        self._subscribe_hooks: list[SubscribeHook] = []
        self._connection_hooks: list[ConnectionHook] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._unsubscribe_revocations: Callable[[], None] | None = None
        # Abuse limits (rates, connections per device, failed credentials per address); None:
        # no limit at all (a gateway built without a Roost, as in the session tests).
        self.limits: DeviceLimits | None = None
        self._connack_base = Properties(
            receive_maximum=self.config.receive_maximum,
            maximum_packet_size=self.config.max_packet_size,
            topic_alias_maximum=self.config.topic_alias_maximum or None,
            shared_subscription_available=False,
        )
        metrics.gauge_source(
            "roost_mqtt_connections",
            "Open MQTT connections (accepted, not yet closed)",
            ("protocol", "transport"),
            self,
            Gateway.connection_counts,
        )

    # -- public API ---------------------------------------------------------------------------

    def open(self, link: Link, peer: str = "") -> MQTTSession:
        """A new connection's session; feed it what the link receives."""
        session = MQTTSession(self, link, peer)
        self.connections.add(session)
        return session

    def route(self, topic: DeviceTopic, handler: RouteHandler) -> None:
        """Handle device PUBLISHes on ``topic`` with ``handler`` (replacing any)."""
        if topic.is_ingest:
            raise ValueError(f"{topic.template} messages go to the ingest service")
        if all(topic is not declared for declared in self.topics.topics):
            raise ValueError(f"{topic.template} is not a declared device topic")
        self.routes[topic] = handler

    def on_subscribe(self, hook: SubscribeHook) -> None:
        """Call ``hook(identity, topic_filter)`` after each granted subscription."""
        self._subscribe_hooks.append(hook)

    def on_connection(self, hook: ConnectionHook) -> None:
        """Call ``hook(identity, up)``: up after each CONNACK, down when the connection ends."""
        self._connection_hooks.append(hook)

    def deliver(
        self,
        device_pk: int,
        topic: str,
        payload: bytes,
        qos: int,
        on_ack: Callable[[], None] | None = None,
    ) -> bool:
        """Publish to the device's matching sessions; True when at least one took it.

        ``on_ack`` runs once when a client acknowledges its copy (see :func:`outbound.deliver`).
        """
        if qos not in (0, 1, 2):
            raise ValueError(f"invalid QoS {qos!r}")
        states = self._states.get(device_pk)
        if not states:
            return False
        return outbound.deliver(
            states, topic, payload, qos, self.config.max_queued_messages, on_ack
        )

    def would_receive(self, device_pk: int, topic: str) -> bool:
        """Whether a session of the device (connected or kept) would receive ``topic``."""
        return any(state.match(topic)[0] >= 0 for state in self._states.get(device_pk, {}).values())

    def is_connected(self, device_pk: int) -> bool:
        """Whether the device holds a live connection to this gateway."""
        return any(
            state.connection is not None for state in self._states.get(device_pk, {}).values()
        )

    def sessions_of(self, device_pk: int) -> list[SessionState]:
        """The device's sessions, connected or kept (for inspection and tests)."""
        return list(self._states.get(device_pk, {}).values())

    def connection_counts(self) -> dict[tuple[str, ...], float]:
        """Accepted connections by protocol version and transport (read when scraped)."""
        counts: dict[tuple[str, ...], float] = {}
        for session in self.connections:
            if session.connected:
                level = metrics.PROTOCOL_NAMES.get(session.level, str(session.level))
                key = (level, metrics.mqtt_transport(session.peer))
                counts[key] = counts.get(key, 0) + 1
        return counts

    def start(self) -> None:
        """Listen for revocations and start the sweep (idempotent; needs a running loop)."""
        if self._sweeper is not None:
            return
        loop = asyncio.get_running_loop()
        self._unsubscribe_revocations = self.authenticator.on_revoked(self.revoked)
        self._sweeper = loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    async def close(self) -> None:
        """Close every connection (v5: DISCONNECT 0x8B) and stop the sweep."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._unsubscribe_revocations is not None:
            self._unsubscribe_revocations()
            self._unsubscribe_revocations = None
        for session in list(self.connections):
            session.kick(ReasonCode.SERVER_SHUTTING_DOWN, "server shutting down", will=False)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def revoked(self, credential_id: str) -> None:
        """Close at once every connection opened with a revoked credential."""
        for session in list(self.connections):
            identity = session.identity
            if identity is not None and identity.credential_id == credential_id:
                session.kick(ReasonCode.NOT_AUTHORIZED, "credential revoked", will=False)

    def admit(self, session: MQTTSession, identity: DeviceIdentity) -> None:
        """Count the session among the device's connections, or raise ``RateLimited`` when the
        device holds the most it may; the session gets its rate meter (None: rates off)."""
        limits = self.limits
        if limits is None or not limits.active:
            return
        use = limits.connect(identity.device_pk)
        session.use = use
        session.meter = use if limits.rates_on else None

    def release(self, session: MQTTSession) -> None:
        """The session no longer counts among its device's connections (idempotent)."""
        use = session.use
        if use is not None:
            session.use = session.meter = None
            if self.limits is not None:
                self.limits.disconnect(use)

    def source_retry_after(self, session: MQTTSession) -> int:
        """Seconds the session's address is refused for failed credential checks (0: not)."""
        limits = self.limits
        return 0 if limits is None else limits.source_retry_after(source_host(session.peer))

    def credential_failed(self, session: MQTTSession) -> None:
        """Count a failed credential check against the session's address."""
        if self.limits is not None:
            self.limits.credential_failed(source_host(session.peer))

    def tick(self, now: float | None = None) -> None:
        """Run every timer due at ``now``: connection checks, will delays, session expiry."""
        now = self.clock() if now is None else now
        for session in list(self.connections):
            session.check_timers(now)
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, state, generation = heapq.heappop(timers)
            if state.generation != generation or state.connection is not None:
                continue
            if kind == _WILL_TIMER:
                pending, state.pending_will = state.pending_will, None
                if pending is not None:
                    self.publish_will(pending.identity, pending.ctx, pending.will)
            else:
                self._end(state)

    async def settle(self) -> None:
        """Wait until no task of the gateway is running (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- what sessions ask --------------------------------------------------------------------

    def new_decoder(self) -> MQTTDecoder:
        """A server-role decoder with the configured packet size limit."""
        return MQTTDecoder(self.config.max_packet_size, role="server")

    def new_client_id(self) -> str:
        """A client id for a v5 client that sent an empty one."""
        return "roost-" + secrets.token_hex(8)

    def connack_properties(self, **fields: Any) -> Properties:
        """The v5 CONNACK properties: the gateway's limits plus this connection's values."""
        extra = {name: value for name, value in fields.items() if value is not None}
        return dataclasses.replace(self._connack_base, **extra) if extra else self._connack_base

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task the gateway keeps a reference to (and logs if it fails)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("MQTT gateway task failed", exc_info=task.exception())

    def record_refusal(
        self, ctx: Any, topic: str, errors: list[dict[str, Any]], recv_ns: int
    ) -> None:
        """Record a refused message as an event of the device and tell the device why (in the
        background; :meth:`IngestPort.record_refusal`)."""
        self.spawn(self.ingest.record_refusal(ctx, topic, errors, recv_ns))

    def subscribed(self, session: MQTTSession, topic_filter: str) -> None:
        """Tell the hooks about a granted subscription."""
        if session.identity is None:
            return
        for hook in self._subscribe_hooks:
            try:
                hook(session.identity, topic_filter)
            except Exception:
                log.exception("subscribe hook failed for %s", topic_filter)

    def connected(self, session: MQTTSession) -> None:
        """A connection was accepted (its CONNACK is written): tell the hooks."""
        session.announced = True
        metrics.mqtt_connected(session.level, session.peer)
        self._connection_event(session, True)

    def _connection_event(self, session: MQTTSession, up: bool) -> None:
        if session.identity is None:
            return
        for hook in self._connection_hooks:
            try:
                hook(session.identity, up)
            except Exception:
                log.exception("connection hook failed for %r", session)

    def attach(self, session: MQTTSession, clean_start: bool, expiry_s: int) -> bool:
        """Bind an authenticated connection to its session; True when an old one is resumed."""
        identity = session.identity
        assert identity is not None
        key = session.client_id
        state = self._states.get(identity.device_pk, {}).get(key)
        if state is not None and state.connection is not None:
            state.connection.kick(
                ReasonCode.SESSION_TAKEN_OVER, "session taken over by a new connection", will=True
            )
            state = self._states.get(identity.device_pk, {}).get(key)
        present = False
        if state is not None:
            if clean_start:
                self._end(state)
                state = None
            else:
                present = True
                state.pending_will = None  # resumed within the will delay: no will
        if state is None:
            state = SessionState(identity.device_pk, key, expiry_s)
            self._states.setdefault(identity.device_pk, {})[key] = state
        state.expiry_s = expiry_s
        state.generation += 1
        state.connection = session
        session.state = state
        return present

    def detach(self, session: MQTTSession, *, will: bool) -> None:
        """A connection ended: keep or drop its session, publish or schedule its will."""
        self.connections.discard(session)
        self.release(session)
        if session.announced:
            session.announced = False
            self._connection_event(session, False)
        state = session.state
        if state is None or state.connection is not session:
            return
        state.connection = None
        state.generation += 1
        last_will = session.will if will else None
        identity = session.identity
        assert identity is not None
        if not state.expiry_s:
            self._end(state)
            if last_will is not None:
                self.publish_will(identity, session.ctx, last_will)
            return
        now = self.clock()
        self._schedule(now + state.expiry_s, _EXPIRY_TIMER, state)
        if last_will is None:
            return
        delay = (
            (last_will.properties.will_delay_interval or 0) if session.level == PROTOCOL_V5 else 0
        )
        if delay:
            state.pending_will = PendingWill(identity, session.ctx, last_will)
            self._schedule(now + min(delay, state.expiry_s), _WILL_TIMER, state)
        else:
            self.publish_will(identity, session.ctx, last_will)

    def _schedule(self, deadline: float, kind: int, state: SessionState) -> None:
        entry = (deadline, next(self._timer_seq), kind, state, state.generation)
        heapq.heappush(self._timers, entry)

    def _end(self, state: SessionState) -> None:
        """A session ends: forget it, and publish a will still waiting out its delay."""
        states = self._states.get(state.device_pk)
        if states is not None and states.get(state.client_id) is state:
            del states[state.client_id]
            if not states:
                del self._states[state.device_pk]
        state.generation += 1
        state.clear_undelivered()
        pending, state.pending_will = state.pending_will, None
        if pending is not None:
            self.publish_will(pending.identity, pending.ctx, pending.will)

    def _sweep(self) -> None:
        try:
            self.tick()
        finally:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    # -- wills --------------------------------------------------------------------------------

    def publish_will(self, identity: DeviceIdentity, ctx: Any, will: Will) -> None:
        """Publish a will as if the device had sent it: same ACL, same ingest or handler."""
        route = self.topics.publish_route(identity.device_id, will.topic)
        if route is None:
            log.warning(
                "will of %s to %r is not an allowed topic; dropped", identity.device_id, will.topic
            )
            return
        recv_ns = self.clock_ns()
        if route.ingest is not None:
            kind = route.ingest
            outcome = self.ingest.try_submit(ctx, kind, will.payload, recv_ns)
            if outcome is None or outcome.busy:
                self.spawn(self._will_slow(ctx, kind, will, recv_ns, outcome))
            else:
                self._will_outcome(ctx, will, outcome, recv_ns)
            return
        handler = self.routes.get(route)
        if handler is None:
            log.info("will of %s on %s: no handler yet; dropped", identity.device_id, will.topic)
            return
        message = DevicePublish(identity, will.topic, will.payload, will.qos, recv_ns)
        self.spawn(run_handler(handler, message, CommitTicket()))

    async def _will_slow(
        self, ctx: Any, kind: IngestKind, will: Will, recv_ns: int, outcome: IngestOutcome | None
    ) -> None:
        while outcome is None or outcome.busy:
            if outcome is None:
                outcome = await self.ingest.submit(ctx, kind, will.payload, recv_ns)
            else:
                await self.ingest.wait_for_capacity()
                outcome = self.ingest.try_submit(ctx, kind, will.payload, recv_ns)
        self._will_outcome(ctx, will, outcome, recv_ns)

    def _will_outcome(self, ctx: Any, will: Will, outcome: IngestOutcome, recv_ns: int) -> None:
        if outcome.errors:
            log.info("will on %s refused: %s", will.topic, outcome.errors[0])
            self.record_refusal(ctx, will.topic, outcome.errors, recv_ns)
