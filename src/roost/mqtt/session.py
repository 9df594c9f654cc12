"""One MQTT connection as a sans-IO state machine: bytes in, writes / ingest calls / close out.

:class:`MQTTSession` is fed the bytes a connection received (:meth:`MQTTSession.feed`) and acts
through three small ports: the :class:`~roost.mqtt.ports.Link` it writes to and pauses, the ingest
port, and its gateway as a :class:`~roost.mqtt.host.SessionHost` (authentication, the session
registry, route handlers), never importing the gateway. It never touches a socket or the clock
itself (the gateway's clocks are injected), so the tests drive it with byte strings.

Life of a connection: CONNECT is authenticated asynchronously (reading is paused meanwhile, and
packets that arrived behind it wait in a backlog), then the gateway attaches the connection to its
(device, client id) session and CONNACK goes out. A PUBLISH to telemetry/events is handed to
``ingest.try_submit`` on the spot; its PUBACK/PUBREC waits in an ordered queue until the commit
ticket completes, so acknowledgements leave in the order the PUBLISHes came and only once the data
is durable. Whatever must wait (slow submit, a busy writer, authentication) *blocks* the session:
reading pauses, a short task does the awaiting, then the backlog is processed in order.

Refusal decisions (MQTT 5 reason codes; 3.1.1 equivalents in brackets) are listed in
:mod:`roost.mqtt.gateway`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Final

from roost.core.ingest import CommitTicket
from roost.errors import AuthenticationFailed, InvalidInput, PermissionDenied, RateLimited
from roost.mqtt import flow, inbound, outbound
from roost.mqtt.encoder import encode
from roost.mqtt.flow import PAUSE_BLOCKED, PAUSE_WRITING
from roost.mqtt.packets import (
    EMPTY_PROPERTIES,
    PROTOCOL_V5,
    PROTOCOL_V31,
    Auth,
    Connack,
    Connect,
    Disconnect,
    MQTTProtocolError,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    UnsupportedProtocolVersion,
    Will,
)
from roost.mqtt.wire import _pack_BBH

if TYPE_CHECKING:
    from roost.core.device_identity import DeviceIdentity
    from roost.core.limits import DeviceUse
    from roost.mqtt.host import SessionHost
    from roost.mqtt.ports import Link
    from roost.mqtt.state import SessionState

log = logging.getLogger(__name__)


_PINGRESP: Final = b"\xd0\x00"
_ACK_FIRST: Final = (0, 0x40, 0x50)  # PUBACK / PUBREC first byte by QoS

# Ack queue entry fields: [packet id, qos, reason code, ticket or None, reason string or None,
# points the acknowledgement releases].
_PID, _QOS, _CODE, _TICKET, _REASON, _POINTS = range(6)


def error_reason_code(error: BaseException) -> int:
    """The MQTT 5 reason code for a failed ticket or route handler."""
    if isinstance(error, InvalidInput):
        return ReasonCode.PAYLOAD_FORMAT_INVALID
    if isinstance(error, PermissionDenied):
        return ReasonCode.NOT_AUTHORIZED
    return ReasonCode.UNSPECIFIED_ERROR


class MQTTSession:
    """The protocol state of one connection (see the module docstring)."""

    __slots__ = (
        "_acks",
        "aliases",
        "announced",
        "_backlog",
        "_client_max_packet",
        "_client_receive_max",
        "_ctx",
        "_decoder",
        "_deadline",
        "gateway",
        "inflight_in",
        "_keep_alive",
        "last_route",
        "_last_rx",
        "last_topic",
        "_link",
        "_paused",
        "unacked_points",
        "_pending_error",
        "_problem_info",
        "recv_ns",
        "_watched",
        "client_id",
        "closed",
        "identity",
        "level",
        "meter",
        "opened_at",
        "peer",
        "state",
        "use",
        "will",
    )

    def __init__(self, gateway: SessionHost, link: Link, peer: str = "") -> None:
        self.gateway = gateway
        self._link = link
        self.peer = peer
        self._decoder = gateway.new_decoder()
        self.opened_at = self._last_rx = gateway.clock()
        self.recv_ns = 0
        self.level = 0  # protocol level, known once CONNECT arrived
        self.closed = False
        # The will from CONNECT (the CONNECT itself is not kept: it holds the token).
        self.will: Will | None = None
        self.identity: DeviceIdentity | None = None
        self.client_id = ""
        self.state: SessionState | None = None
        self._ctx: Any = None
        self._paused = 0
        self._backlog: deque[Packet] | None = None
        self._pending_error: MQTTProtocolError | None = None
        # Acknowledgements waiting for durability, in receipt order (made on first use: a deque
        # is ~600 bytes, and an idle connection never needs one).
        self._acks: deque[list[Any]] | None = None
        self._watched: CommitTicket | None = None
        self.inflight_in = 0  # QoS 1/2 PUBLISHes not acknowledged yet (see roost.mqtt.flow)
        self.unacked_points = 0  # their points
        self._keep_alive = 0.0  # seconds of silence tolerated (1.5 x keep alive), 0: none
        self._deadline = 0.0  # when the credential expires (gateway clock), 0: never
        self._problem_info = True
        self._client_receive_max = 0
        self._client_max_packet = 0
        self.aliases: dict[int, str] | None = None
        self.last_topic: str | None = None
        self.last_route: Any = None
        # The gateway told its connection hooks this connection is up (and must say when down).
        self.announced = False
        # The device's use counted by the abuse limits (while admitted), and its rate meter
        # (None when no rate limit is set: PUBLISH then skips the check).
        self.use: DeviceUse | None = None
        self.meter: DeviceUse | None = None

    def __repr__(self) -> str:
        who = self.identity.device_id if self.identity else "unauthenticated"
        return f"<MQTTSession {who} client_id={self.client_id!r} peer={self.peer}>"

    @property
    def connected(self) -> bool:
        """True once CONNACK accepted the connection, until it closes."""
        return self.state is not None and not self.closed

    @property
    def ctx(self) -> Any:
        """The device's ingest context (None before authentication)."""
        return self._ctx

    @ctx.setter
    def ctx(self, ctx: Any) -> None:
        self._ctx = ctx

    # -- bytes in -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Process bytes received from the peer."""
        if self.closed:
            return
        gateway = self.gateway
        self._last_rx = gateway.clock()
        self.recv_ns = gateway.clock_ns()
        try:
            packets = self._decoder.feed(data)
        except MQTTProtocolError as exc:
            self._pending_error = exc
            packets = exc.packets
        if self._backlog is not None:
            self._backlog.extend(packets)
            return
        self._process(packets)
        if self._backlog is None and self._pending_error is not None:
            self._protocol_error(self._pending_error)

    def _process(self, packets: Iterable[Packet]) -> None:
        it = iter(packets)
        handlers = _HANDLERS
        for pkt in it:
            if self.closed:
                return
            handlers[type(pkt)](self, pkt)
            if self._backlog is not None:
                self._backlog.extend(it)
                return

    def connection_lost(self) -> None:
        """The peer went away (or the socket failed): an ungraceful end, the will goes out."""
        if not self.closed:
            log.debug("%r: connection lost", self)
            self._shutdown(will=True)

    def writing_paused(self, paused: bool) -> None:
        """The link's outgoing buffer went over (True) or back under (False) its high mark."""
        if paused:
            self.pause(PAUSE_WRITING)
        else:
            self.resume(PAUSE_WRITING)

    def check_timers(self, now: float) -> None:
        """Close the connection if CONNECT, keep alive or the credential ran out at ``now``."""
        if self.closed:
            return
        if self.state is None:
            if now - self.opened_at > self.gateway.config.connect_timeout_s:
                log.info("%r: not connected in time, closing", self)
                self._close(None, will=False)
            return
        # While reading is paused the silence is ours (pushing back), not the client's.
        if self._keep_alive and not self._paused and now - self._last_rx > self._keep_alive:
            log.info("%r: keep alive timeout", self)
            self._close(ReasonCode.KEEP_ALIVE_TIMEOUT, will=True)
        elif self._deadline and now >= self._deadline:
            log.info("%r: credential expired", self)
            self._close(ReasonCode.NOT_AUTHORIZED, will=False, reason="credential expired")

    # -- flow control -------------------------------------------------------------------------

    def pause(self, reason: int) -> None:
        """Stop reading for ``reason`` (a PAUSE_* bit of :mod:`roost.mqtt.flow`)."""
        if not self._paused and not self.closed:
            self._link.pause_reading()
        self._paused |= reason

    def resume(self, reason: int) -> None:
        """``reason`` is gone: read again once no other reason is left."""
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and not self.closed:
                self._last_rx = self.gateway.clock()
                self._link.resume_reading()

    def _block(self, work: Coroutine[Any, Any, None]) -> None:
        """Stop processing until ``work`` is done; later packets wait in the backlog."""
        self._backlog = deque()
        self.pause(PAUSE_BLOCKED)
        self.gateway.spawn(self._blocked_on(work))

    async def _blocked_on(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:
            log.exception("%r: unexpected error, closing", self)
            self._close(ReasonCode.UNSPECIFIED_ERROR, will=True)
        if self.closed:
            return
        while self._backlog is not None:
            backlog, self._backlog = self._backlog, None
            self._process(backlog)
            if self.closed:
                return
            if self._backlog is not None:
                return  # blocked again: that task continues
        if self._pending_error is not None:
            self._protocol_error(self._pending_error)
        else:
            self.resume(PAUSE_BLOCKED)

    # -- closing ------------------------------------------------------------------------------

    def _protocol_error(self, exc: MQTTProtocolError) -> None:
        code = exc.reason_code
        log.info("%r: %s", self, exc)
        if self.state is not None:
            self._close(code, will=True, reason=str(exc))
            return
        # Before CONNACK: answer with a refusing CONNACK where the protocol allows one.
        if isinstance(exc, UnsupportedProtocolVersion):
            connack = Connack(False, exc.connack_reason_code)
            self._link.write(encode(connack, exc.response_protocol_level))
        elif self._decoder.protocol_level == PROTOCOL_V5 and code in _CONNACK_ERRORS:
            self._link.write(encode(Connack(False, code), PROTOCOL_V5))
        elif code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID:
            self._link.write(encode(Connack(False, 2), 4))
        self._close(None, will=False)

    def _close(self, code: int | None, *, will: bool, reason: str | None = None) -> None:
        """Close from the server side, telling a v5 client why (``code`` None: say nothing)."""
        if self.closed:
            return
        if code is not None and self.level == PROTOCOL_V5 and self.state is not None:
            props = EMPTY_PROPERTIES
            if reason and self._problem_info:
                props = Properties(reason_string=reason[:200])
            self._link.write(encode(Disconnect(code, props), PROTOCOL_V5))
        self._link.close()
        self._shutdown(will)

    def kick(self, code: int, reason: str, *, will: bool) -> None:
        """Close on the gateway's behalf (takeover, revocation, shutdown)."""
        log.info("%r: closing: %s", self, reason)
        self._close(code, will=will, reason=reason)

    def _shutdown(self, will: bool) -> None:
        self.closed = True
        self._acks = None
        self._backlog = None
        self.gateway.detach(self, will=will)

    # -- CONNECT ------------------------------------------------------------------------------

    def _refuse(self, code: int, reason: str) -> None:
        log.info("%r: CONNECT refused (0x%02X): %s", self, code, reason)
        props = EMPTY_PROPERTIES
        if self.level == PROTOCOL_V5 and self._problem_info:
            props = Properties(reason_string=reason[:200])
        self._link.write(encode(Connack(False, code, props), self.level))
        self._close(None, will=False)

    def _on_connect(self, pkt: Connect) -> None:
        self.level = pkt.protocol_level
        props = pkt.properties
        if props.request_problem_information is False:
            self._problem_info = False
        if props.authentication_method is not None:
            self._refuse(
                ReasonCode.BAD_AUTHENTICATION_METHOD, "enhanced authentication is not supported"
            )
            return
        client_id = pkt.client_id
        if len(client_id) > self.gateway.config.max_client_id_length:
            self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "client identifier too long")
            return
        self._block(self._authenticate(pkt))

    async def _authenticate(self, pkt: Connect) -> None:
        gateway = self.gateway
        wait = gateway.source_retry_after(self)
        if wait and not self.closed:
            # Refused without looking at the credential: that is what stops the guessing.
            self._refuse(
                ReasonCode.CONNECTION_RATE_EXCEEDED,
                f"too many failed credential checks from this address; retry in {wait} s",
            )
            return
        try:
            identity = await gateway.authenticator.authenticate_mqtt(
                pkt.username, pkt.password, self._link.peer_certificate()
            )
        except AuthenticationFailed as exc:
            gateway.credential_failed(self)
            if not self.closed:
                self._refuse(ReasonCode.BAD_USER_NAME_OR_PASSWORD, exc.detail)
            return
        except PermissionDenied as exc:
            gateway.credential_failed(self)
            if not self.closed:
                self._refuse(ReasonCode.NOT_AUTHORIZED, exc.detail)
            return
        except Exception as exc:
            log.warning("%r: authentication unavailable: %s", self, exc)
            if not self.closed:
                self._refuse(ReasonCode.SERVER_UNAVAILABLE, "authentication is unavailable")
            return
        if self.closed:
            return
        will = pkt.will
        if will and gateway.topics.publish_route(identity.device_id, will.topic) is None:
            # Said now, not dropped when the connection ends. MQTT 5's 0x90 in a CONNACK: "the Will
            # Topic Name is not malformed, but is not accepted by this Server" (3.1.1: 5).
            self._refuse(ReasonCode.TOPIC_NAME_INVALID, f"will topic {will.topic!r} not allowed")
            return
        try:
            # Counted before the await below, released by detach however the session ends.
            gateway.admit(self, identity)
            ctx = await gateway.ingest.device_context(identity)
        except RateLimited as exc:
            # 3.1.1 has no quota code; 5 ("not authorized") tells the client not to hammer.
            self._refuse(ReasonCode.QUOTA_EXCEEDED, exc.detail)
            return
        except PermissionDenied as exc:
            if not self.closed:
                self._refuse(ReasonCode.NOT_AUTHORIZED, exc.detail)
            return
        except Exception as exc:
            log.warning("%r: authentication unavailable: %s", self, exc)
            if not self.closed:
                self._refuse(ReasonCode.SERVER_UNAVAILABLE, "authentication is unavailable")
            return
        if self.closed:
            return
        self._accept(pkt, identity, ctx)

    def _accept(self, pkt: Connect, identity: DeviceIdentity, ctx: Any) -> None:
        gateway = self.gateway
        config = gateway.config
        props = pkt.properties
        v5 = self.level == PROTOCOL_V5
        self.identity = identity
        self._ctx = ctx
        assigned = None
        client_id = pkt.client_id
        if not client_id:
            client_id = assigned = gateway.new_client_id()
        self.client_id = client_id
        # Keep alive: 0 or more than the maximum means the maximum (as AWS IoT does).
        keep_alive = pkt.keep_alive
        server_keep_alive = None
        if not keep_alive or keep_alive > config.max_keep_alive_s:
            keep_alive = config.max_keep_alive_s
            server_keep_alive = keep_alive
        self._keep_alive = keep_alive * 1.5
        if identity.expires_at is not None:
            left = identity.expires_at.timestamp() - gateway.wall_clock()
            self._deadline = gateway.clock() + max(left, 0.0)
        if v5:
            requested = props.session_expiry_interval or 0
            expiry = min(requested, config.max_session_expiry_s)
        else:
            requested = expiry = 0 if pkt.clean_start else config.max_session_expiry_s
        self._client_receive_max = props.receive_maximum or (
            0xFFFF if v5 else config.outbound_inflight_v311
        )
        self._client_max_packet = props.maximum_packet_size or 0
        self.will = pkt.will
        present = gateway.attach(self, pkt.clean_start, expiry)
        if v5:
            connack_props = gateway.connack_properties(
                assigned_client_identifier=assigned,
                server_keep_alive=server_keep_alive,
                session_expiry_interval=expiry if expiry != requested else None,
            )
            self._link.write(encode(Connack(present, 0, connack_props), PROTOCOL_V5))
        else:  # MQTT 3.1's CONNACK has no session present flag (that byte is reserved there)
            told = present and self.level != PROTOCOL_V31
            self._link.write(b"\x20\x02\x01\x00" if told else b"\x20\x02\x00\x00")
        log.debug("%r: connected (session present: %s)", self, present)
        outbound.resume(self)
        gateway.connected(self)

    # -- acknowledgements ---------------------------------------------------------------------

    def queue_ack(
        self,
        packet_id: int,
        qos: int,
        code: int = 0,
        ticket: CommitTicket | None = None,
        reason: str | None = None,
        points: int = 0,
    ) -> None:
        """Acknowledge a QoS 1/2 PUBLISH once ``ticket`` completes, after every earlier one."""
        acks = self._acks
        if acks is None:
            acks = self._acks = deque()
        acks.append([packet_id, qos, code, ticket, reason, points])
        if ticket is not None and not ticket.done:
            if ticket is not self._watched:
                self._watched = ticket
                ticket.add_done_callback(lambda error: self._ticket_done(ticket, error))
            return
        if len(acks) == 1:
            self._flush_acks()

    def last_ticket(self) -> CommitTicket | None:
        """The ticket the newest waiting acknowledgement waits on (None: none waits)."""
        for entry in reversed(self._acks or ()):
            ticket = entry[_TICKET]
            if ticket is not None and not ticket.done:
                return ticket  # type: ignore[no-any-return]
        return None

    def _ticket_done(self, ticket: CommitTicket, error: BaseException | None) -> None:
        if self.closed:
            return
        if error is not None:
            code = error_reason_code(error)
            state = self.state
            for entry in self._acks or ():
                if entry[_TICKET] is ticket and not entry[_CODE]:
                    entry[_CODE] = code
                    entry[_REASON] = str(error) or "the message could not be stored"
                    if entry[_QOS] == 2 and state is not None and state.qos2_in is not None:
                        state.qos2_in.pop(entry[_PID], None)
            if self.level != PROTOCOL_V5 and code == ReasonCode.UNSPECIFIED_ERROR:
                # 3.1.1 has no negative acknowledgement: close, so the device sends it again.
                log.warning("%r: a message could not be stored (%s); closing", self, error)
                self._close(None, will=False)
                return
        self._flush_acks()

    def _flush_acks(self) -> None:
        acks = self._acks
        if not acks:
            return
        out: list[bytes] = []
        v5 = self.level == PROTOCOL_V5
        released = points = 0
        while acks:
            entry = acks[0]
            ticket = entry[_TICKET]
            if ticket is not None and not ticket.done:
                break
            acks.popleft()
            packet_id, qos, code = entry[_PID], entry[_QOS], entry[_CODE]
            points += entry[_POINTS]
            if not code or not v5:
                out.append(_pack_BBH(_ACK_FIRST[qos], 2, packet_id))
            else:
                reason = entry[_REASON]
                props = (
                    Properties(reason_string=reason[:200])
                    if reason and self._problem_info
                    else EMPTY_PROPERTIES
                )
                cls = Puback if qos == 1 else Pubrec
                out.append(encode(cls(packet_id, code, props), PROTOCOL_V5))
            if qos == 1 or code >= 0x80:
                released += 1
        if out:
            self._link.write(out[0] if len(out) == 1 else b"".join(out))
        if released:
            flow.release_inflight(self, released)
        if points:
            flow.release_points(self, points)

    def write(self, data: bytes) -> None:
        """Send bytes to the peer (used by the gateway's outbound delivery)."""
        if not self.closed:
            self._link.write(data)

    @property
    def problem_info(self) -> bool:
        """Whether the client accepts reason strings on acknowledgements."""
        return self._problem_info

    @property
    def client_limits(self) -> tuple[int, int]:
        """The client's Receive Maximum and Maximum Packet Size (0: no limit)."""
        return self._client_receive_max, self._client_max_packet

    def block(self, work: Coroutine[Any, Any, None]) -> None:
        """Stop reading and processing until ``work`` is done (used by the inbound handlers)."""
        self._block(work)

    def close_with(self, code: int | None, reason: str, *, will: bool = True) -> None:
        """Close because of the peer's behaviour (a v5 client is told ``code``)."""
        log.info("%r: closing (0x%02X): %s", self, code or 0, reason)
        self._close(code, will=will, reason=reason)

    def _on_pingreq(self, pkt: Packet) -> None:
        self._link.write(_PINGRESP)

    def _on_disconnect(self, pkt: Packet) -> None:
        assert isinstance(pkt, Disconnect)
        will = False
        if self.level == PROTOCOL_V5:
            expiry = pkt.properties.session_expiry_interval
            state = self.state
            if expiry is not None and state is not None:
                if expiry and not state.expiry_s:
                    self._close(
                        ReasonCode.PROTOCOL_ERROR,
                        will=True,
                        reason="session expiry was 0 at CONNECT",
                    )
                    return
                state.expiry_s = min(expiry, self.gateway.config.max_session_expiry_s)
            will = pkt.reason_code == ReasonCode.DISCONNECT_WITH_WILL_MESSAGE
        log.debug("%r: DISCONNECT (will: %s)", self, will)
        self._link.close()
        self._shutdown(will)

    def _on_auth(self, pkt: Packet) -> None:
        self._close(
            ReasonCode.PROTOCOL_ERROR, will=True, reason="AUTH without an authentication method"
        )

    def _unexpected(self, pkt: Packet) -> None:  # pragma: no cover - the decoder refuses these
        self._close(ReasonCode.PROTOCOL_ERROR, will=True, reason=f"unexpected {type(pkt).__name__}")


