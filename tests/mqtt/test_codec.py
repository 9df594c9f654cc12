"""Byte-level tests for the sans-IO MQTT codec (roost.mqtt.codec)."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest

from roost.mqtt.codec import (
    EMPTY_PROPERTIES,
    Auth,
    Connack,
    Connect,
    Disconnect,
    MQTTDecoder,
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
    encode,
    split_shared_subscription,
    topic_matches,
    v311_connack_return_code,
    validate_topic_filter,
    validate_topic_name,
)

# Captured from paho-mqtt 2.2 (MQTTv311): client_id "roost-dev-1", keepalive 30, user "dev1",
# password "s3cret", will on roost/devices/dev1/status "offline" QoS 1 retained.
PAHO_CONNECT_V311 = (
    b"\x10I\x00\x04MQTT\x04\xee\x00\x1e\x00\x0broost-dev-1"
    b"\x00\x19roost/devices/dev1/status\x00\x07offline\x00\x04dev1\x00\x06s3cret"
)
# Captured from paho-mqtt 2.2 (MQTTv5): same, clean_start False, session expiry 3600,
# receive maximum 20, user property fw=1.2.3; will delay 10, content type text/plain,
# will user property k=v, will QoS 1 not retained.
PAHO_CONNECT_V5 = (
    b"\x10x\x00\x04MQTT\x05\xcc\x00\x1e"
    b"\x14\x11\x00\x00\x0e\x10!\x00\x14&\x00\x02fw\x00\x051.2.3"
    b"\x00\x0broost-dev-1"
    b"\x19\x03\x00\ntext/plain\x18\x00\x00\x00\n&\x00\x01k\x00\x01v"
    b"\x00\x19roost/devices/dev1/status\x00\x07offline\x00\x04dev1\x00\x06s3cret"
)
# Captured from paho-mqtt 2.2 (MQTTv5): PUBLISH a/b QoS 1 id 1 with every message property.
PAHO_PUBLISH_V5 = (
    b"29\x00\x03a/b\x00\x01*\x01\x01\x02\x00\x00\x00<\x03\x00\x10application/json"
    b'\x08\x00\x01r\t\x00\x02\x01\x02&\x00\x01k\x00\x01v{"x":1}'
)
# Captured from paho-mqtt 2.2 (MQTTv5): SUBSCRIBE id 2, subscription id 5, a/+ with QoS 1,
# no local, retain as published, retain handling 2; then UNSUBSCRIBE id 3 a/+.
PAHO_SUBSCRIBE_V5 = b"\x82\x0b\x00\x02\x02\x0b\x05\x00\x03a/+-"
PAHO_UNSUBSCRIBE_V5 = b"\xa2\x08\x00\x03\x00\x00\x03a/+"
# Captured from paho-mqtt 2.2 (MQTTv5): DISCONNECT 0x04 with session expiry 0.
PAHO_DISCONNECT_V5 = b"\xe0\x07\x04\x05\x11\x00\x00\x00\x00"

CONNECT_V311 = Connect(
    client_id="roost-dev-1",
    protocol_level=4,
    clean_start=True,
    keep_alive=30,
    username="dev1",
    password=b"s3cret",
    will=Will("roost/devices/dev1/status", b"offline", qos=1, retain=True),
)
CONNECT_V5 = Connect(
    client_id="roost-dev-1",
    protocol_level=5,
    clean_start=False,
    keep_alive=30,
    username="dev1",
    password=b"s3cret",
    will=Will(
        "roost/devices/dev1/status",
        b"offline",
        qos=1,
        retain=False,
        properties=Properties(
            content_type="text/plain", will_delay_interval=10, user_properties=(("k", "v"),)
        ),
    ),
    properties=Properties(
        session_expiry_interval=3600, receive_maximum=20, user_properties=(("fw", "1.2.3"),)
    ),
)
# Captured from paho-mqtt 2.2 (MQTTv31): the same CONNECT as PAHO_CONNECT_V311, in MQTT 3.1.
PAHO_CONNECT_V31 = (
    b"\x10K\x00\x06MQIsdp\x03\xee\x00\x1e\x00\x0broost-dev-1"
    b"\x00\x19roost/devices/dev1/status\x00\x07offline\x00\x04dev1\x00\x06s3cret"
)
MIN_CONNECT_V311 = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01d"
MIN_CONNECT_V5 = b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x01d"


def server(level: int | None = None, max_packet_size: int | None = None) -> MQTTDecoder:
    """A server-role decoder, optionally with a preset protocol level."""
    if max_packet_size is None:
        return MQTTDecoder(protocol_level=level)
    return MQTTDecoder(max_packet_size, protocol_level=level)


def client(level: int) -> MQTTDecoder:
    """A client-role decoder (decodes server-to-client packets)."""
    return MQTTDecoder(role="client", protocol_level=level)


def decode_one(decoder: MQTTDecoder, data: bytes) -> Packet:
    packets = decoder.feed(data)
    assert len(packets) == 1, packets
    assert decoder.buffered == 0
    return packets[0]


def assert_error(decoder: MQTTDecoder, data: bytes, reason_code: int) -> MQTTProtocolError:
    with pytest.raises(MQTTProtocolError) as info:
        decoder.feed(data)
    assert info.value.reason_code == reason_code, info.value
    return info.value


# --------------------------------------------------------------------------------------
# Known byte sequences, both directions
# --------------------------------------------------------------------------------------


def test_paho_connect_v311() -> None:
    d = server()
    assert d.protocol_level is None
    assert decode_one(d, PAHO_CONNECT_V311) == CONNECT_V311
    assert d.protocol_level == 4
    assert encode(CONNECT_V311, 4) == PAHO_CONNECT_V311


def test_paho_connect_v31_decodes_as_level_3_then_as_311() -> None:
    d = server()
    connect_v31 = replace(CONNECT_V311, protocol_level=3)
    assert decode_one(d, PAHO_CONNECT_V31) == connect_v31
    # After CONNECT, 3.1's packets are 3.1.1's: the decoder goes on as a 3.1.1 one.
    assert d.protocol_level == 4
    publish = encode(Publish("a/b", b"x", 1, packet_id=7), 3)
    assert publish == encode(Publish("a/b", b"x", 1, packet_id=7), 4)
    assert decode_one(d, publish) == Publish("a/b", b"x", 1, packet_id=7)
    assert_error(d, b"\xf0\x00", 0x81)  # AUTH does not exist before MQTT 5
    assert encode(connect_v31, 3) == PAHO_CONNECT_V31
    assert encode(Connack(False, 0x90), 3) == b"\x20\x02\x00\x05"
    assert decode_one(client(3), b"\x20\x02\x00\x00") == Connack(False, 0)


def test_paho_connect_v5() -> None:
    d = server()
    assert decode_one(d, PAHO_CONNECT_V5) == CONNECT_V5
    assert d.protocol_level == 5
    assert encode(CONNECT_V5, 5) == PAHO_CONNECT_V5


def test_minimal_connects() -> None:
    expected4 = Connect("d", protocol_level=4, keep_alive=60)
    assert decode_one(server(), MIN_CONNECT_V311) == expected4
    assert encode(expected4, 4) == MIN_CONNECT_V311
    expected5 = Connect("d", protocol_level=5, keep_alive=60)
    assert decode_one(server(), MIN_CONNECT_V5) == expected5
    assert encode(expected5, 5) == MIN_CONNECT_V5


def test_connect_v5_password_without_username_is_allowed() -> None:
    data = b"\x10\x12\x00\x04MQTT\x05\x42\x00\x00\x00\x00\x01d\x00\x02pw"
    pkt = Connect("d", protocol_level=5, keep_alive=0, password=b"pw")
    assert decode_one(server(), data) == pkt
    assert encode(pkt, 5) == data


def test_connect_v5_empty_client_id_without_clean_start_is_allowed() -> None:
    data = b"\x10\x0d\x00\x04MQTT\x05\x00\x00\x00\x00\x00\x00"
    assert decode_one(server(), data) == Connect("", 5, clean_start=False, keep_alive=0)


def test_paho_client_packets_v5() -> None:
    stream = (
        MIN_CONNECT_V5
        + PAHO_PUBLISH_V5
        + PAHO_SUBSCRIBE_V5
        + PAHO_UNSUBSCRIBE_V5
        + PAHO_DISCONNECT_V5
    )
    expected: list[Packet] = [
        Connect("d", protocol_level=5, keep_alive=60),
        Publish(
            "a/b",
            b'{"x":1}',
            qos=1,
            packet_id=1,
            properties=Properties(
                payload_format_indicator=1,
                message_expiry_interval=60,
                content_type="application/json",
                response_topic="r",
                correlation_data=b"\x01\x02",
                user_properties=(("k", "v"),),
            ),
        ),
        Subscribe(
            2,
            (Subscription("a/+", 1, no_local=True, retain_as_published=True, retain_handling=2),),
            Properties(subscription_identifiers=(5,)),
        ),
        Unsubscribe(3, ("a/+",)),
        Disconnect(4, Properties(session_expiry_interval=0)),
    ]
    assert server().feed(stream) == expected
    assert b"".join(encode(p, 5) for p in expected) == stream


# (level, decoder role, bytes, packet): encode(packet, level) == bytes and decoding bytes
# with a decoder of that role/level gives packet.
KNOWN: list[tuple[int, str, bytes, Packet]] = [
    (4, "client", b"\x20\x02\x00\x00", Connack(False, 0)),
    (4, "client", b"\x20\x02\x01\x00", Connack(True, 0)),
    (4, "client", b"\x20\x02\x00\x05", Connack(False, 5)),
    (5, "client", b"\x20\x03\x00\x00\x00", Connack()),
    (5, "client", b"\x20\x03\x00\x87\x00", Connack(False, ReasonCode.NOT_AUTHORIZED)),
    (
        5,
        "client",
        b"\x20\x0b\x01\x00\x08\x21\x00\x0a\x22\x00\x05\x25\x00",
        Connack(
            True,
            0,
            Properties(receive_maximum=10, topic_alias_maximum=5, retain_available=False),
        ),
    ),
    (4, "server", b"\x30\x0a\x00\x03a/bhello", Publish("a/b", b"hello")),
    (4, "server", b"\x30\x05\x00\x03a/b", Publish("a/b")),
    (
        4,
        "server",
        b"\x33\x0c\x00\x03a/b\x00\x07hello",
        Publish("a/b", b"hello", qos=1, retain=True, packet_id=7),
    ),
    (
        4,
        "server",
        b"\x3c\x0c\x00\x03a/b\xff\xffhello",
        Publish("a/b", b"hello", qos=2, dup=True, packet_id=0xFFFF),
    ),
    (
        4,
        "client",
        b"\x30\xcd\x01\x00\x03a/b" + b"x" * 200,
        Publish("a/b", b"x" * 200),
    ),
    (
        4,
        "server",
        b"\x30\x05\x00\x03\xc3\xa9t",  # "ét" is fine UTF-8
        Publish("ét"),
    ),
    (5, "server", b"\x30\x0b\x00\x03a/b\x00hello", Publish("a/b", b"hello")),
    (
        5,
        "server",
        b"\x32\x0a\x00\x00\x00\x01\x03\x23\x00\x02hi",
        Publish("", b"hi", qos=1, packet_id=1, properties=Properties(topic_alias=2)),
    ),
    (
        5,
        "client",
        b"\x30\x09\x00\x01t\x05\x0b\x01\x0b\x81\x01",
        Publish("t", properties=Properties(subscription_identifiers=(1, 129))),
    ),
    (4, "server", b"\x40\x02\x00\x07", Puback(7)),
    (4, "server", b"\x50\x02\x00\x07", Pubrec(7)),
    (4, "server", b"\x62\x02\x00\x07", Pubrel(7)),
    (4, "server", b"\x70\x02\x00\x07", Pubcomp(7)),
    (5, "server", b"\x40\x02\x00\x07", Puback(7)),
    (5, "client", b"\x40\x03\x00\x07\x10", Puback(7, ReasonCode.NO_MATCHING_SUBSCRIBERS)),
    (
        5,
        "server",
        b"\x40\x0a\x00\x07\x80\x06\x1f\x00\x03bad",
        Puback(7, 0x80, Properties(reason_string="bad")),
    ),
    (5, "server", b"\x50\x03\x00\x07\x97", Pubrec(7, ReasonCode.QUOTA_EXCEEDED)),
    (5, "server", b"\x62\x03\x00\x07\x92", Pubrel(7, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)),
    (
        5,
        "client",
        b"\x70\x0b\x00\x07\x00\x07\x26\x00\x01a\x00\x01b",
        Pubcomp(7, 0, Properties(user_properties=(("a", "b"),))),
    ),
    (
        4,
        "server",
        b"\x82\x0e\x00\x01\x00\x03a/b\x01\x00\x03c/#\x02",
        Subscribe(1, (Subscription("a/b", 1), Subscription("c/#", 2))),
    ),
    (
        5,
        "server",
        b"\x82\x09\x00\x01\x00\x00\x03a/b\x00",
        Subscribe(1, (Subscription("a/b"),)),
    ),
    (4, "client", b"\x90\x04\x00\x01\x01\x80", Suback(1, (1, 0x80))),
    (5, "client", b"\x90\x05\x00\x01\x00\x01\x8f", Suback(1, (1, 0x8F))),
    (4, "server", b"\xa2\x07\x00\x01\x00\x03a/b", Unsubscribe(1, ("a/b",))),
    (4, "client", b"\xb0\x02\x00\x01", Unsuback(1)),
    (5, "client", b"\xb0\x05\x00\x01\x00\x00\x11", Unsuback(1, (0, 0x11))),
    (4, "server", b"\xc0\x00", Pingreq()),
    (5, "server", b"\xc0\x00", Pingreq()),
    (4, "client", b"\xd0\x00", Pingresp()),
    (4, "server", b"\xe0\x00", Disconnect()),
    (5, "server", b"\xe0\x00", Disconnect()),
    (5, "client", b"\xe0\x01\x8e", Disconnect(ReasonCode.SESSION_TAKEN_OVER)),
    (
        5,
        "client",
        b"\xe0\x08\x9c\x06\x1c\x00\x03b:1",
        Disconnect(ReasonCode.USE_ANOTHER_SERVER, Properties(server_reference="b:1")),
    ),
    (5, "server", b"\xf0\x00", Auth()),
    (
        5,
        "client",
        b"\xf0\x0f\x18\x0d\x15\x00\x05SCRAM\x16\x00\x02\x01\x02",
        Auth(
            ReasonCode.CONTINUE_AUTHENTICATION,
            Properties(authentication_method="SCRAM", authentication_data=b"\x01\x02"),
        ),
    ),
]


@pytest.mark.parametrize(("level", "role", "data", "packet"), KNOWN)
def test_known_bytes(level: int, role: str, data: bytes, packet: Packet) -> None:
    decoder = MQTTDecoder(role="client" if role == "client" else "server", protocol_level=level)
    assert decode_one(decoder, data) == packet
    assert encode(packet, level) == data


def test_connack_all_v5_properties() -> None:
    props = Properties(
        session_expiry_interval=10,
        assigned_client_identifier="auto-1",
        server_keep_alive=120,
        authentication_method="m",
        authentication_data=b"d",
        response_information="resp",
        server_reference="other:1883",
        reason_string="ok",
        receive_maximum=100,
        topic_alias_maximum=10,
        maximum_qos=1,
        retain_available=True,
        user_properties=(("a", "1"), ("a", "2"), ("b", "")),
        maximum_packet_size=65536,
        wildcard_subscription_available=False,
        subscription_identifier_available=True,
        shared_subscription_available=False,
    )
    pkt = Connack(False, 0, props)
    assert decode_one(client(5), encode(pkt, 5)) == pkt


def test_connect_all_v5_properties() -> None:
    pkt = Connect(
        "c",
        protocol_level=5,
        properties=Properties(
            session_expiry_interval=0xFFFFFFFF,
            authentication_method="SCRAM-SHA-256",
            authentication_data=b"\x00\x01",
            request_problem_information=False,
            request_response_information=True,
            receive_maximum=65535,
            topic_alias_maximum=0,
            user_properties=(("x", "y"),),
            maximum_packet_size=1,
        ),
        will=Will(
            "w",
            b"",
            properties=Properties(
                payload_format_indicator=0,
                message_expiry_interval=0,
                content_type="c",
                response_topic="r",
                correlation_data=b"",
                will_delay_interval=5,
                user_properties=(("k", "v"),),
            ),
        ),
    )
    assert decode_one(server(), encode(pkt, 5)) == pkt


def test_user_properties_keep_order_and_duplicates() -> None:
    props = Properties(user_properties=(("b", "2"), ("a", "1"), ("b", "2"), ("b", "3")))
    pkt = Publish("t", b"", properties=props)
    decoded = decode_one(server(5), encode(pkt, 5))
    assert isinstance(decoded, Publish)
    assert decoded.properties.user_properties == props.user_properties


# --------------------------------------------------------------------------------------
# Fragmentation / batching
# --------------------------------------------------------------------------------------

STREAM_V311: list[Packet] = [
    CONNECT_V311,
    Publish("a/b", b"hello", qos=1, packet_id=1),
    Publish("a/b", b"x" * 300, qos=0),
    Publish("c", b"", qos=2, packet_id=2, retain=True),
    Subscribe(3, (Subscription("a/#", 1),)),
    Pubrel(2),
    Pingreq(),
    Unsubscribe(4, ("a/#",)),
    Disconnect(),
]
STREAM_V5: list[Packet] = [
    CONNECT_V5,
    Publish("a/b", b"hello", qos=1, packet_id=1, properties=Properties(topic_alias=1)),
    Publish("", b"again", qos=0, properties=Properties(topic_alias=1)),
    Publish("big", b"y" * 20000, qos=1, packet_id=2),
    Subscribe(3, (Subscription("a/#", 1, retain_handling=1),)),
    Auth(0x19, Properties(authentication_method="m")),
    Pingreq(),
    Disconnect(0x04),
]


@pytest.mark.parametrize(("level", "packets"), [(4, STREAM_V311), (5, STREAM_V5)])
def test_one_byte_at_a_time(level: int, packets: list[Packet]) -> None:
    stream = b"".join(encode(p, level) for p in packets)
    d = server()
    out: list[Packet] = []
    for i in range(len(stream)):
        out += d.feed(stream[i : i + 1])
    assert out == packets
    assert d.buffered == 0


@pytest.mark.parametrize(("level", "packets"), [(4, STREAM_V311), (5, STREAM_V5)])
def test_all_in_one_chunk(level: int, packets: list[Packet]) -> None:
    stream = b"".join(encode(p, level) for p in packets)
    assert server().feed(stream) == packets


@pytest.mark.parametrize("size", [2, 3, 7, 64, 1000, 4096])
def test_fixed_chunk_sizes(size: int) -> None:
    stream = b"".join(encode(p, 5) for p in STREAM_V5)
    d = server()
    out: list[Packet] = []
    for i in range(0, len(stream), size):
        out += d.feed(stream[i : i + size])
    assert out == STREAM_V5


def test_feed_accepts_bytearray_and_memoryview_and_empty() -> None:
    d = server()
    assert d.feed(b"") == []
    assert d.feed(bytearray(MIN_CONNECT_V311[:5])) == []
    assert d.feed(b"") == []
    assert d.feed(memoryview(MIN_CONNECT_V311)[5:]) == [Connect("d", 4, keep_alive=60)]


def test_many_distinct_topics() -> None:
    packets = [Publish(f"t/{i}", b"p") for i in range(5000)]
    d = server(4)
    assert d.feed(b"".join(encode(p, 4) for p in packets)) == packets
    # cached topic names are still validated per packet
    assert_error(d, b"\x30\x05\x00\x03t/#", 0x90)


def test_split_remaining_length() -> None:
    data = encode(Publish("t", b"z" * 20000), 4)
    assert data[1] & 0x80 and data[2] & 0x80 and not data[3] & 0x80
    d = server(4)
    assert d.feed(data[:1]) == []
    assert d.feed(data[1:2]) == []
    assert d.feed(data[2:3]) == []
    assert d.feed(data[3:10]) == []
    assert d.feed(data[10:]) == [Publish("t", b"z" * 20000)]


def test_packets_decoded_before_an_error_are_attached() -> None:
    d = server(4)
    err = assert_error(d, b"\xc0\x00\xc0\x00\xc0\x01\x00", 0x81)
    assert err.packets == [Pingreq(), Pingreq()]


def test_decoder_is_dead_after_error() -> None:
    d = server(4)
    assert_error(d, b"\x00\x00", 0x81)
    assert_error(d, b"\xc0\x00", 0x81)


def test_decoder_constructor_checks() -> None:
    with pytest.raises(ValueError):
        MQTTDecoder(role="client")
    with pytest.raises(ValueError):
        MQTTDecoder(protocol_level=6)
    assert MQTTDecoder(protocol_level=3).protocol_level == 4  # MQTT 3.1 decodes as 3.1.1
    with pytest.raises(ValueError):
        MQTTDecoder(role="broker", protocol_level=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MQTTDecoder(1)


# --------------------------------------------------------------------------------------
# Packet size limit
# --------------------------------------------------------------------------------------


def test_oversize_rejected_from_header_alone() -> None:
    d = server(4, max_packet_size=100)
    # remaining length 1000, nothing of the body sent yet
    err = assert_error(d, b"\x30\xe8\x07", ReasonCode.PACKET_TOO_LARGE)
    assert err.reason_code == 0x95


def test_oversize_rejected_when_header_arrives_bytewise() -> None:
    d = server(4, max_packet_size=100)
    assert d.feed(b"\x30") == []
    assert d.feed(b"\xe8") == []
    assert_error(d, b"\x07", 0x95)


def test_max_packet_size_counts_the_whole_packet() -> None:
    pkt = Publish("t", b"x" * 95)  # 2 + 1 + 95 = 98 body, 100 total
    data = encode(pkt, 4)
    assert len(data) == 100
    assert server(4, max_packet_size=100).feed(data) == [pkt]
    assert_error(server(4, max_packet_size=99), data[:2], 0x95)


def test_oversize_connect_rejected() -> None:
    d = server(max_packet_size=10)
    assert_error(d, MIN_CONNECT_V311, 0x95)


# --------------------------------------------------------------------------------------
# Malformations
# --------------------------------------------------------------------------------------

MALFORMED_V311: list[tuple[str, bytes, int]] = [
    ("reserved type 0", b"\x00\x00", 0x81),
    ("AUTH in 3.1.1", b"\xf0\x00", 0x81),
    ("SUBSCRIBE flags 0", b"\x80\x08\x00\x01\x00\x03a/b\x00", 0x81),
    ("UNSUBSCRIBE flags 0", b"\xa0\x07\x00\x01\x00\x03a/b", 0x81),
    ("PUBREL flags 0", b"\x60\x02\x00\x01", 0x81),
    ("PUBACK flags 1", b"\x41\x02\x00\x01", 0x81),
    ("PINGREQ flags", b"\xc8\x00", 0x81),
    ("DISCONNECT flags", b"\xe1\x00", 0x81),
    ("remaining length 5 bytes", b"\x30\xff\xff\xff\xff\x01", 0x81),
    ("remaining length 4 continuation bytes", b"\x30\x80\x80\x80\x80", 0x81),
    ("non-minimal remaining length", b"\xc0\x80\x00", 0x81),
    ("PUBLISH QoS 3", b"\x36\x05\x00\x01a\x00\x01", 0x81),
    ("PUBLISH QoS 3 retain dup", b"\x3f\x05\x00\x01a\x00\x01", 0x81),
    ("PUBLISH QoS 0 with DUP", b"\x38\x03\x00\x01a", 0x81),
    ("invalid UTF-8 topic", b"\x30\x05\x00\x02\xc3\x28x", 0x81),
    ("overlong UTF-8 topic", b"\x30\x04\x00\x02\xc0\xaf", 0x81),
    ("surrogate in topic", b"\x30\x05\x00\x03\xed\xa0\x80", 0x81),
    ("U+0000 in topic", b"\x30\x04\x00\x02a\x00", 0x81),
    ("wildcard # in topic", b"\x30\x05\x00\x03a/#", 0x90),
    ("wildcard + in topic", b"\x30\x05\x00\x03+/b", 0x90),
    ("empty topic", b"\x30\x03\x00\x00x", 0x82),
    ("PUBLISH too short for topic length", b"\x30\x01\x00", 0x81),
    ("PUBLISH topic beyond packet", b"\x30\x03\x00\x05a", 0x81),
    ("PUBLISH QoS 1 without packet id", b"\x32\x04\x00\x01a\x00", 0x81),
    ("PUBLISH packet id 0", b"\x32\x05\x00\x01a\x00\x00", 0x82),
    ("PUBACK packet id 0", b"\x40\x02\x00\x00", 0x82),
    ("PUBACK too long in 3.1.1", b"\x40\x03\x00\x01\x00", 0x81),
    ("PUBACK too short", b"\x40\x01\x00", 0x81),
    ("PINGREQ with body", b"\xc0\x01\x00", 0x81),
    ("DISCONNECT with body in 3.1.1", b"\xe0\x01\x00", 0x81),
    ("SUBSCRIBE without subscriptions", b"\x82\x02\x00\x01", 0x82),
    ("SUBSCRIBE packet id 0", b"\x82\x06\x00\x00\x00\x01a\x00", 0x82),
    ("SUBSCRIBE reserved option bits", b"\x82\x06\x00\x01\x00\x01a\x04", 0x81),
    ("SUBSCRIBE QoS 3", b"\x82\x06\x00\x01\x00\x01a\x03", 0x81),
    ("SUBSCRIBE missing options", b"\x82\x05\x00\x01\x00\x01a", 0x81),
    ("SUBSCRIBE bad UTF-8 filter", b"\x82\x06\x00\x01\x00\x01\xff\x00", 0x81),
    ("UNSUBSCRIBE without filters", b"\xa2\x02\x00\x01", 0x82),
    ("UNSUBSCRIBE truncated filter", b"\xa2\x05\x00\x01\x00\x05a", 0x81),
    ("second CONNECT", MIN_CONNECT_V311, 0x82),
    ("CONNACK sent to the server", b"\x20\x02\x00\x00", 0x82),
    ("SUBACK sent to the server", b"\x90\x03\x00\x01\x00", 0x82),
    ("PINGRESP sent to the server", b"\xd0\x00", 0x82),
]


@pytest.mark.parametrize(
    ("data", "reason"),
    [(d, r) for _, d, r in MALFORMED_V311],
    ids=[n for n, _, _ in MALFORMED_V311],
)
def test_malformed_v311(data: bytes, reason: int) -> None:
    d = server()
    d.feed(MIN_CONNECT_V311)
    assert_error(d, data, reason)


@pytest.mark.parametrize(
    ("data", "reason"),
    [(d, r) for _, d, r in MALFORMED_V311],
    ids=[n for n, _, _ in MALFORMED_V311],
)
def test_malformed_v311_one_byte_at_a_time(data: bytes, reason: int) -> None:
    d = server()
    d.feed(MIN_CONNECT_V311)
    with pytest.raises(MQTTProtocolError) as info:
        for i in range(len(data)):
            d.feed(data[i : i + 1])
    assert info.value.reason_code == reason


def _v5_connect(props: bytes = b"\x00", flags: int = 0x02, payload: bytes = b"\x00\x01d") -> bytes:
    body = b"\x00\x04MQTT\x05" + bytes([flags]) + b"\x00\x3c" + props + payload
    assert len(body) < 128
    return bytes([0x10, len(body)]) + body


MALFORMED_V5: list[tuple[str, bytes, int]] = [
    ("empty topic without alias", b"\x30\x04\x00\x00\x00x", 0x82),
    ("PUBLISH without property length", b"\x30\x03\x00\x01a", 0x81),
    ("PUBLISH unknown property", b"\x30\x06\x00\x01a\x02\x05\x00", 0x81),
    ("PUBLISH property not allowed", b"\x30\x09\x00\x01a\x05\x11\x00\x00\x00\x01", 0x81),
    ("PUBLISH duplicate topic alias", b"\x30\x0a\x00\x01a\x06\x23\x00\x01\x23\x00\x01", 0x82),
    ("PUBLISH topic alias 0", b"\x30\x07\x00\x01a\x03\x23\x00\x00", 0x82),
    ("PUBLISH payload format 2", b"\x30\x06\x00\x01a\x02\x01\x02", 0x82),
    ("PUBLISH dup payload format", b"\x30\x08\x00\x01a\x04\x01\x01\x01\x01", 0x82),
    ("PUBLISH property length beyond packet", b"\x30\x06\x00\x01a\x09\x01\x01", 0x81),
    ("PUBLISH truncated property", b"\x30\x06\x00\x01a\x02\x23\x00", 0x81),
    ("PUBLISH truncated u32 property", b"\x30\x07\x00\x01a\x03\x02\x00\x00", 0x81),
    ("PUBLISH subscription id from client", b"\x30\x06\x00\x01a\x02\x0b\x01", 0x82),
    ("PUBLISH bad UTF-8 content type", b"\x30\x08\x00\x01a\x04\x03\x00\x01\xff", 0x81),
    ("PUBLISH U+0000 in user property", b"\x30\x0b\x00\x01a\x07\x26\x00\x01\x00\x00\x01v", 0x81),
    ("PUBLISH user property missing value", b"\x30\x09\x00\x01a\x05\x26\x00\x01k\x00", 0x81),
    ("PUBLISH non-minimal property length", b"\x30\x05\x00\x01a\x80\x00", 0x81),
    ("PUBACK bad reason code", b"\x40\x03\x00\x01\x05", 0x81),
    ("PUBREL reason code of PUBACK", b"\x62\x03\x00\x01\x10", 0x81),
    ("PUBACK trailing garbage", b"\x40\x05\x00\x01\x00\x00\x00", 0x81),
    ("PUBACK property not allowed", b"\x40\x06\x00\x01\x00\x02\x23\x00", 0x81),
    ("SUBSCRIBE reserved option bits", b"\x82\x07\x00\x01\x00\x00\x01a\x40", 0x81),
    ("SUBSCRIBE QoS 3", b"\x82\x07\x00\x01\x00\x00\x01a\x03", 0x82),
    ("SUBSCRIBE retain handling 3", b"\x82\x07\x00\x01\x00\x00\x01a\x30", 0x82),
    (
        "SUBSCRIBE no local on shared subscription",
        b"\x82\x10\x00\x01\x00\x00\x0a$share/g/a\x04",
        0x82,
    ),
    ("SUBSCRIBE subscription id 0", b"\x82\x09\x00\x01\x02\x0b\x00\x00\x01a\x00", 0x82),
    (
        "SUBSCRIBE two subscription ids",
        b"\x82\x0b\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00",
        0x82,
    ),
    ("SUBSCRIBE without subscriptions", b"\x82\x03\x00\x01\x00", 0x82),
    ("UNSUBSCRIBE without filters", b"\xa2\x03\x00\x01\x00", 0x82),
    ("DISCONNECT bad reason code", b"\xe0\x01\x01", 0x81),
    ("DISCONNECT trailing garbage", b"\xe0\x03\x00\x00\x00", 0x81),
    ("DISCONNECT property not allowed", b"\xe0\x04\x00\x02\x23\x00", 0x81),
    ("AUTH bad reason code", b"\xf0\x01\x87", 0x81),
    ("AUTH property not allowed", b"\xf0\x04\x18\x02\x01\x01", 0x81),
    ("second CONNECT", MIN_CONNECT_V5, 0x82),
    ("CONNACK sent to the server", b"\x20\x03\x00\x00\x00", 0x82),
    ("UNSUBACK sent to the server", b"\xb0\x04\x00\x01\x00\x00", 0x82),
]


@pytest.mark.parametrize(
    ("data", "reason"), [(d, r) for _, d, r in MALFORMED_V5], ids=[n for n, _, _ in MALFORMED_V5]
)
def test_malformed_v5(data: bytes, reason: int) -> None:
    d = server()
    d.feed(MIN_CONNECT_V5)
    assert_error(d, data, reason)


MALFORMED_CONNECT: list[tuple[str, bytes, int]] = [
    ("CONNECT reserved flag", b"\x10\x0d\x00\x04MQTT\x04\x03\x00\x3c\x00\x01d", 0x81),
    ("will QoS without will flag", b"\x10\x0d\x00\x04MQTT\x04\x0a\x00\x3c\x00\x01d", 0x81),
    ("will retain without will flag", b"\x10\x0d\x00\x04MQTT\x04\x22\x00\x3c\x00\x01d", 0x81),
    (
        "will QoS 3",
        b"\x10\x13\x00\x04MQTT\x04\x1e\x00\x3c\x00\x01d\x00\x01w\x00\x01p",
        0x81,
    ),
    (
        "password without user name in 3.1.1",
        b"\x10\x11\x00\x04MQTT\x04\x42\x00\x3c\x00\x01d\x00\x02pw",
        0x81,
    ),
    (
        "empty client id without clean session",
        b"\x10\x0c\x00\x04MQTT\x04\x00\x00\x3c\x00\x00",
        0x85,
    ),
    ("client id beyond packet", b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x05d", 0x81),
    ("bad UTF-8 client id", b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01\x80", 0x81),
    ("trailing byte", b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x01dX", 0x81),
    ("will flag but no will", b"\x10\x0d\x00\x04MQTT\x04\x06\x00\x3c\x00\x01d", 0x81),
    (
        "wildcard will topic",
        b"\x10\x12\x00\x04MQTT\x04\x06\x00\x3c\x00\x01d\x00\x01#\x00\x00",
        0x90,
    ),
    ("user name flag but no user name", b"\x10\x0d\x00\x04MQTT\x04\x82\x00\x3c\x00\x01d", 0x81),
    ("truncated variable header", b"\x10\x08\x00\x04MQTT\x04\x02", 0x81),
    ("truncated protocol name", b"\x10\x03\x00\x04M", 0x81),
    ("v5 duplicate session expiry", _v5_connect(b"\x0a\x11\0\0\0\1\x11\0\0\0\2"), 0x82),
    ("v5 receive maximum 0", _v5_connect(b"\x03\x21\x00\x00"), 0x82),
    ("v5 maximum packet size 0", _v5_connect(b"\x05\x27\x00\x00\x00\x00"), 0x82),
    ("v5 request problem info 2", _v5_connect(b"\x02\x17\x02"), 0x82),
    ("v5 request response info 2", _v5_connect(b"\x02\x19\x02"), 0x82),
    ("v5 topic alias in CONNECT", _v5_connect(b"\x03\x23\x00\x01"), 0x81),
    ("v5 unknown property", _v5_connect(b"\x02\x7f\x00"), 0x81),
    ("v5 property id >= 0x80", _v5_connect(b"\x03\x81\x01\x00"), 0x81),
    ("v5 auth data without method", _v5_connect(b"\x04\x16\x00\x01x"), 0x82),
    ("v5 property length 5 bytes", _v5_connect(b"\x80\x80\x80\x80\x01"), 0x81),
    (
        "v5 will property not allowed",
        _v5_connect(flags=0x06, payload=b"\x00\x01d\x03\x23\x00\x01\x00\x01w\x00\x00"),
        0x81,
    ),
    (
        "v5 will truncated property",
        _v5_connect(flags=0x06, payload=b"\x00\x01d\x02\x18\x00"),
        0x81,
    ),
]


@pytest.mark.parametrize(
    ("data", "reason"),
    [(d, r) for _, d, r in MALFORMED_CONNECT],
    ids=[n for n, _, _ in MALFORMED_CONNECT],
)
def test_malformed_connect(data: bytes, reason: int) -> None:
    assert_error(server(), data, reason)


def test_connect_level_known_even_if_connect_is_malformed() -> None:
    d = server()
    assert_error(d, _v5_connect(b"\x02\x7f\x00"), 0x81)
    assert d.protocol_level == 5


def test_first_packet_must_be_connect() -> None:
    assert_error(server(), b"\xc0\x00", 0x82)
    # rejected from the first byte alone
    assert_error(server(), b"\x30", 0x82)


def test_client_role_rejects_client_packets() -> None:
    assert_error(client(4), MIN_CONNECT_V311, 0x82)
    assert_error(client(5), b"\xc0\x00", 0x82)
    assert_error(client(5), b"\x82\x06\x00\x01\x00\x01a\x00", 0x82)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x20\x02\x02\x00", 0x81),  # reserved CONNACK flag
        (b"\x20\x02\x00\x06", 0x81),  # 3.1.1 return code 6 is reserved
        (b"\x20\x02\x01\x05", 0x82),  # session present with refusal
        (b"\x20\x03\x00\x00\x00", 0x81),  # too long
        (b"\x20\x01\x00", 0x81),
        (b"\x90\x02\x00\x01", 0x82),  # SUBACK without codes
        (b"\x90\x03\x00\x01\x03", 0x81),  # SUBACK code 3
        (b"\x90\x03\x00\x01\x87", 0x81),  # v5-only SUBACK code in 3.1.1
        (b"\xb0\x03\x00\x01\x00", 0x81),  # UNSUBACK with payload in 3.1.1
    ],
)
def test_malformed_server_packets_v311(data: bytes, reason: int) -> None:
    assert_error(client(4), data, reason)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x20\x02\x00\x00", 0x81),  # CONNACK without property length
        (b"\x20\x03\x00\x01\x00", 0x81),  # 0x01 is not a v5 CONNACK reason code
        (b"\x20\x03\x01\x80\x00", 0x82),  # session present with refusal
        (b"\x20\x05\x00\x00\x02\x24\x02", 0x82),  # maximum QoS 2
        (b"\x20\x05\x00\x00\x02\x25\x05", 0x82),  # retain available 5
        (b"\x20\x05\x00\x00\x02\x28\x02", 0x82),  # wildcard sub available 2
        (b"\x20\x05\x00\x00\x02\x01\x01", 0x81),  # payload format indicator not allowed
        (b"\x90\x03\x00\x01\x00", 0x82),  # SUBACK without codes
        (b"\x90\x04\x00\x01\x00\x05", 0x81),  # SUBACK bad code
        (b"\xb0\x03\x00\x01\x00", 0x82),  # UNSUBACK without codes
        (b"\xb0\x04\x00\x01\x00\x02", 0x81),  # UNSUBACK bad code
        (b"\xb0\x02\x00\x01", 0x81),  # UNSUBACK without property length
    ],
)
def test_malformed_server_packets_v5(data: bytes, reason: int) -> None:
    assert_error(client(5), data, reason)


# --------------------------------------------------------------------------------------
# Unsupported protocol versions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "level", "connack_level", "connack_code"),
    [
        (b"\x10\x0f\x00\x06MQIsdp\x04\x02\x00\x3c\x00\x01d", "MQIsdp", 4, 4, 0x01),
        (b"\x10\x0d\x00\x04MQTT\x03\x02\x00\x3c\x00\x01d", "MQTT", 3, 4, 0x01),
        (b"\x10\x0d\x00\x04MQTT\x06\x02\x00\x3c\x00\x01d", "MQTT", 6, 5, 0x84),
        (b"\x10\x0d\x00\x04HTTP\x04\x02\x00\x3c\x00\x01d", "HTTP", 4, 4, 0x01),
    ],
)
def test_unsupported_protocol_version(
    data: bytes, name: str, level: int, connack_level: int, connack_code: int
) -> None:
    with pytest.raises(UnsupportedProtocolVersion) as info:
        server().feed(data)
    err = info.value
    assert isinstance(err, MQTTProtocolError)
    assert err.reason_code == 0x84
    assert (err.protocol_name, err.protocol_level) == (name, level)
    assert err.response_protocol_level == connack_level
    assert err.connack_reason_code == connack_code
    reply = encode(Connack(False, err.connack_reason_code), err.response_protocol_level)
    assert reply == (b"\x20\x02\x00\x01" if connack_level == 4 else b"\x20\x03\x00\x84\x00")


def test_errors_pickle() -> None:
    err = pickle.loads(pickle.dumps(MQTTProtocolError(0x81, "boom")))
    assert (err.reason_code, str(err)) == (0x81, "boom")
    upv = pickle.loads(pickle.dumps(UnsupportedProtocolVersion("MQIsdp", 3)))
    assert (upv.protocol_name, upv.protocol_level, upv.reason_code) == ("MQIsdp", 3, 0x84)


# --------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------

CLIENT_PACKETS_V311: list[Packet] = [
    Connect("c", 4),
    CONNECT_V311,
    Connect("", 4, clean_start=True, keep_alive=0, username="u"),
    Publish("a", b"p"),
    Publish("a/b/c", b"\x00" * 1000, qos=2, retain=True, dup=True, packet_id=9),
    Puback(1),
    Pubrec(2),
    Pubrel(3),
    Pubcomp(65535),
    Subscribe(5, (Subscription("#", 0), Subscription("+/x", 2))),
    Unsubscribe(6, ("#", "a")),
    Pingreq(),
    Disconnect(),
]
SERVER_PACKETS_V311: list[Packet] = [
    Connack(True, 0),
    Connack(False, 2),
    Publish("a", b"p", qos=1, packet_id=1),
    Puback(1),
    Pubrec(2),
    Pubrel(3),
    Pubcomp(4),
    Suback(5, (0, 1, 2, 0x80)),
    Unsuback(6),
    Pingresp(),
]
PROPS = Properties(reason_string="why", user_properties=(("k", "v"),))
CLIENT_PACKETS_V5: list[Packet] = [
    Connect("c", 5),
    CONNECT_V5,
    Publish("a", b"p", qos=1, packet_id=1, properties=Properties(message_expiry_interval=5)),
    Puback(1, 0x10, PROPS),
    Pubrec(2, 0x80),
    Pubrel(3, 0x92, PROPS),
    Pubcomp(4, 0, PROPS),
    Subscribe(
        5,
        (Subscription("a", 1, True, True, 2), Subscription("$share/g/b", 2)),
        Properties(subscription_identifiers=(268_435_455,)),
    ),
    Unsubscribe(6, ("a", "b"), Properties(user_properties=(("x", "y"),))),
    Pingreq(),
    Disconnect(0x04, Properties(session_expiry_interval=0, reason_string="bye")),
    Auth(0x18, Properties(authentication_method="m", authentication_data=b"d")),
]
SERVER_PACKETS_V5: list[Packet] = [
    Connack(False, 0x86, PROPS),
    Publish("a", b"p", properties=Properties(subscription_identifiers=(1, 2, 3))),
    Suback(5, (0, 1, 2, 0x80, 0x8F, 0xA2), PROPS),
    Unsuback(6, (0, 0x11), PROPS),
    Pingresp(),
    Disconnect(0x8B),
    Auth(),
]


@pytest.mark.parametrize(
    ("level", "role", "packets"),
    [
        (4, "server", CLIENT_PACKETS_V311),
        (4, "client", SERVER_PACKETS_V311),
        (5, "server", CLIENT_PACKETS_V5),
        (5, "client", SERVER_PACKETS_V5),
    ],
)
def test_round_trip(level: int, role: str, packets: list[Packet]) -> None:
    for pkt in packets:
        decoder = MQTTDecoder(role="client" if role == "client" else "server", protocol_level=level)
        assert decode_one(decoder, encode(pkt, level)) == pkt


# --------------------------------------------------------------------------------------
# Encoder specifics
# --------------------------------------------------------------------------------------


def test_encode_v311_drops_v5_only_fields() -> None:
    props = Properties(reason_string="x")
    assert encode(Puback(1, 0x80, props), 4) == b"\x40\x02\x00\x01"
    assert encode(Disconnect(0x8E, props), 4) == b"\xe0\x00"
    assert encode(Unsuback(1, (0x11,), props), 4) == b"\xb0\x02\x00\x01"
    assert encode(Suback(1, (1, 0x87, 0x8F), props), 4) == b"\x90\x05\x00\x01\x01\x80\x80"
    pub = Publish("t", b"", properties=Properties(message_expiry_interval=5))
    assert encode(pub, 4) == b"\x30\x03\x00\x01t"
    sub = Subscription("t", 1, no_local=True, retain_as_published=True, retain_handling=2)
    assert encode(Subscribe(1, (sub,)), 4) == b"\x82\x06\x00\x01\x00\x01t\x01"


@pytest.mark.parametrize(
    ("reason", "code"),
    [(0, 0), (3, 3), (0x84, 1), (0x85, 2), (0x88, 3), (0x86, 4), (0x87, 5), (0x90, 5), (0x80, 3)],
)
def test_connack_v311_return_code_mapping(reason: int, code: int) -> None:
    assert v311_connack_return_code(reason) == code
    assert encode(Connack(False, reason), 4) == bytes([0x20, 2, 0, code])


def test_encode_minimal_forms_for_equal_empty_properties() -> None:
    assert encode(Puback(1, 0, Properties()), 5) == b"\x40\x02\x00\x01"
    assert encode(Puback(1, 0x10, Properties()), 5) == b"\x40\x03\x00\x01\x10"
    assert encode(Disconnect(0, Properties()), 5) == b"\xe0\x00"
    assert encode(Auth(0, Properties()), 5) == b"\xf0\x00"


def test_encode_large_remaining_length() -> None:
    payload = b"p" * 2_097_152
    data = encode(Publish("t", payload), 4)
    assert data[:5] == b"\x30\x83\x80\x80\x01"
    assert server(4).feed(data) == [Publish("t", payload)]


@pytest.mark.parametrize(
    ("packet", "level"),
    [
        (Publish("t", qos=1), 4),  # no packet id
        (Publish("t", qos=3, packet_id=1), 4),
        (Publish("t", qos=-1, packet_id=1), 4),
        (Publish("t", dup=True), 4),
        (Publish("t" * 70000), 4),
        (Publish("t", properties=Properties(session_expiry_interval=1)), 5),
        (Publish("t", properties=Properties(payload_format_indicator=3)), 5),
        (Publish("t", properties=Properties(topic_alias=70000)), 5),
        (Publish("t", properties=Properties(message_expiry_interval=-1)), 5),
        (Publish("t", properties=Properties(subscription_identifiers=(0,))), 5),
        (Publish("t"), 2),
        (Connect("c", 3), 4),  # a 3.1 CONNECT encoded as 3.1.1
        (Puback(0), 4),
        (Puback(1, 300), 5),
        (Connect("c", 4, password=b"p"), 4),
        (Connect("c", 4), 5),
        (Connect("c", 4, keep_alive=70000), 4),
        (Connect("c", 4, will=Will("w", qos=3)), 4),
        (Subscribe(1, ()), 4),
        (Subscribe(1, (Subscription("a", 3),)), 4),
        (Suback(1, ()), 4),
        (Unsubscribe(1, ()), 4),
        (Unsuback(1), 5),
        (Auth(), 4),
        (Disconnect(256), 5),
        (Pingreq(), 6),
    ],
)
def test_encode_rejects_unrepresentable(packet: Packet, level: int) -> None:
    with pytest.raises(ValueError):
        encode(packet, level)


def test_encode_rejects_non_packets() -> None:
    with pytest.raises(TypeError):
        encode("PINGREQ", 4)  # type: ignore[arg-type]


def test_properties_repr_lists_only_present_fields() -> None:
    assert repr(EMPTY_PROPERTIES) == "Properties()"
    assert repr(Properties(topic_alias=3, retain_available=False)) == (
        "Properties(topic_alias=3, retain_available=False)"
    )


def test_packets_are_frozen() -> None:
    pkt = Publish("t")
    with pytest.raises(AttributeError):
        pkt.topic = "u"  # type: ignore[misc]
    decoded = server(4).feed(b"\x30\x03\x00\x01t")[0]
    assert isinstance(decoded, Publish)
    assert type(decoded) is Publish
    with pytest.raises(AttributeError):
        decoded.topic = "u"  # type: ignore[misc]
    assert not hasattr(decoded, "__dict__")
    assert hash(decoded) == hash(pkt)


# --------------------------------------------------------------------------------------
# Topic helpers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("sport/tennis/player1/#", "sport/tennis/player1", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
        ("sport/tennis/player1/#", "sport/tennis/player2", False),
        ("sport/#", "sport", True),
        ("#", "sport/tennis", True),
        ("#", "/", True),
        ("sport/tennis/+", "sport/tennis/player1", True),
        ("sport/tennis/+", "sport/tennis/player1/ranking", False),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("/+", "/finance", True),
        ("+", "/finance", False),
        ("+/tennis/#", "sport/tennis/x", True),
        ("a/b", "a/b", True),
        ("a/b", "a/b/", False),
        ("a/b", "A/b", False),
        ("#", "$SYS/broker", False),
        ("+/broker", "$SYS/broker", False),
        ("$SYS/#", "$SYS/broker", True),
        ("$SYS/+", "$SYS/broker", True),
        ("+/monitor/Clients", "$SYS/monitor/Clients", False),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
        ("a/+/c", "a//c", True),
        ("a/#", "a", True),
        ("a/#", "ab", False),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    validate_topic_filter(topic_filter)
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#",
        "+",
        "a/#",
        "+/+",
        "/",
        "a//b",
        "$SYS/#",
        "$share/g/a/+",
        "$share/g/#",
        "a/b c",
        "$share",
    ],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "",
        "a/#/b",
        "#/",
        "a#",
        "a/b#",
        "a+",
        "a/+b/c",
        "++",
        "a\x00b",
        "$share/",
        "$share/g",
        "$share/g/",
        "$share//a",
        "$share/g+/a",
        "$share/g#/a",
        "$share/g/a#",
    ],
)
def test_invalid_topic_filters(topic_filter: str) -> None:
    with pytest.raises(MQTTProtocolError) as info:
        validate_topic_filter(topic_filter)
    assert info.value.reason_code == ReasonCode.TOPIC_FILTER_INVALID


def test_validate_topic_name() -> None:
    validate_topic_name("a/b")
    validate_topic_name("$SYS/x")
    for bad in ("", "a/+", "#", "a\x00"):
        with pytest.raises(MQTTProtocolError) as info:
            validate_topic_name(bad)
        assert info.value.reason_code == 0x90


def test_split_shared_subscription() -> None:
    assert split_shared_subscription("$share/g/a/b") == ("g", "a/b")
    assert split_shared_subscription("a/b") == (None, "a/b")
    assert split_shared_subscription("$share/g") == (None, "$share/g")
