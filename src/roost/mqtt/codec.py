"""Sans-IO MQTT 3.1.1 / 5.0 packet codec for Roost's device gateway.

Design (in the spirit of h11 / httpcore): this module performs no IO at all.

* :class:`MQTTDecoder` turns bytes into packet objects. Feed it whatever arrived from the
  socket with :meth:`MQTTDecoder.feed`; it returns the list of packets completed by that
  chunk (possibly empty) and keeps any partial packet buffered. Arbitrary fragmentation
  (down to one byte at a time) and many packets per chunk are both fine.
* :func:`encode` turns a packet object into bytes for a given protocol level.
* Packets are frozen, slotted dataclasses (:class:`Connect` ... :class:`Auth`); sequences
  inside them are tuples so packets stay immutable and comparable.
* MQTT 5 properties are a single frozen dataclass, :class:`Properties`, with one field per
  property of the specification (snake_case of the spec name). An absent property is
  ``None``; the two repeatable properties are tuples: ``user_properties`` (ordered
  ``(name, value)`` pairs) and ``subscription_identifiers``. Properties that are a 0/1
  flag in the spec are ``bool`` except ``payload_format_indicator`` and ``maximum_qos``,
  which keep their numeric meaning. ``EMPTY_PROPERTIES`` is the shared "no properties"
  value and is what MQTT 3.1.1 packets always carry.
* Every malformed or disallowed input makes the decoder raise :class:`MQTTProtocolError`
  (and nothing else), whose ``reason_code`` is the MQTT 5 reason code to report (0x81
  Malformed Packet, 0x82 Protocol Error, 0x95 Packet Too Large, ...). A CONNECT with an
  unknown protocol name/level raises the subclass :class:`UnsupportedProtocolVersion`,
  which says how to answer (CONNACK 0x01 in 3.1.1 format or 0x84 in 5.0 format). Packets
  completed earlier in the same ``feed`` call are on the exception's ``packets`` list. After
  an error the decoder is dead: every later ``feed`` raises an error with the same code.

Decoder state: a decoder has a *role* (``"server"`` decodes client-to-server packets,
``"client"`` the reverse; a packet travelling the wrong way is a Protocol Error) and a
protocol level. A server-role decoder built without ``protocol_level`` learns the level
from the CONNECT packet, which must be the first packet; a second CONNECT is a Protocol
Error. The level is known (``decoder.protocol_level``) as soon as the CONNECT's version
byte has been read, even if the rest of the CONNECT turns out malformed.

Performance: the hot path is PUBLISH decoding, which is inlined in the decoder loop.
Packets are parsed in place from the received ``bytes`` by offset (a chunk is only copied
when it completes a packet that was split across chunks; the leftover partial packet is
kept in a ``bytearray``), topic names are validated once and cached, PUBLISH objects skip
the frozen dataclass ``__init__`` (see ``_PublishBuilder``), and the packet-size limit is
checked from the fixed header before the body is buffered.

Validation done here is the stateless part of the spec (fixed-header flags, lengths,
UTF-8 strings, property identifiers / duplicates / values, CONNECT flags, QoS, packet
identifiers, packet direction). Stateful rules (topic alias ranges, receive maximum,
packet-id reuse, authentication, ...) belong to the session layer above. Topic filters in
SUBSCRIBE/UNSUBSCRIBE are *not* syntax-checked by the decoder so that the server can
refuse a single bad filter with a SUBACK reason code; use :func:`validate_topic_filter`.

Encoding to 3.1.1 silently drops what that version cannot express (properties, v5-only
subscription options, PUBACK-family/UNSUBACK/DISCONNECT reason codes); SUBACK failure codes
become 0x80 and MQTT 5 CONNACK reason codes are mapped to 3.1.1 return codes (see
:func:`v311_connack_return_code`). The encoder raises ``ValueError`` for packets that
cannot be represented (bad QoS, missing packet identifier, oversize strings, a property
not allowed in that packet, ...).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, Literal, TypeAlias

__all__ = [
    "EMPTY_PROPERTIES",
    "MAX_PACKET_SIZE",
    "PROTOCOL_V311",
    "PROTOCOL_V5",
    "Auth",
    "Connack",
    "Connect",
    "Disconnect",
    "MQTTDecoder",
    "MQTTProtocolError",
    "Packet",
    "Pingreq",
    "Pingresp",
    "Properties",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "ReasonCode",
    "Suback",
    "Subscribe",
    "Subscription",
    "Unsuback",
    "Unsubscribe",
    "UnsupportedProtocolVersion",
    "Will",
    "encode",
    "split_shared_subscription",
    "topic_matches",
    "v311_connack_return_code",
    "validate_topic_filter",
    "validate_topic_name",
]

PROTOCOL_V311: Final = 4
PROTOCOL_V5: Final = 5
MAX_REMAINING_LENGTH: Final = 268_435_455
#: Largest possible MQTT packet: fixed header byte + 4-byte remaining length + body.
MAX_PACKET_SIZE: Final = MAX_REMAINING_LENGTH + 5


class ReasonCode(IntEnum):
    """MQTT 5.0 reason codes (spec section 2.4)."""

    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


_MALFORMED: Final = 0x81
_PROTOCOL: Final = 0x82


class MQTTProtocolError(Exception):
    """The peer violated the MQTT protocol; ``reason_code`` is the MQTT 5 reason code."""

    def __init__(self, reason_code: int, message: str = "") -> None:
        super().__init__(message or f"MQTT protocol error (reason code 0x{reason_code:02X})")
        self.reason_code = reason_code
        #: Packets decoded by the failing ``feed()`` call before the error was found.
        self.packets: list[Packet] = []

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason_code, str(self)))


class UnsupportedProtocolVersion(MQTTProtocolError):
    """CONNECT named a protocol name/level this codec does not speak (reason 0x84)."""

    def __init__(self, protocol_name: str, protocol_level: int) -> None:
        super().__init__(
            ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
            f"unsupported protocol {protocol_name!r} level {protocol_level}",
        )
        self.protocol_name = protocol_name
        self.protocol_level = protocol_level

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.protocol_name, self.protocol_level))

    @property
    def response_protocol_level(self) -> int:
        """Protocol level to encode the refusing CONNACK with (4 below level 5, else 5)."""
        return PROTOCOL_V5 if self.protocol_level >= PROTOCOL_V5 else PROTOCOL_V311

    @property
    def connack_reason_code(self) -> int:
        """CONNACK code to refuse with: 0x01 (3.1.1 format) or 0x84 (5.0 format)."""
        return 0x84 if self.protocol_level >= PROTOCOL_V5 else 0x01


def _malformed(message: str) -> MQTTProtocolError:
    return MQTTProtocolError(_MALFORMED, "malformed packet: " + message)


def _protocol(message: str) -> MQTTProtocolError:
    return MQTTProtocolError(_PROTOCOL, "protocol error: " + message)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Properties:
    """MQTT 5 properties of one packet (``None`` / ``()`` means absent)."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: bool | None = None
    will_delay_interval: int | None = None
    request_response_information: bool | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: bool | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: bool | None = None
    subscription_identifier_available: bool | None = None
    shared_subscription_available: bool | None = None

    def __repr__(self) -> str:
        present = (
            f"{name}={getattr(self, name)!r}"
            for name in self.__slots__
            if getattr(self, name) not in (None, ())
        )
        return f"Properties({', '.join(present)})"


