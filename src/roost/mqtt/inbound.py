"""What a connected device sends: PUBLISH (ACL, ingest or a route handler), PUBREL, SUBSCRIBE.

These handlers run inside :class:`~roost.mqtt.session.MQTTSession`'s dispatch; they are kept
apart so that the session module holds the connection's life and this one the message rules.

PUBLISH, by topic (:meth:`roost.mqtt.topics.DeviceTopics.publish_route`: what the capabilities
declared):

* a topic with an ingest kind (telemetry, events, the bare device id) → ``ingest.try_submit``;
  acknowledged (PUBACK / PUBREC) in order once the ticket completes, i.e. once the data is durable;
* any other declared topic (state/reported, commands/{cmd}/response, jobs/{job}/update, ...) →
  the handler registered with ``gateway.route(topic, handler)``, acknowledged once it returns;
* anything else → refused (see :mod:`roost.mqtt.gateway` for every code).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Final

from roost.core import metrics
from roost.core.devicelink import DevicePublish, DeviceTopic, RouteHandler
from roost.core.ingest import CommitTicket, IngestKind, IngestOutcome
from roost.core.limits import MESSAGES_EXCEEDED, exceeded_reason
from roost.errors import InvalidInput, PermissionDenied
from roost.mqtt import flow
from roost.mqtt.encoder import encode
from roost.mqtt.packets import (
    PROTOCOL_V5,
    MQTTProtocolError,
    Pubcomp,
    Publish,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from roost.mqtt.topics import validate_topic_filter
from roost.mqtt.wire import _pack_BBH

if TYPE_CHECKING:
    from roost.mqtt.session import MQTTSession

log = logging.getLogger(__name__)

NOT_SUPPORTED_YET: Final = "not supported yet"


def on_publish(session: MQTTSession, pkt: Publish) -> None:
    """Route one PUBLISH from the device."""
    meter = session.meter
    if meter is not None:
        verdict = meter.take(len(pkt.payload))
        if verdict:
            _over_rate(session, verdict)
            return
    topic = pkt.topic
    if pkt.properties.topic_alias is not None:
        resolved = _resolve_alias(session, pkt)
        if resolved is None:
            return
        topic = resolved
    qos = pkt.qos
    if qos:
        if qos == 2:
            seen = session.state.qos2_in if session.state is not None else None
            if seen is not None and pkt.packet_id in seen:
                # A resend of a QoS 2 message already taken: acknowledge, do not store again
                # (once its first copy is durable: the ack waits on the same ticket).
                session.queue_ack(pkt.packet_id or 0, 2, 0, seen[pkt.packet_id or 0])
                return
        if not flow.count_inflight(session):
            session.close_with(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded")
            return
    if topic is session.last_topic:
        route = session.last_route
    else:
        assert session.identity is not None
        route = session.gateway.topics.publish_route(session.identity.device_id, topic)
        session.last_topic = topic
        session.last_route = route
    if route is None:
        _forbidden(session, pkt, topic)
    elif route.ingest is not None:
        _ingest(session, pkt, topic, route.ingest)
    else:
        _routed(session, pkt, topic, route)


def _over_rate(session: MQTTSession, verdict: int) -> None:
    """The device is over its rate: close before taking the message (it is never acked, so the
    device still holds it). v5 learns why: 0x96 for messages, 0x97 for bytes.

    Messages taken before it are acknowledged first (reading stops meanwhile), so the device
    knows which of them it need not send again.
    """
    code = (
        ReasonCode.MESSAGE_RATE_TOO_HIGH
        if verdict == MESSAGES_EXCEEDED
        else ReasonCode.QUOTA_EXCEEDED
    )
    reason_code = code if session.level == PROTOCOL_V5 else None
    metrics.ingest_refused("mqtt", "rate_limited")
    ticket = session.last_ticket()
    if ticket is None:
        session.close_with(reason_code, exceeded_reason(verdict))
    else:
        session.block(_close_after(session, ticket, reason_code, exceeded_reason(verdict)))


async def _close_after(
    session: MQTTSession, ticket: CommitTicket, code: int | None, reason: str
) -> None:
    """Close once ``ticket`` completes (its acknowledgements have gone out by then)."""
    try:
        await ticket
    except Exception:  # the failure went out with the acknowledgements
        pass
    if not session.closed:
        session.close_with(code, reason)


def _resolve_alias(session: MQTTSession, pkt: Publish) -> str | None:
    alias = pkt.properties.topic_alias or 0
    if alias > session.gateway.config.topic_alias_maximum:
        session.close_with(ReasonCode.TOPIC_ALIAS_INVALID, f"topic alias {alias} out of range")
        return None
    aliases = session.aliases
    if aliases is None:
        aliases = session.aliases = {}
    if pkt.topic:
        aliases[alias] = pkt.topic
        return pkt.topic
    topic = aliases.get(alias)
    if topic is None:
        session.close_with(ReasonCode.PROTOCOL_ERROR, f"unknown topic alias {alias}")
    return topic


def _remember_qos2(session: MQTTSession, packet_id: int, ticket: CommitTicket | None) -> None:
    state = session.state
    if state is not None:
        if state.qos2_in is None:
            state.qos2_in = {}
        state.qos2_in[packet_id] = ticket


def _ack(
    session: MQTTSession,
    pkt: Publish,
    ticket: CommitTicket | None,
    code: int = 0,
    reason: str = "",
    points: int = 0,
) -> None:
    """Acknowledge a QoS 1/2 PUBLISH (in order, once ``ticket`` completes); its ``points``
    count against the connection's budget until then."""
    if not pkt.qos:
        return
    packet_id = pkt.packet_id or 0
    if pkt.qos == 2 and code < 0x80:
        _remember_qos2(session, packet_id, ticket)
    if points:
        flow.charge_points(session, points)
    session.queue_ack(packet_id, pkt.qos, code, ticket, reason or None, points)


