"""Server → device delivery: QoS 0 at once, QoS 1/2 through a session's queue and window.

:func:`deliver` is what ``Gateway.deliver`` runs: it finds the device's sessions (connected or
kept for a persistent client) whose subscriptions match, and sends each a copy at
``min(requested QoS, granted QoS)``. QoS 1/2 copies wait in the session's bounded queue until the
client's Receive Maximum leaves room, stay in flight until PUBACK (or PUBREC → PUBREL → PUBCOMP),
and are sent again with the DUP flag when the session resumes on a new connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from roost.mqtt.encoder import encode
from roost.mqtt.packets import (
    EMPTY_PROPERTIES,
    PROTOCOL_V5,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
)
from roost.mqtt.state import PHASE_PUBLISHED, PHASE_RELEASED, OutboundMessage, SessionState
from roost.mqtt.wire import _pack_BBH

if TYPE_CHECKING:
    from roost.mqtt.session import MQTTSession

log = logging.getLogger(__name__)


def deliver(
    states: dict[str, SessionState],
    topic: str,
    payload: bytes,
    qos: int,
    queue_limit: int,
    on_ack: Callable[[], None] | None = None,
) -> bool:
    """Send to every session in ``states`` subscribed to ``topic``; True if any took it.

    ``on_ack`` runs once, when the first client acknowledges its copy (at QoS 0: when a copy is
    written to a live connection, which is all QoS 0 can tell).
    """
    taken = False
    if on_ack is not None:
        on_ack = _once(on_ack)
    for state in list(states.values()):
        granted, ids = state.match(topic)
        if granted < 0:
            continue
        effective = min(qos, granted)
        session = state.connection
        live = session is not None and session.connected
        if not effective:
            if live:
                assert session is not None
                data = _publish_bytes(session, topic, payload, 0, None, False, ids)
                if data is not None:
                    session.write(data)
                    taken = True
                    if on_ack is not None:
                        on_ack()
                        on_ack = None
            continue
        if not state.enqueue(OutboundMessage(topic, payload, effective, ids, on_ack), queue_limit):
            log.warning(
                "session %r of device %s has %d undelivered messages; refusing one for %s",
                state.client_id,
                state.device_pk,
                state.undelivered(),
                topic,
            )
            continue
        taken = True
        if live:
            assert session is not None
            pump(session)
    return taken


def _once(callback: Callable[[], None]) -> Callable[[], None]:
    called = False

    def once() -> None:
        nonlocal called
        if not called:
            called = True
            callback()

    return once


def _publish_bytes(
    session: MQTTSession,
    topic: str,
    payload: bytes,
    qos: int,
    packet_id: int | None,
    dup: bool,
    subscription_ids: tuple[int, ...],
) -> bytes | None:
    """Encode a PUBLISH for this client, or None (logged) when it exceeds its packet limit."""
    props = EMPTY_PROPERTIES
    if subscription_ids and session.level == PROTOCOL_V5:
        props = Properties(subscription_identifiers=subscription_ids)
    data = encode(Publish(topic, payload, qos, False, dup, packet_id, props), session.level)
    max_packet = session.client_limits[1]
    if max_packet and len(data) > max_packet:
        log.warning(
            "%r: dropping a %d-byte message for %s: the client's maximum packet size is %d",
            session,
            len(data),
            topic,
            max_packet,
        )
        return None
    return data


def pump(session: MQTTSession) -> None:
    """Move queued QoS 1/2 messages in flight while the client's Receive Maximum allows."""
    state = session.state
    if state is None or not state.queue or session.closed:
        return
    queue = state.queue
    if state.inflight is None:
        state.inflight = {}
    inflight = state.inflight
    receive_max = session.client_limits[0]
    out: list[bytes] = []
    while queue and len(inflight) < receive_max:
        message = queue.popleft()
        packet_id = state.allocate_packet_id()
        data = _publish_bytes(
            session, message.topic, message.payload, message.qos, packet_id, False,
            message.subscription_ids,
        )  # fmt: skip
        if data is None:
            continue
        inflight[packet_id] = message
        out.append(data)
    if out:
        session.write(b"".join(out))


def resume(session: MQTTSession) -> None:
    """After CONNACK: resend what was in flight (DUP set, or PUBREL), then send the queue."""
    state = session.state
    if state is None:
        return
    if state.inflight:
        out: list[bytes] = []
        for packet_id, message in list(state.inflight.items()):
            if message.phase == PHASE_RELEASED:
                out.append(_pack_BBH(0x62, 2, packet_id))
                continue
            data = _publish_bytes(
                session, message.topic, message.payload, message.qos, packet_id, True,
                message.subscription_ids,
            )  # fmt: skip
            if data is None:
                del state.inflight[packet_id]
            else:
                out.append(data)
        if out:
            session.write(b"".join(out))
    pump(session)


def on_puback(session: MQTTSession, pkt: Puback) -> None:
    """The client acknowledged a QoS 1 message."""
    state = session.state
    if state is not None and state.inflight:
        message = state.inflight.get(pkt.packet_id)
        if message is not None and message.qos == 1:
            del state.inflight[pkt.packet_id]
            message.acknowledged()
            pump(session)


def on_pubrec(session: MQTTSession, pkt: Pubrec) -> None:
    """The client received a QoS 2 message: release it (or drop it if the client refused it)."""
    state = session.state
    inflight = state.inflight if state is not None else None
    message = inflight.get(pkt.packet_id) if inflight else None
    if message is None or message.qos != 2:
        code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if session.level == PROTOCOL_V5 else 0
        session.write(encode(Pubrel(pkt.packet_id, code), session.level))
        return
    assert inflight is not None
    if pkt.reason_code >= 0x80:
        del inflight[pkt.packet_id]
        pump(session)
        return
    message.phase = PHASE_RELEASED
    session.write(_pack_BBH(0x62, 2, pkt.packet_id))


def on_pubcomp(session: MQTTSession, pkt: Pubcomp) -> None:
    """The client completed a QoS 2 delivery."""
    state = session.state
    if state is not None and state.inflight:
        message = state.inflight.get(pkt.packet_id)
        if message is not None and message.phase == PHASE_RELEASED:
            del state.inflight[pkt.packet_id]
            message.acknowledged()
            pump(session)


__all__ = ["PHASE_PUBLISHED", "deliver", "pump", "resume"]