EMPTY_PROPERTIES: Final = Properties()

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

_V311_CONNACK_MAP: Final[dict[int, int]] = {
    0x84: 0x01,  # unacceptable protocol version
    0x85: 0x02,  # identifier rejected
    0x88: 0x03,  # server unavailable
    0x89: 0x03,
    0x8A: 0x05,
    0x86: 0x04,  # bad user name or password
    0x8C: 0x04,
    0x87: 0x05,  # not authorized
}


def v311_connack_return_code(reason_code: int) -> int:
    """Map an MQTT 5 CONNACK reason code to a 3.1.1 return code (codes < 0x80 pass through)."""
    if reason_code < 0x80:
        return reason_code
    return _V311_CONNACK_MAP.get(reason_code, 0x03)


# --------------------------------------------------------------------------------------
# Packets
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Will:
    """The will message carried by a CONNECT."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT: client requests a connection (``protocol_level`` 4 = 3.1.1, 5 = 5.0)."""

    client_id: str
    protocol_level: int = PROTOCOL_V311
    clean_start: bool = True
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connack:
    """CONNACK: server's answer to CONNECT (``reason_code`` is the 3.1.1 return code in v4)."""

    session_present: bool = False
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH: an application message (``packet_id`` is ``None`` for QoS 0)."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Puback:
    """PUBACK: QoS 1 acknowledgement."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubrec:
    """PUBREC: QoS 2 delivery part 1 (publish received)."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubrel:
    """PUBREL: QoS 2 delivery part 2 (publish release)."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubcomp:
    """PUBCOMP: QoS 2 delivery part 3 (publish complete)."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its subscription options."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE: client subscribes to one or more topic filters."""

    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Suback:
    """SUBACK: one reason code (granted QoS or failure) per subscription."""

    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE: client removes one or more subscriptions."""

    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsuback:
    """UNSUBACK: one reason code per topic filter (always empty in 3.1.1)."""

    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pingreq:
    """PINGREQ: client keep-alive ping."""