def _forbidden(session: MQTTSession, pkt: Publish, topic: str) -> None:
    reason = f"not authorized to publish to {topic!r}"
    metrics.ingest_refused("mqtt", "not_authorized")
    log.info("%r: %s", session, reason)
    if session.level == PROTOCOL_V5:
        if pkt.qos:
            _ack(session, pkt, None, ReasonCode.NOT_AUTHORIZED, reason)
        else:
            session.close_with(ReasonCode.NOT_AUTHORIZED, reason)
    else:
        session.close_with(None, reason)  # 3.1.1 has no negative ack: close (as AWS IoT does)


# -- ingest -----------------------------------------------------------------------------------


def _ingest(session: MQTTSession, pkt: Publish, topic: str, kind: IngestKind) -> None:
    recv_ns = session.recv_ns
    outcome = session.gateway.ingest.try_submit(session.ctx, kind, pkt.payload, recv_ns)
    if outcome is None or outcome.busy:
        session.block(_ingest_slow(session, pkt, topic, kind, recv_ns, outcome))
        return
    metrics.ingest_outcome("mqtt", outcome)
    if outcome.errors:
        _refused(session, pkt, topic, outcome.errors, recv_ns)
    elif pkt.qos:
        _ack(session, pkt, outcome.ticket, points=outcome.accepted + outcome.events)


async def _ingest_slow(
    session: MQTTSession,
    pkt: Publish,
    topic: str,
    kind: IngestKind,
    recv_ns: int,
    outcome: IngestOutcome | None,
) -> None:
    """Submit the hard way: slow work first, or wait until the writer has room (never drop)."""
    ingest = session.gateway.ingest
    ctx = session.ctx
    try:
        while outcome is None or outcome.busy:
            if outcome is None:
                # submit() also brings ``ctx`` up to date after slow work (a sensor created),
                # so later messages of this connection take the fast path again.
                outcome = await ingest.submit(ctx, kind, pkt.payload, recv_ns)
            else:
                await ingest.wait_for_capacity()
                outcome = ingest.try_submit(ctx, kind, pkt.payload, recv_ns)
    except Exception as exc:
        log.warning("%r: ingest failed: %s", session, exc, exc_info=True)
        metrics.ingest_refused("mqtt", "error")
        if session.closed:
            return
        if session.level == PROTOCOL_V5 and pkt.qos:
            _ack(
                session, pkt, None, ReasonCode.UNSPECIFIED_ERROR, "the message could not be stored"
            )
        elif pkt.qos:
            session.close_with(None, "the message could not be stored")
        return
    metrics.ingest_outcome("mqtt", outcome)
    if session.closed:
        return
    if outcome.errors:
        _refused(session, pkt, topic, outcome.errors, recv_ns)
    elif pkt.qos:
        _ack(session, pkt, outcome.ticket, points=outcome.accepted + outcome.events)


