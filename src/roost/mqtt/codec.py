"""Sans-IO MQTT 3.1 / 3.1.1 / 5.0 packet codec for Roost's device gateway.

Design (in the spirit of h11 / httpcore): this module performs no IO at all. It is the codec's
public face; the code lives in :mod:`~roost.mqtt.packets` (reason codes, errors, properties,
packet dataclasses), :mod:`~roost.mqtt.wire` (field and property primitives),
:mod:`~roost.mqtt.decoder`, :mod:`~roost.mqtt.encoder` and :mod:`~roost.mqtt.topics` (topic
names and filters), and every public name is importable from here.

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

MQTT 3.1 (protocol name ``MQIsdp``, level 3, what older device libraries still send) differs from
3.1.1 only in its CONNECT: the decoder accepts it, returns a :class:`Connect` with
``protocol_level`` 3, and then decodes the connection as 3.1.1; ``encode(packet, 3)`` writes 3.1.1
bytes (and ``MQIsdp`` in a CONNECT).

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

from roost.mqtt.decoder import MQTTDecoder
from roost.mqtt.encoder import encode
from roost.mqtt.packets import (
    EMPTY_PROPERTIES,
    MAX_PACKET_SIZE,
    PROTOCOL_V5,
    PROTOCOL_V31,
    PROTOCOL_V311,
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
    Subscription,
    Unsuback,
    Unsubscribe,
    UnsupportedProtocolVersion,
    Will,
    v311_connack_return_code,
)
from roost.mqtt.topics import (
    split_shared_subscription,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)

__all__ = [
    "EMPTY_PROPERTIES",
    "MAX_PACKET_SIZE",
    "PROTOCOL_V31",
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
