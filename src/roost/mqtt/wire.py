"""Field-level MQTT wire format: integers, strings, binary data and MQTT 5 properties.

Internal to :mod:`roost.mqtt`: the decoder and encoder share these primitives and tables. Every
reader takes ``(data, offset, end)``, never reads at or past ``end``, and raises
:class:`~roost.mqtt.packets.MQTTProtocolError` (0x81 Malformed Packet, 0x82 Protocol Error) on bad
input; every writer raises ``ValueError`` for a value that cannot be represented.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from roost.mqtt.packets import (
    EMPTY_PROPERTIES,
    MAX_REMAINING_LENGTH,
    Properties,
    _malformed,
    _protocol,
)

# Property value kinds.
_K_BYTE: Final = 0  # one byte restricted to 0/1, kept as int
_K_BOOL: Final = 1  # one byte restricted to 0/1, exposed as bool
_K_U16: Final = 2
_K_U32: Final = 3
_K_VARINT: Final = 4
_K_STR: Final = 5
_K_BIN: Final = 6
_K_PAIR: Final = 7

#: identifier -> (field name, kind), in identifier order (also the encoding order).
_PROPERTY_SPECS: Final[dict[int, tuple[str, int]]] = {
    0x01: ("payload_format_indicator", _K_BYTE),
    0x02: ("message_expiry_interval", _K_U32),
    0x03: ("content_type", _K_STR),
    0x08: ("response_topic", _K_STR),
    0x09: ("correlation_data", _K_BIN),
    0x0B: ("subscription_identifiers", _K_VARINT),
    0x11: ("session_expiry_interval", _K_U32),
    0x12: ("assigned_client_identifier", _K_STR),
    0x13: ("server_keep_alive", _K_U16),
    0x15: ("authentication_method", _K_STR),
    0x16: ("authentication_data", _K_BIN),
    0x17: ("request_problem_information", _K_BOOL),
    0x18: ("will_delay_interval", _K_U32),
    0x19: ("request_response_information", _K_BOOL),
    0x1A: ("response_information", _K_STR),
    0x1C: ("server_reference", _K_STR),
    0x1F: ("reason_string", _K_STR),
    0x21: ("receive_maximum", _K_U16),
    0x22: ("topic_alias_maximum", _K_U16),
    0x23: ("topic_alias", _K_U16),
    0x24: ("maximum_qos", _K_BYTE),
    0x25: ("retain_available", _K_BOOL),
    0x26: ("user_properties", _K_PAIR),
    0x27: ("maximum_packet_size", _K_U32),
    0x28: ("wildcard_subscription_available", _K_BOOL),
    0x29: ("subscription_identifier_available", _K_BOOL),
    0x2A: ("shared_subscription_available", _K_BOOL),
}
_PROP_SUBSCRIPTION_ID: Final = 0x0B
_PROP_USER: Final = 0x26
#: Properties for which the value 0 is a Protocol Error.
_NONZERO_PROPS: Final = frozenset({0x21, 0x23, 0x27})

# Which properties each packet may carry (spec 2.2.2.2). "will" is the CONNECT payload's
# Will Properties.
_P_CONNECT: Final = frozenset({0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27})
_P_WILL: Final = frozenset({0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26})
_P_CONNACK: Final = frozenset(
    {0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27,
     0x28, 0x29, 0x2A}
)  # fmt: skip
_P_PUBLISH: Final = frozenset({0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26})
_P_ACK: Final = frozenset({0x1F, 0x26})  # PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK
_P_SUBSCRIBE: Final = frozenset({0x0B, 0x26})
_P_UNSUBSCRIBE: Final = frozenset({0x26})
_P_DISCONNECT: Final = frozenset({0x11, 0x1C, 0x1F, 0x26})
_P_AUTH: Final = frozenset({0x15, 0x16, 0x1F, 0x26})

# Valid MQTT 5 reason codes per packet (spec 2.4 and each packet's section).
_RC_CONNACK_V5: Final = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
     0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)  # fmt: skip
_RC_PUBACK: Final = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_RC_PUBREL: Final = frozenset({0x00, 0x92})
_RC_SUBACK_V5: Final = frozenset(
    {0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}
)
_RC_SUBACK_V311: Final = frozenset({0x00, 0x01, 0x02, 0x80})
_RC_UNSUBACK: Final = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
_RC_DISCONNECT: Final = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
     0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
     0xA2}
)  # fmt: skip
_RC_AUTH: Final = frozenset({0x00, 0x18, 0x19})


# --------------------------------------------------------------------------------------
# Decoding primitives. All take (data, offset, end) and never read at or past ``end``.
# --------------------------------------------------------------------------------------


def _read_varint(data: bytes, p: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if p >= end:
            raise _malformed("truncated variable byte integer")
        b = data[p]
        p += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0 and shift:
                raise _malformed("non-minimal variable byte integer")
            return value, p
        shift += 7
        if shift == 28:
            raise _malformed("variable byte integer longer than 4 bytes")


def _read_u16(data: bytes, p: int, end: int) -> int:
    if p + 2 > end:
        raise _malformed("truncated two byte integer")
    return (data[p] << 8) | data[p + 1]


def _read_str(data: bytes, p: int, end: int) -> tuple[str, int]:
    if p + 2 > end:
        raise _malformed("truncated string length")
    q = p + 2 + ((data[p] << 8) | data[p + 1])
    if q > end:
        raise _malformed("string exceeds packet")
    try:
        s = data[p + 2 : q].decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("invalid UTF-8 string") from None
    if "\x00" in s:
        raise _malformed("U+0000 in UTF-8 string")
    return s, q


def _read_bin(data: bytes, p: int, end: int) -> tuple[bytes, int]:
    if p + 2 > end:
        raise _malformed("truncated binary data length")
    q = p + 2 + ((data[p] << 8) | data[p + 1])
    if q > end:
        raise _malformed("binary data exceeds packet")
    return data[p + 2 : q], q


def _read_properties(
    data: bytes, p: int, end: int, allowed: frozenset[int]
) -> tuple[Properties, int]:
    length, p = _read_varint(data, p, end)
    if not length:
        return EMPTY_PROPERTIES, p
    pend = p + length
    if pend > end:
        raise _malformed("property length exceeds packet")
    values: dict[str, Any] = {}
    user: list[tuple[str, str]] = []
    sub_ids: list[int] = []
    specs = _PROPERTY_SPECS
    while p < pend:
        ident = data[p]
        p += 1
        if ident not in allowed:
            if ident in specs:
                raise _malformed(f"property 0x{ident:02X} not allowed in this packet")
            raise _malformed(f"unknown property identifier 0x{ident:02X}")
        name, kind = specs[ident]
        value: Any
        if kind == _K_STR:
            value, p = _read_str(data, p, pend)
        elif kind <= _K_BOOL:
            if p >= pend:
                raise _malformed("truncated byte property")
            value = data[p]
            p += 1
            if value > 1:
                raise _protocol(f"property {name} must be 0 or 1")
            if kind == _K_BOOL:
                value = bool(value)
        elif kind == _K_U16:
            value = _read_u16(data, p, pend)
            p += 2
        elif kind == _K_U32:
            if p + 4 > pend:
                raise _malformed("truncated four byte integer")
            value = int.from_bytes(data[p : p + 4], "big")
            p += 4
        elif kind == _K_BIN:
            value, p = _read_bin(data, p, pend)
        elif kind == _K_VARINT:
            value, p = _read_varint(data, p, pend)
            if not value:
                raise _protocol("subscription identifier 0")
            sub_ids.append(value)
            continue
        else:  # _K_PAIR
            key, p = _read_str(data, p, pend)
            val, p = _read_str(data, p, pend)
            user.append((key, val))
            continue
        if name in values:
            raise _protocol(f"duplicate property {name}")
        if not value and ident in _NONZERO_PROPS:
            raise _protocol(f"property {name} must not be 0")
        values[name] = value
    if user:
        values["user_properties"] = tuple(user)
    if sub_ids:
        values["subscription_identifiers"] = tuple(sub_ids)
    return Properties(**values), p


def _check_reason(code: int, valid: frozenset[int]) -> None:
    if code not in valid:
        raise _malformed(f"invalid reason code 0x{code:02X}")


def _check_packet_id(packet_id: int) -> int:
    if not packet_id:
        raise _protocol("packet identifier 0")
    return packet_id


def _check_end(p: int, end: int) -> None:
    if p != end:
        raise _malformed("remaining length not consumed exactly")


# --------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------

_pack_H: Final = struct.Struct(">H").pack
_pack_BB: Final = struct.Struct(">BB").pack
_pack_BBH: Final = struct.Struct(">BBH").pack
_pack_I: Final = struct.Struct(">I").pack
_BYTE: Final = tuple(bytes((i,)) for i in range(256))


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _BYTE[value]
    if value > MAX_REMAINING_LENGTH:
        raise ValueError(f"value {value} too large for a variable byte integer")
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


# The public name, for the clients that build frames by hand (simulator, load generator).
encode_varint = _varint


def _enc_str(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return _pack_H(len(raw)) + raw


def _enc_bin(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return _pack_H(len(value)) + value


def _check_u16(value: int, what: str) -> int:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} out of range")
    return value


def _check_reason_out(code: int) -> int:
    if not 0 <= code <= 0xFF:
        raise ValueError(f"reason code {code!r} out of range")
    return code


def _check_packet_id_out(packet_id: int | None) -> int:
    if packet_id is None or not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"invalid packet identifier {packet_id!r}")
    return packet_id


def _is_empty(props: Properties) -> bool:
    return props is EMPTY_PROPERTIES or props == EMPTY_PROPERTIES


def _enc_properties(props: Properties, allowed: frozenset[int]) -> bytes:
    if props is EMPTY_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    for ident, (name, kind) in _PROPERTY_SPECS.items():
        value = getattr(props, name)
        if value is None or value == ():
            continue
        if ident not in allowed:
            raise ValueError(f"property {name} not allowed in this packet")
        head = _BYTE[ident]
        if kind == _K_STR:
            parts.append(head + _enc_str(value))
        elif kind <= _K_BOOL:
            if value not in (0, 1):
                raise ValueError(f"{name} must be 0 or 1")
            parts.append(head + _BYTE[1 if value else 0])
        elif kind == _K_U16:
            parts.append(head + _pack_H(_check_u16(value, name)))
        elif kind == _K_U32:
            if not 0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"{name} {value} out of range")
            parts.append(head + _pack_I(value))
        elif kind == _K_BIN:
            parts.append(head + _enc_bin(value))
        elif kind == _K_VARINT:
            for sub_id in value:
                if not 0 < sub_id <= MAX_REMAINING_LENGTH:
                    raise ValueError(f"invalid subscription identifier {sub_id}")
                parts.append(head + _varint(sub_id))
        else:  # _K_PAIR
            parts.extend(head + _enc_str(key) + _enc_str(val) for key, val in value)
    body = b"".join(parts)
    return _varint(len(body)) + body


def _frame(first: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return _pack_BB(first, size) + body
    return _BYTE[first] + _varint(size) + body