#: CONNACK reason codes a decoding error before CONNACK can be reported with (MQTT 5).
_CONNACK_ERRORS: Final = frozenset(
    {ReasonCode.MALFORMED_PACKET, ReasonCode.PROTOCOL_ERROR, ReasonCode.PACKET_TOO_LARGE,
     ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, ReasonCode.TOPIC_NAME_INVALID}
)  # fmt: skip

#: Packet type → handler; PUBLISH and the subscription/acknowledgement packets are handled in
#: :mod:`roost.mqtt.inbound` and :mod:`roost.mqtt.outbound`.
_HANDLERS: Final[dict[type[Any], Callable[[MQTTSession, Any], None]]] = {
    Connect: MQTTSession._on_connect,
    Publish: inbound.on_publish,
    Puback: outbound.on_puback,
    Pubrec: outbound.on_pubrec,
    Pubrel: inbound.on_pubrel,
    Pubcomp: outbound.on_pubcomp,
    Subscribe: inbound.on_subscribe,
    Unsubscribe: inbound.on_unsubscribe,
    Pingreq: MQTTSession._on_pingreq,
    Disconnect: MQTTSession._on_disconnect,
    Auth: MQTTSession._on_auth,
    Connack: MQTTSession._unexpected,
    Suback: MQTTSession._unexpected,
    Unsuback: MQTTSession._unexpected,
    Pingresp: MQTTSession._unexpected,
}