def _refused(
    session: MQTTSession, pkt: Publish, topic: str, errors: list[dict[str, Any]], recv_ns: int
) -> None:
    """A payload refused whole: record it for the API and publish why to the device (every
    version, see ``record_refusal``); a v5 client's acknowledgement says it too."""
    session.gateway.record_refusal(session.ctx, topic, errors, recv_ns)
    first = errors[0]
    where = f" {first['field']}" if first.get("field") else ""
    reason = f"item {first.get('index', 0)}{where}: {first.get('message', 'refused')}"
    log.info("%r: refused a message on %s: %s", session, topic, reason)
    if session.level == PROTOCOL_V5:
        _ack(session, pkt, None, ReasonCode.PAYLOAD_FORMAT_INVALID, reason)
    else:
        # No negative ack in 3.1/3.1.1: the device learns why on its rejected topic, and
        # acknowledging stops it resending a message that can never be taken.
        _ack(session, pkt, None)


# -- routed topics (state, commands, jobs) ----------------------------------------------------


def _routed(session: MQTTSession, pkt: Publish, topic: str, route: DeviceTopic) -> None:
    handler = session.gateway.routes.get(route)
    if handler is None:
        log.info("%r: no handler for %s messages yet (topic %s)", session, route.template, topic)
        if session.level == PROTOCOL_V5:
            _ack(session, pkt, None, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, NOT_SUPPORTED_YET)
        else:
            _ack(session, pkt, None)
        return
    assert session.identity is not None
    message = DevicePublish(session.identity, topic, pkt.payload, pkt.qos, session.recv_ns)
    ticket = CommitTicket()
    session.gateway.spawn(run_handler(handler, message, ticket))
    _ack(session, pkt, ticket)


async def run_handler(handler: RouteHandler, message: DevicePublish, ticket: CommitTicket) -> None:
    """Run a route handler; its outcome resolves ``ticket``."""
    try:
        result: Awaitable[None] = handler(message)
        await result
    except (InvalidInput, PermissionDenied) as exc:
        log.info("%s: refused by its handler: %s", message.topic, exc)
        ticket.resolve(exc)
    except Exception as exc:
        log.exception("%s: route handler failed", message.topic)
        ticket.resolve(exc)
    else:
        ticket.resolve()


# -- QoS 2 release, subscriptions -------------------------------------------------------------


def on_pubrel(session: MQTTSession, pkt: Pubrel) -> None:
    """Release a QoS 2 message: forget its packet id, answer PUBCOMP."""
    seen = session.state.qos2_in if session.state is not None else None
    packet_id = pkt.packet_id
    if seen is not None and packet_id in seen:
        del seen[packet_id]
        flow.release_inflight(session, 1)
        session.write(_pack_BBH(0x70, 2, packet_id))
    elif session.level == PROTOCOL_V5:
        session.write(encode(Pubcomp(packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), 5))
    else:
        session.write(_pack_BBH(0x70, 2, packet_id))


def on_subscribe(session: MQTTSession, pkt: Subscribe) -> None:
    """Grant each filter the ACL allows; refuse the others with a SUBACK failure code."""
    state = session.state
    identity = session.identity
    assert state is not None and identity is not None
    config = session.gateway.config
    ids = pkt.properties.subscription_identifiers
    subscription_id = ids[0] if ids else None
    codes: list[int] = []
    granted: list[str] = []
    for sub in pkt.subscriptions:
        topic_filter = sub.topic_filter
        try:
            validate_topic_filter(topic_filter)
        except MQTTProtocolError:
            codes.append(ReasonCode.TOPIC_FILTER_INVALID)
            continue
        if topic_filter.startswith("$share/"):
            codes.append(ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
        elif not session.gateway.topics.may_subscribe(identity.device_id, topic_filter):
            log.info("%r: not authorized to subscribe to %r", session, topic_filter)
            codes.append(ReasonCode.NOT_AUTHORIZED)
        elif len(state.subscriptions or ()) >= config.max_subscriptions and topic_filter not in (
            state.subscriptions or ()
        ):
            codes.append(ReasonCode.QUOTA_EXCEEDED)
        else:
            qos = min(sub.qos, 2)
            state.subscribe(topic_filter, qos, subscription_id)
            codes.append(qos)
            granted.append(topic_filter)
    session.write(encode(Suback(pkt.packet_id, tuple(codes)), session.level))
    for topic_filter in granted:
        session.gateway.subscribed(session, topic_filter)


def on_unsubscribe(session: MQTTSession, pkt: Unsubscribe) -> None:
    """Remove subscriptions; a v5 client learns which did not exist."""
    state = session.state
    assert state is not None
    codes = tuple(
        0 if state.unsubscribe(topic_filter) else ReasonCode.NO_SUBSCRIPTION_EXISTED
        for topic_filter in pkt.topic_filters
    )
    session.write(encode(Unsuback(pkt.packet_id, codes), session.level))