@dataclass(frozen=True, slots=True)
class Pingresp:
    """PINGRESP: server's answer to PINGREQ."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT: orderly end of the connection (reason code/properties are v5 only)."""

    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    """AUTH: MQTT 5 enhanced-authentication exchange."""

    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


Packet: TypeAlias = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
    | Auth
)

_PINGREQ: Final = Pingreq()
_PINGRESP: Final = Pingresp()
_DISCONNECT: Final = Disconnect()
_AUTH: Final = Auth()


class _PublishBuilder:
    """Mutable twin of :class:`Publish` (identical slots) used to build decoded PUBLISHes.

    A frozen dataclass's ``__init__`` calls ``object.__setattr__`` once per field, which is
    the biggest single cost of decoding a small PUBLISH. The decoder instead fills this
    plain slotted object and then re-labels it as a :class:`Publish` through ``__class__``
    assignment, which CPython allows between classes with the same slot layout. The result
    is an ordinary, immutable ``Publish``; :func:`_build_publish` checks that at import.
    """

    __slots__ = ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None
    properties: Properties


# b0 -> flag values of a PUBLISH fixed header.
_PUB_QOS: Final = tuple((b >> 1) & 3 for b in range(256))
_PUB_RETAIN: Final = tuple(bool(b & 1) for b in range(256))
_PUB_DUP: Final = tuple(bool(b & 8) for b in range(256))


def _build_publish(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int | None,
    properties: Properties,
) -> Publish:
    """Build a Publish the way the decoder's inlined hot path does."""
    pkt = object.__new__(_PublishBuilder)
    pkt.topic = topic
    pkt.payload = payload
    pkt.qos = qos
    pkt.retain = retain
    pkt.dup = dup
    pkt.packet_id = packet_id
    pkt.properties = properties
    pkt.__class__ = Publish  # type: ignore[assignment]
    return pkt  # type: ignore[return-value]


_check = _build_publish("t", b"p", 1, True, False, 7, EMPTY_PROPERTIES)
if (
    Publish.__slots__ != _PublishBuilder.__slots__
    or type(_check) is not Publish
    or _check != Publish("t", b"p", 1, True, False, 7)
):  # pragma: no cover - would mean the interpreter's slot layout rules changed
    raise RuntimeError("fast PUBLISH construction does not produce a Publish")
del _check

# --------------------------------------------------------------------------------------
# Topic helpers
# --------------------------------------------------------------------------------------


def validate_topic_name(topic: str) -> None:
    """Raise MQTTProtocolError (0x90) unless ``topic`` is a valid non-empty topic name."""
    if not topic:
        raise MQTTProtocolError(ReasonCode.TOPIC_NAME_INVALID, "empty topic name")
    if "+" in topic or "#" in topic:
        raise MQTTProtocolError(ReasonCode.TOPIC_NAME_INVALID, "wildcard in topic name")
    if "\x00" in topic:
        raise MQTTProtocolError(ReasonCode.TOPIC_NAME_INVALID, "U+0000 in topic name")


def split_shared_subscription(topic_filter: str) -> tuple[str | None, str]:
    """Split ``$share/{group}/{filter}`` into ``(group, filter)``; ``(None, f)`` otherwise."""
    if topic_filter.startswith("$share/"):
        group, sep, rest = topic_filter[7:].partition("/")
        if sep:
            return group, rest
    return None, topic_filter


