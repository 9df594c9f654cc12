"""MQTT 3.1 / 3.1.1 / 5.0 encoder: packet objects out as bytes for a given protocol level.

Encoding to 3.1.1 silently drops what that version cannot express; see :mod:`roost.mqtt.codec`.
MQTT 3.1 (level 3) encodes as 3.1.1 but for CONNECT's protocol name (``MQIsdp``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from roost.mqtt.packets import (
    EMPTY_PROPERTIES,
    PROTOCOL_V5,
    PROTOCOL_V31,
    PROTOCOL_V311,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    v311_connack_return_code,
)
from roost.mqtt.wire import (
    _BYTE,
    _P_ACK,
    _P_AUTH,
    _P_CONNACK,
    _P_CONNECT,
    _P_DISCONNECT,
    _P_PUBLISH,
    _P_SUBSCRIBE,
    _P_UNSUBSCRIBE,
    _P_WILL,
    _check_packet_id_out,
    _check_reason_out,
    _check_u16,
    _enc_bin,
    _enc_properties,
    _enc_str,
    _frame,
    _is_empty,
    _pack_BB,
    _pack_BBH,
    _pack_H,
    _varint,
)


def _check_level(level: int) -> bool:
    """Validate a protocol level; return whether it is MQTT 5."""
    if level == PROTOCOL_V5:
        return True
    if level == PROTOCOL_V311 or level == PROTOCOL_V31:
        return False
    raise ValueError(f"unsupported protocol level {level!r}")


def _enc_connect(pk: Connect, level: int) -> bytes:
    if pk.protocol_level != level:
        raise ValueError("Connect.protocol_level differs from the requested protocol level")
    v5 = _check_level(level)
    will = pk.will
    flags = 0x02 if pk.clean_start else 0
    if pk.username is not None:
        flags |= 0x80
    if pk.password is not None:
        if pk.username is None and not v5:
            raise ValueError("MQTT 3.1.1 forbids a password without a user name")
        flags |= 0x40
    if will is not None:
        if will.qos not in (0, 1, 2):
            raise ValueError(f"invalid will QoS {will.qos}")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    parts = [
        b"\x00\x06MQIsdp" if level == PROTOCOL_V31 else b"\x00\x04MQTT",
        _pack_BB(level, flags),
        _pack_H(_check_u16(pk.keep_alive, "keep_alive")),
    ]
    if v5:
        parts.append(_enc_properties(pk.properties, _P_CONNECT))
    parts.append(_enc_str(pk.client_id))
    if will is not None:
        if v5:
            parts.append(_enc_properties(will.properties, _P_WILL))
        parts.append(_enc_str(will.topic))
        parts.append(_enc_bin(will.payload))
    if pk.username is not None:
        parts.append(_enc_str(pk.username))
    if pk.password is not None:
        parts.append(_enc_bin(pk.password))
    return _frame(0x10, b"".join(parts))


def _enc_connack(pk: Connack, level: int) -> bytes:
    flags = 1 if pk.session_present else 0
    if not _check_level(level):
        code = v311_connack_return_code(_check_reason_out(pk.reason_code))
        return _pack_BBH(0x20, 2, (flags << 8) | code)
    code = _check_reason_out(pk.reason_code)
    body = _pack_BB(flags, code) + _enc_properties(pk.properties, _P_CONNACK)
    return _frame(0x20, body)


def _enc_publish(pk: Publish, level: int) -> bytes:
    raw = pk.topic.encode("utf-8")
    tlen = len(raw)
    if tlen > 0xFFFF:
        raise ValueError("topic longer than 65535 bytes")
    qos = pk.qos
    first = 0x30 | (qos << 1)
    if pk.retain:
        first |= 0x01
    if qos:
        if qos != 1 and qos != 2:
            raise ValueError(f"invalid QoS {qos!r}")
        if pk.dup:
            first |= 0x08
        head = _pack_H(tlen) + raw + _pack_H(_check_packet_id_out(pk.packet_id))
    elif pk.dup:
        raise ValueError("DUP must be 0 for QoS 0")
    else:
        head = _pack_H(tlen) + raw
    if level == PROTOCOL_V5:
        props = pk.properties
        head += b"\x00" if props is EMPTY_PROPERTIES else _enc_properties(props, _P_PUBLISH)
    elif level != PROTOCOL_V311 and level != PROTOCOL_V31:
        raise ValueError(f"unsupported protocol level {level!r}")
    payload = pk.payload
    size = len(head) + len(payload)
    if size < 0x80:
        return b"".join((_pack_BB(first, size), head, payload))
    return b"".join((_BYTE[first], _varint(size), head, payload))


def _enc_ack(first: int, pk: Puback | Pubrec | Pubrel | Pubcomp, level: int) -> bytes:
    packet_id = _check_packet_id_out(pk.packet_id)
    empty = _is_empty(pk.properties)
    if not _check_level(level) or (not pk.reason_code and empty):
        return _pack_BBH(first, 2, packet_id)
    code = _BYTE[_check_reason_out(pk.reason_code)]
    if empty:
        return _pack_BBH(first, 3, packet_id) + code
    body = _pack_H(packet_id) + code + _enc_properties(pk.properties, _P_ACK)
    return _frame(first, body)


def _enc_puback(pk: Puback, level: int) -> bytes:
    return _enc_ack(0x40, pk, level)


def _enc_pubrec(pk: Pubrec, level: int) -> bytes:
    return _enc_ack(0x50, pk, level)


def _enc_pubrel(pk: Pubrel, level: int) -> bytes:
    return _enc_ack(0x62, pk, level)


def _enc_pubcomp(pk: Pubcomp, level: int) -> bytes:
    return _enc_ack(0x70, pk, level)


def _enc_subscribe(pk: Subscribe, level: int) -> bytes:
    v5 = _check_level(level)
    if not pk.subscriptions:
        raise ValueError("SUBSCRIBE needs at least one subscription")
    parts = [_pack_H(_check_packet_id_out(pk.packet_id))]
    if v5:
        parts.append(_enc_properties(pk.properties, _P_SUBSCRIBE))
    for sub in pk.subscriptions:
        if sub.qos not in (0, 1, 2) or sub.retain_handling not in (0, 1, 2):
            raise ValueError(f"invalid subscription options {sub!r}")
        options = sub.qos
        if v5:
            options |= sub.retain_handling << 4
            if sub.no_local:
                options |= 0x04
            if sub.retain_as_published:
                options |= 0x08
        parts.append(_enc_str(sub.topic_filter) + _BYTE[options])
    return _frame(0x82, b"".join(parts))


def _enc_suback(pk: Suback, level: int) -> bytes:
    if not pk.reason_codes:
        raise ValueError("SUBACK needs at least one reason code")
    if _check_level(level):
        body = (
            _pack_H(_check_packet_id_out(pk.packet_id))
            + _enc_properties(pk.properties, _P_ACK)
            + bytes(pk.reason_codes)
        )
    else:
        codes = bytes(code if code < 0x80 else 0x80 for code in pk.reason_codes)
        body = _pack_H(_check_packet_id_out(pk.packet_id)) + codes
    return _frame(0x90, body)


def _enc_unsubscribe(pk: Unsubscribe, level: int) -> bytes:
    if not pk.topic_filters:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter")
    parts = [_pack_H(_check_packet_id_out(pk.packet_id))]
    if _check_level(level):
        parts.append(_enc_properties(pk.properties, _P_UNSUBSCRIBE))
    parts.extend(_enc_str(topic_filter) for topic_filter in pk.topic_filters)
    return _frame(0xA2, b"".join(parts))


def _enc_unsuback(pk: Unsuback, level: int) -> bytes:
    packet_id = _check_packet_id_out(pk.packet_id)
    if not _check_level(level):
        return _pack_BBH(0xB0, 2, packet_id)
    if not pk.reason_codes:
        raise ValueError("MQTT 5 UNSUBACK needs at least one reason code")
    body = _pack_H(packet_id) + _enc_properties(pk.properties, _P_ACK) + bytes(pk.reason_codes)
    return _frame(0xB0, body)


def _enc_pingreq(pk: Pingreq, level: int) -> bytes:
    _check_level(level)
    return b"\xc0\x00"


def _enc_pingresp(pk: Pingresp, level: int) -> bytes:
    _check_level(level)
    return b"\xd0\x00"


def _enc_reason_props(first: int, code: int, props: Properties, allowed: frozenset[int]) -> bytes:
    _check_reason_out(code)
    if _is_empty(props):
        if not code:
            return _pack_BB(first, 0)
        return _pack_BB(first, 1) + _BYTE[code]
    return _frame(first, _BYTE[code] + _enc_properties(props, allowed))


def _enc_disconnect(pk: Disconnect, level: int) -> bytes:
    if not _check_level(level):
        return b"\xe0\x00"
    return _enc_reason_props(0xE0, pk.reason_code, pk.properties, _P_DISCONNECT)


def _enc_auth(pk: Auth, level: int) -> bytes:
    if not _check_level(level):
        raise ValueError("AUTH does not exist in MQTT 3.1.1")
    return _enc_reason_props(0xF0, pk.reason_code, pk.properties, _P_AUTH)


_ENCODERS: Final[dict[type[Any], Callable[[Any, int], bytes]]] = {
    Connect: _enc_connect,
    Connack: _enc_connack,
    Publish: _enc_publish,
    Puback: _enc_puback,
    Pubrec: _enc_pubrec,
    Pubrel: _enc_pubrel,
    Pubcomp: _enc_pubcomp,
    Subscribe: _enc_subscribe,
    Suback: _enc_suback,
    Unsubscribe: _enc_unsubscribe,
    Unsuback: _enc_unsuback,
    Pingreq: _enc_pingreq,
    Pingresp: _enc_pingresp,
    Disconnect: _enc_disconnect,
    Auth: _enc_auth,
}


def encode(packet: Packet, protocol_level: int) -> bytes:
    """Serialize ``packet`` for ``protocol_level`` (3, 4 or 5); ValueError if not encodable."""
    if type(packet) is Publish:
        return _enc_publish(packet, protocol_level)
    encoder = _ENCODERS.get(type(packet))
    if encoder is None:
        raise TypeError(f"not an MQTT packet: {packet!r}")
    return encoder(packet, protocol_level)
