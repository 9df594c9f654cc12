"""MQTT 3.1 / 3.1.1 / 5.0 packet types: reason codes, errors, properties and the packet dataclasses.

Packets are frozen, slotted dataclasses (:class:`Connect` ... :class:`Auth`); sequences inside
them are tuples so packets stay immutable and comparable. MQTT 5 properties are one frozen
dataclass, :class:`Properties`, with one field per property of the specification (snake_case of
the spec name); an absent property is ``None``, the two repeatable ones are tuples. See
:mod:`roost.mqtt.codec` for the decoder and encoder that move these to and from bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, TypeAlias

#: MQTT 3.1 (protocol name ``MQIsdp``): after CONNECT its packets are 3.1.1's byte for byte, so
#: the codec decodes and encodes it as 3.1.1 and only CONNECT (and the CONNACK flags) differ.
PROTOCOL_V31: Final = 3
PROTOCOL_V311: Final = 4
PROTOCOL_V5: Final = 5
#: The (protocol name, level) pairs a CONNECT may carry.
_CONNECT_PROTOCOLS: Final = frozenset(
    {(b"MQTT", PROTOCOL_V311), (b"MQTT", PROTOCOL_V5), (b"MQIsdp", PROTOCOL_V31)}
)
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

_V311_CONNACK_MAP: Final[dict[int, int]] = {
    0x84: 0x01,  # unacceptable protocol version
    0x85: 0x02,  # identifier rejected
    0x88: 0x03,  # server unavailable
    0x89: 0x03,
    0x8A: 0x05,
    0x86: 0x04,  # bad user name or password
    0x8C: 0x04,
    0x87: 0x05,  # not authorized
    0x97: 0x05,  # quota exceeded (too many connections of the device)
    0x9F: 0x03,  # connection rate exceeded (too many failed credentials): "unavailable"
    0x90: 0x05,  # will topic the device may not publish to: not authorized (not "unavailable")
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
    """CONNECT: client requests a connection (``protocol_level`` 3 = 3.1, 4 = 3.1.1, 5 = 5.0)."""

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