def validate_topic_filter(topic_filter: str) -> None:
    """Raise MQTTProtocolError (0x8F) unless ``topic_filter`` is a valid topic filter."""
    err = ReasonCode.TOPIC_FILTER_INVALID
    if not topic_filter:
        raise MQTTProtocolError(err, "empty topic filter")
    if "\x00" in topic_filter:
        raise MQTTProtocolError(err, "U+0000 in topic filter")
    if topic_filter.startswith("$share/"):
        group, sep, rest = topic_filter[7:].partition("/")
        if not sep or not group or not rest or "+" in group or "#" in group:
            raise MQTTProtocolError(err, "invalid shared subscription")
        topic_filter = rest
    if "+" not in topic_filter and "#" not in topic_filter:
        return
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            raise MQTTProtocolError(err, "'#' must be the whole last level")
        if "+" in level and level != "+":
            raise MQTTProtocolError(err, "'+' must be a whole level")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Return whether ``topic`` matches the (non-shared) ``topic_filter`` per MQTT rules."""
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == topic
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    n_topic = len(topic_levels)
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= n_topic:
            return False
        if level != "+" and level != topic_levels[i]:
            return False
    return len(filter_levels) == n_topic


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
# Decoder
# --------------------------------------------------------------------------------------

_Parser: TypeAlias = Callable[[bytes, int, int, int], Packet]

#: Required fixed-header flags for every packet type except PUBLISH.
_REQUIRED_FLAGS: Final[dict[int, int]] = {
    1: 0, 2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 8: 2, 9: 0, 10: 2, 11: 0, 12: 0, 13: 0, 14: 0, 15: 0,
}  # fmt: skip
_CLIENT_TO_SERVER: Final = (1, 3, 4, 5, 6, 7, 8, 10, 12, 14, 15)
_SERVER_TO_CLIENT: Final = (2, 3, 4, 5, 6, 7, 9, 11, 13, 14, 15)
_TOPIC_CACHE_SIZE: Final = 4096


class MQTTDecoder:
    """Incremental sans-IO MQTT decoder: ``feed(bytes)`` returns the completed packets."""

    __slots__ = (
        "_buf",
        "_connect_seen",
        "_error",
        "_level",
        "_need",
        "_parsers",
        "_role",
        "_table",
        "_topics",
        "max_packet_size",
    )

    def __init__(
        self,
        max_packet_size: int = MAX_PACKET_SIZE,
        *,
        role: Literal["server", "client"] = "server",
        protocol_level: int | None = None,
    ) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        if protocol_level not in (None, PROTOCOL_V311, PROTOCOL_V5):
            raise ValueError(f"unsupported protocol level {protocol_level!r}")
        if role == "client" and protocol_level is None:
            raise ValueError("a client-role decoder needs the protocol_level it connected with")
        if max_packet_size < 2:
            raise ValueError("max_packet_size must be at least 2")
        #: Packets whose total size (fixed header included) exceeds this raise 0x95.
        self.max_packet_size = max_packet_size
        self._role = role
        self._level = protocol_level
        self._connect_seen = False
        self._error: MQTTProtocolError | None = None
        self._buf = bytearray()
        self._need = 2
        self._topics: dict[bytes, str] = {}
        self._parsers: dict[int, _Parser] = {
            1: self._parse_connect,
            2: self._parse_connack,
            3: self._parse_publish,
            4: self._parse_puback,
            5: self._parse_pubrec,
            6: self._parse_pubrel,
            7: self._parse_pubcomp,
            8: self._parse_subscribe,
            9: self._parse_suback,
            10: self._parse_unsubscribe,
            11: self._parse_unsuback,
            12: self._parse_pingreq,
            13: self._parse_pingresp,
            14: self._parse_disconnect,
            15: self._parse_auth,
        }
        self._table: list[_Parser | None] = []
        self._build_table()

    @property
    def protocol_level(self) -> int | None:
        """Protocol level in use (4 or 5), or ``None`` before the CONNECT has been seen."""
        return self._level

    @property
    def role(self) -> str:
        """``"server"`` (decodes client packets) or ``"client"`` (decodes server packets)."""
        return self._role

    @property
    def buffered(self) -> int:
        """Number of bytes held back as an incomplete packet."""
        return len(self._buf)

    def _build_table(self) -> None:
        """Map every first byte to its parser, or None when not acceptable right now."""
        table: list[_Parser | None] = [None] * 256
        level = self._level
        if level is None:
            table[0x10] = self._parse_connect
        else:
            types = _CLIENT_TO_SERVER if self._role == "server" else _SERVER_TO_CLIENT
            for ptype in types:
                if ptype == 15 and level == PROTOCOL_V311:
                    continue
                if ptype == 1 and self._connect_seen:
                    continue
                parser = self._parsers[ptype]
                if ptype == 3:
                    for flags in range(16):
                        qos = (flags >> 1) & 3
                        if qos == 3 or (qos == 0 and flags & 8):
                            continue
                        table[0x30 | flags] = parser
                else:
                    table[(ptype << 4) | _REQUIRED_FLAGS[ptype]] = parser
        self._table = table

    def _header_error(self, b0: int) -> MQTTProtocolError:
        ptype = b0 >> 4
        flags = b0 & 0x0F
        if ptype == 0 or (ptype == 15 and self._level == PROTOCOL_V311):
            return _malformed(f"reserved packet type {ptype}")
        if ptype == 3:
            qos = (flags >> 1) & 3
            if qos == 3:
                return _malformed("PUBLISH with QoS 3")
            if qos == 0 and flags & 8:
                return _malformed("PUBLISH QoS 0 with DUP set")
        elif flags != _REQUIRED_FLAGS[ptype]:
            return _malformed(f"invalid fixed header flags for packet type {ptype}")
        if self._level is None:
            return _protocol("first packet must be CONNECT")
        if ptype == 1 and self._connect_seen:
            return _protocol("second CONNECT")
        return _protocol(f"packet type {ptype} not allowed in this direction")

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Add received bytes; return the packets they complete (raises MQTTProtocolError)."""
        if self._error is not None:
            raise MQTTProtocolError(
                self._error.reason_code, f"decoder unusable after earlier error: {self._error}"
            )
        if type(data) is not bytes:
            data = bytes(data)
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            data = bytes(buf)
            buf.clear()
        elif not data:
            return []
        out: list[Packet] = []
        try:
            self._parse(data, out)
        except MQTTProtocolError as exc:
            exc.packets = out
            self._error = exc
            buf.clear()
            raise
        return out

    def _parse(self, data: bytes, out: list[Packet]) -> None:
        append = out.append
        table = self._table
        parse_publish = self._parsers[3]  # the very bound-method object stored in the table
        topics = self._topics
        max_size = self.max_packet_size
        v5 = self._level == PROTOCOL_V5
        new = object.__new__
        builder = _PublishBuilder
        pub_qos = _PUB_QOS
        pub_retain = _PUB_RETAIN
        pub_dup = _PUB_DUP
        empty = EMPTY_PROPERTIES
        n = len(data)
        pos = 0
        need = 2
        while pos < n:
            b0 = data[pos]
            handler = table[b0]
            if handler is None:
                raise self._header_error(b0)
            if pos + 1 >= n:
                need = 2
                break
            rl = data[pos + 1]
            if rl < 0x80:
                hl = 2
            else:
                rl, hl = self._long_length(data, pos, n)
                if not hl:
                    need = n - pos + 1
                    break
            total = hl + rl
            if total > max_size:
                raise MQTTProtocolError(
                    ReasonCode.PACKET_TOO_LARGE,
                    f"packet of {total} bytes exceeds maximum packet size {max_size}",
                )
            end = pos + total
            if end > n:
                need = total
                break
            if handler is parse_publish:
                # Inlined hot path; mirrors MQTTDecoder._parse_publish.
                p = pos + hl
                if rl < 2:
                    raise _malformed("truncated PUBLISH topic")
                q = p + 2 + ((data[p] << 8) | data[p + 1])
                if q > end:
                    raise _malformed("PUBLISH topic exceeds packet")
                raw = data[p + 2 : q]
                topic = topics.get(raw)
                if topic is None:
                    topic = self._topic_name(raw)
                qos = pub_qos[b0]
                packet_id: int | None = None
                if qos:
                    if q + 2 > end:
                        raise _malformed("truncated PUBLISH packet identifier")
                    packet_id = (data[q] << 8) | data[q + 1]
                    if not packet_id:
                        raise _protocol("packet identifier 0")
                    q += 2
                props = empty
                if v5:
                    if q >= end:
                        raise _malformed("missing PUBLISH property length")
                    if data[q]:
                        props, q = self._publish_properties(data, q, end)
                    else:
                        q += 1
                    if not topic and props.topic_alias is None:
                        raise _protocol("empty topic name without topic alias")
                elif not topic:
                    raise _protocol("empty topic name")
                # Same as _build_publish(), inlined.
                pkt = new(builder)
                pkt.topic = topic
                pkt.payload = data[q:end]
                pkt.qos = qos
                pkt.retain = pub_retain[b0]
                pkt.dup = pub_dup[b0]
                pkt.packet_id = packet_id
                pkt.properties = props
                pkt.__class__ = Publish  # type: ignore[assignment]
                append(pkt)  # type: ignore[arg-type]
            else:
                append(handler(data, pos + hl, end, b0))
                # CONNECT changes the protocol level and the acceptable packets.
                table = self._table
                v5 = self._level == PROTOCOL_V5
            pos = end
        if pos < n:
            self._buf += memoryview(data)[pos:]
        self._need = need

    @staticmethod
    def _long_length(data: bytes, pos: int, n: int) -> tuple[int, int]:
        """Decode a multi-byte remaining length: (value, header length) or (0, 0) if partial."""
        value = 0
        shift = 0
        i = pos + 1
        while True:
            if i >= n:
                return 0, 0
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                if not b:
                    raise _malformed("non-minimal remaining length")
                return value, i - pos
            shift += 7
            if shift == 28:
                raise _malformed("remaining length longer than 4 bytes")

    def _topic_name(self, raw: bytes) -> str:
        """Validate a PUBLISH topic name and remember it."""
        try:
            topic = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("invalid UTF-8 topic name") from None
        if "\x00" in topic:
            raise _malformed("U+0000 in topic name")
        if "+" in topic or "#" in topic:
            raise MQTTProtocolError(ReasonCode.TOPIC_NAME_INVALID, "wildcard in topic name")
        topics = self._topics
        if len(topics) >= _TOPIC_CACHE_SIZE:
            topics.clear()
        topics[raw] = topic
        return topic

    def _publish_properties(self, data: bytes, p: int, end: int) -> tuple[Properties, int]:
        props, p = _read_properties(data, p, end, _P_PUBLISH)
        if props.subscription_identifiers and self._role == "server":
            raise _protocol("subscription identifier in PUBLISH from a client")
        return props, p

    # -- per packet type parsers: (data, body start, body end, first byte) -> packet -----

    def _parse_connect(self, data: bytes, p: int, end: int, b0: int) -> Connect:
        name_len = _read_u16(data, p, end)
        p += 2
        name = data[p : p + name_len]
        p += name_len
        if p >= end:
            raise _malformed("truncated CONNECT variable header")
        level = data[p]
        if name != b"MQTT" or level not in (PROTOCOL_V311, PROTOCOL_V5):
            raise UnsupportedProtocolVersion(name.decode("utf-8", "replace"), level)
        self._level = level
        v5 = level == PROTOCOL_V5
        if p + 4 > end:
            raise _malformed("truncated CONNECT variable header")
        flags = data[p + 1]
        keep_alive = (data[p + 2] << 8) | data[p + 3]
        p += 4
        if flags & 0x01:
            raise _malformed("CONNECT reserved flag set")
        will_flag = flags & 0x04
        will_qos = (flags >> 3) & 3
        will_retain = bool(flags & 0x20)
        has_password = flags & 0x40
        has_username = flags & 0x80
        clean_start = bool(flags & 0x02)
        if will_qos == 3:
            raise _malformed("will QoS 3")
        if not will_flag and (will_qos or will_retain):
            raise _malformed("will QoS/retain set without will flag")
        if has_password and not has_username and not v5:
            raise _malformed("password flag without user name flag")
        props = EMPTY_PROPERTIES
        if v5:
            props, p = _read_properties(data, p, end, _P_CONNECT)
            if props.authentication_data is not None and props.authentication_method is None:
                raise _protocol("authentication data without authentication method")
        client_id, p = _read_str(data, p, end)
        if not v5 and not client_id and not clean_start:
            raise MQTTProtocolError(
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                "empty client identifier requires clean session",
            )
        will = None
        if will_flag:
            will_props = EMPTY_PROPERTIES
            if v5:
                will_props, p = _read_properties(data, p, end, _P_WILL)
            will_topic, p = _read_str(data, p, end)
            validate_topic_name(will_topic)
            will_payload, p = _read_bin(data, p, end)
            will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
        username = None
        if has_username:
            username, p = _read_str(data, p, end)
        password = None
        if has_password:
            password, p = _read_bin(data, p, end)
        _check_end(p, end)
        if self._role == "server":
            self._connect_seen = True
        self._build_table()
        return Connect(client_id, level, clean_start, keep_alive, username, password, will, props)

    def _parse_connack(self, data: bytes, p: int, end: int, b0: int) -> Connack:
        if end - p < 2:
            raise _malformed("truncated CONNACK")
        flags = data[p]
        code = data[p + 1]
        p += 2
        if flags & 0xFE:
            raise _malformed("CONNACK reserved flags set")
        props = EMPTY_PROPERTIES
        if self._level == PROTOCOL_V5:
            _check_reason(code, _RC_CONNACK_V5)
            props, p = _read_properties(data, p, end, _P_CONNACK)
        elif code > 5:
            raise _malformed(f"invalid CONNACK return code {code}")
        _check_end(p, end)
        if flags and code:
            raise _protocol("session present with a refusing CONNACK")
        return Connack(bool(flags), code, props)

    def _parse_publish(self, data: bytes, p: int, end: int, b0: int) -> Publish:
        # Reference (non-inlined) implementation; _parse inlines the same logic.
        if end - p < 2:
            raise _malformed("truncated PUBLISH topic")
        q = p + 2 + ((data[p] << 8) | data[p + 1])
        if q > end:
            raise _malformed("PUBLISH topic exceeds packet")
        raw = data[p + 2 : q]
        topic = self._topics.get(raw)
        if topic is None:
            topic = self._topic_name(raw)
        qos = (b0 >> 1) & 3
        packet_id = None
        if qos:
            packet_id = _check_packet_id(_read_u16(data, q, end))
            q += 2
        props = EMPTY_PROPERTIES
        if self._level == PROTOCOL_V5:
            props, q = self._publish_properties(data, q, end)
            if not topic and props.topic_alias is None:
                raise _protocol("empty topic name without topic alias")
        elif not topic:
            raise _protocol("empty topic name")
        return Publish(topic, data[q:end], qos, bool(b0 & 1), bool(b0 & 8), packet_id, props)

    def _parse_ack(
        self, data: bytes, p: int, end: int, valid: frozenset[int]
    ) -> tuple[int, int, Properties]:
        """Parse the shared PUBACK/PUBREC/PUBREL/PUBCOMP layout."""
        packet_id = _check_packet_id(_read_u16(data, p, end))
        size = end - p
        if self._level != PROTOCOL_V5:
            if size != 2:
                raise _malformed("acknowledgement remaining length must be 2")
            return packet_id, 0, EMPTY_PROPERTIES
        if size == 2:
            return packet_id, 0, EMPTY_PROPERTIES
        code = data[p + 2]
        _check_reason(code, valid)
        if size == 3:
            return packet_id, code, EMPTY_PROPERTIES
        props, p = _read_properties(data, p + 3, end, _P_ACK)
        _check_end(p, end)
        return packet_id, code, props

    def _parse_puback(self, data: bytes, p: int, end: int, b0: int) -> Puback:
        return Puback(*self._parse_ack(data, p, end, _RC_PUBACK))

    def _parse_pubrec(self, data: bytes, p: int, end: int, b0: int) -> Pubrec:
        return Pubrec(*self._parse_ack(data, p, end, _RC_PUBACK))

    def _parse_pubrel(self, data: bytes, p: int, end: int, b0: int) -> Pubrel:
        return Pubrel(*self._parse_ack(data, p, end, _RC_PUBREL))

    def _parse_pubcomp(self, data: bytes, p: int, end: int, b0: int) -> Pubcomp:
        return Pubcomp(*self._parse_ack(data, p, end, _RC_PUBREL))

    def _parse_subscribe(self, data: bytes, p: int, end: int, b0: int) -> Subscribe:
        packet_id = _check_packet_id(_read_u16(data, p, end))
        p += 2
        v5 = self._level == PROTOCOL_V5
        props = EMPTY_PROPERTIES
        if v5:
            props, p = _read_properties(data, p, end, _P_SUBSCRIBE)
            if len(props.subscription_identifiers) > 1:
                raise _protocol("more than one subscription identifier in SUBSCRIBE")
        subs: list[Subscription] = []
        while p < end:
            topic_filter, p = _read_str(data, p, end)
            if p >= end:
                raise _malformed("missing subscription options")
            options = data[p]
            p += 1
            qos = options & 0x03
            if v5:
                if options & 0xC0:
                    raise _malformed("subscription options reserved bits set")
                if qos == 3:
                    raise _protocol("subscription QoS 3")
                retain_handling = (options >> 4) & 0x03
                if retain_handling == 3:
                    raise _protocol("retain handling 3")
                no_local = bool(options & 0x04)
                if no_local and topic_filter.startswith("$share/"):
                    raise _protocol("no local on a shared subscription")
                subs.append(
                    Subscription(topic_filter, qos, no_local, bool(options & 0x08), retain_handling)
                )
            else:
                if options & 0xFC or qos == 3:
                    raise _malformed("invalid requested QoS byte")
                subs.append(Subscription(topic_filter, qos))
        if not subs:
            raise _protocol("SUBSCRIBE without subscriptions")
        return Subscribe(packet_id, tuple(subs), props)

    def _parse_suback(self, data: bytes, p: int, end: int, b0: int) -> Suback:
        packet_id = _check_packet_id(_read_u16(data, p, end))
        p += 2
        props = EMPTY_PROPERTIES
        valid = _RC_SUBACK_V311
        if self._level == PROTOCOL_V5:
            props, p = _read_properties(data, p, end, _P_ACK)
            valid = _RC_SUBACK_V5
        codes = tuple(data[p:end])
        if not codes:
            raise _protocol("SUBACK without reason codes")
        for code in codes:
            _check_reason(code, valid)
        return Suback(packet_id, codes, props)

    def _parse_unsubscribe(self, data: bytes, p: int, end: int, b0: int) -> Unsubscribe:
        packet_id = _check_packet_id(_read_u16(data, p, end))
        p += 2
        props = EMPTY_PROPERTIES
        if self._level == PROTOCOL_V5:
            props, p = _read_properties(data, p, end, _P_UNSUBSCRIBE)
        filters: list[str] = []
        while p < end:
            topic_filter, p = _read_str(data, p, end)
            filters.append(topic_filter)
        if not filters:
            raise _protocol("UNSUBSCRIBE without topic filters")
        return Unsubscribe(packet_id, tuple(filters), props)

    def _parse_unsuback(self, data: bytes, p: int, end: int, b0: int) -> Unsuback:
        packet_id = _check_packet_id(_read_u16(data, p, end))
        p += 2
        if self._level != PROTOCOL_V5:
            _check_end(p, end)
            return Unsuback(packet_id)
        props, p = _read_properties(data, p, end, _P_ACK)
        codes = tuple(data[p:end])
        if not codes:
            raise _protocol("UNSUBACK without reason codes")
        for code in codes:
            _check_reason(code, _RC_UNSUBACK)
        return Unsuback(packet_id, codes, props)

    def _parse_pingreq(self, data: bytes, p: int, end: int, b0: int) -> Pingreq:
        _check_end(p, end)
        return _PINGREQ

    def _parse_pingresp(self, data: bytes, p: int, end: int, b0: int) -> Pingresp:
        _check_end(p, end)
        return _PINGRESP

    def _parse_reason_props(
        self, data: bytes, p: int, end: int, valid: frozenset[int], allowed: frozenset[int]
    ) -> tuple[int, Properties]:
        """Parse the optional reason code + optional properties of DISCONNECT/AUTH."""
        if p == end:
            return 0, EMPTY_PROPERTIES
        code = data[p]
        _check_reason(code, valid)
        if p + 1 == end:
            return code, EMPTY_PROPERTIES
        props, p = _read_properties(data, p + 1, end, allowed)
        _check_end(p, end)
        return code, props

    def _parse_disconnect(self, data: bytes, p: int, end: int, b0: int) -> Disconnect:
        if self._level != PROTOCOL_V5:
            _check_end(p, end)
            return _DISCONNECT
        code, props = self._parse_reason_props(data, p, end, _RC_DISCONNECT, _P_DISCONNECT)
        if not code and props is EMPTY_PROPERTIES:
            return _DISCONNECT
        return Disconnect(code, props)

    def _parse_auth(self, data: bytes, p: int, end: int, b0: int) -> Auth:
        code, props = self._parse_reason_props(data, p, end, _RC_AUTH, _P_AUTH)
        if not code and props is EMPTY_PROPERTIES:
            return _AUTH
        return Auth(code, props)


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


def _check_level(level: int) -> bool:
    """Validate a protocol level; return whether it is MQTT 5."""
    if level == PROTOCOL_V5:
        return True
    if level == PROTOCOL_V311:
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
        b"\x00\x04MQTT",
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
    elif level != PROTOCOL_V311:
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
    """Serialize ``packet`` for ``protocol_level`` (4 or 5); ValueError if not encodable."""
    if type(packet) is Publish:
        return _enc_publish(packet, protocol_level)
    encoder = _ENCODERS.get(type(packet))
    if encoder is None:
        raise TypeError(f"not an MQTT packet: {packet!r}")
    return encoder(packet, protocol_level)
