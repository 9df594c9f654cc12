"""Property-based tests for the sans-IO MQTT codec: round trips and robustness."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from roost.mqtt.codec import (
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
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
    topic_matches,
    validate_topic_filter,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- building blocks -------------------------------------------------------------------

mqtt_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
topic_name = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00+#"),
    min_size=1,
    max_size=16,
)
topic_filter = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"),
    min_size=1,
    max_size=16,
)
binary = st.binary(max_size=24)
packet_id = st.integers(1, 0xFFFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
sub_id = st.integers(1, 268_435_455)
user_props = st.lists(st.tuples(mqtt_text, mqtt_text), max_size=3).map(tuple)

PROPERTY_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "payload_format_indicator": st.sampled_from([0, 1]),
    "message_expiry_interval": u32,
    "content_type": mqtt_text,
    "response_topic": topic_name,
    "correlation_data": binary,
    "session_expiry_interval": u32,
    "assigned_client_identifier": mqtt_text,
    "server_keep_alive": u16,
    "authentication_method": mqtt_text,
    "authentication_data": binary,
    "request_problem_information": st.booleans(),
    "will_delay_interval": u32,
    "request_response_information": st.booleans(),
    "response_information": mqtt_text,
    "server_reference": mqtt_text,
    "reason_string": mqtt_text,
    "receive_maximum": st.integers(1, 0xFFFF),
    "topic_alias_maximum": u16,
    "topic_alias": st.integers(1, 0xFFFF),
    "maximum_qos": st.sampled_from([0, 1]),
    "retain_available": st.booleans(),
    "user_properties": user_props,
    "maximum_packet_size": st.integers(1, 0xFFFF_FFFF),
    "wildcard_subscription_available": st.booleans(),
    "subscription_identifier_available": st.booleans(),
    "shared_subscription_available": st.booleans(),
}


def properties(*names: str, sub_ids: int = 0) -> st.SearchStrategy[Properties]:
    """Properties using only ``names`` (plus up to ``sub_ids`` subscription identifiers)."""
    optional = {name: PROPERTY_STRATEGIES[name] for name in names}
    if sub_ids:
        optional["subscription_identifiers"] = st.lists(sub_id, min_size=1, max_size=sub_ids).map(
            tuple
        )
    return st.fixed_dictionaries({}, optional=optional).map(lambda d: Properties(**d))


ACK_PROPS = ("reason_string", "user_properties")
WILL_PROPS = (
    "payload_format_indicator",
    "message_expiry_interval",
    "content_type",
    "response_topic",
    "correlation_data",
    "will_delay_interval",
    "user_properties",
)
CONNECT_PROPS = (
    "session_expiry_interval",
    "authentication_method",
    "authentication_data",
    "request_problem_information",
    "request_response_information",
    "receive_maximum",
    "topic_alias_maximum",
    "user_properties",
    "maximum_packet_size",
)
CONNACK_PROPS = (
    "session_expiry_interval",
    "assigned_client_identifier",
    "server_keep_alive",
    "authentication_method",
    "authentication_data",
    "response_information",
    "server_reference",
    "reason_string",
    "receive_maximum",
    "topic_alias_maximum",
    "maximum_qos",
    "retain_available",
    "user_properties",
    "maximum_packet_size",
    "wildcard_subscription_available",
    "subscription_identifier_available",
    "shared_subscription_available",
)
PUBLISH_PROPS = (
    "payload_format_indicator",
    "message_expiry_interval",
    "content_type",
    "response_topic",
    "correlation_data",
    "topic_alias",
    "user_properties",
)

RC_PUBACK = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
RC_PUBREL = [0x00, 0x92]
RC_CONNACK_V5 = [0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C]
RC_SUBACK_V5 = [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2]
RC_UNSUBACK = [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]
RC_DISCONNECT = [0x00, 0x04, 0x80, 0x81, 0x82, 0x8B, 0x8E, 0x95, 0x9C, 0xA2]
RC_AUTH = [0x00, 0x18, 0x19]


def _props_or_empty(v5: bool, strategy: st.SearchStrategy[Properties]) -> Any:
    return strategy if v5 else st.just(Properties())


# -- packet strategies -----------------------------------------------------------------


@st.composite
def connect(draw: st.DrawFn, level: int) -> Connect:
    v5 = level == 5
    username = draw(st.none() | mqtt_text)
    password = draw(st.none() | binary)
    if not v5 and username is None:
        password = None
    client_id = draw(mqtt_text)
    clean_start = draw(st.booleans()) if (v5 or client_id) else True
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(topic_name),
            draw(binary),
            draw(st.integers(0, 2)),
            draw(st.booleans()),
            draw(_props_or_empty(v5, properties(*WILL_PROPS))),
        )
    props = draw(_props_or_empty(v5, properties(*CONNECT_PROPS)))
    if props.authentication_data is not None and props.authentication_method is None:
        props = dataclasses.replace(props, authentication_method="m")
    return Connect(client_id, level, clean_start, draw(u16), username, password, will, props)


@st.composite
def connack(draw: st.DrawFn, level: int) -> Connack:
    if level == 5:
        code = draw(st.sampled_from(RC_CONNACK_V5))
        props = draw(properties(*CONNACK_PROPS))
    else:
        code = draw(st.integers(0, 5))
        props = Properties()
    return Connack(draw(st.booleans()) if code == 0 else False, code, props)


@st.composite
def publish(draw: st.DrawFn, level: int, from_server: bool) -> Publish:
    v5 = level == 5
    qos = draw(st.integers(0, 2))
    props = draw(_props_or_empty(v5, properties(*PUBLISH_PROPS, sub_ids=3 if from_server else 0)))
    topic = draw(topic_name)
    if v5 and props.topic_alias is not None and draw(st.booleans()):
        topic = ""
    return Publish(
        topic,
        draw(st.binary(max_size=300)),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
        draw(packet_id) if qos else None,
        props,
    )


@st.composite
def ack(draw: st.DrawFn, level: int, cls: type[Puback | Pubrec | Pubrel | Pubcomp]) -> Packet:
    if level == 4:
        return cls(draw(packet_id))
    codes = RC_PUBREL if cls in (Pubrel, Pubcomp) else RC_PUBACK
    return cls(draw(packet_id), draw(st.sampled_from(codes)), draw(properties(*ACK_PROPS)))


@st.composite
def subscription(draw: st.DrawFn, level: int) -> Subscription:
    topic_filter_ = draw(topic_filter | st.sampled_from(["#", "a/+", "$share/g/x/#"]))
    if level == 4:
        return Subscription(topic_filter_, draw(st.integers(0, 2)))
    no_local = draw(st.booleans()) and not topic_filter_.startswith("$share/")
    return Subscription(
        topic_filter_,
        draw(st.integers(0, 2)),
        no_local,
        draw(st.booleans()),
        draw(st.integers(0, 2)),
    )


@st.composite
def subscribe(draw: st.DrawFn, level: int) -> Subscribe:
    subs = tuple(draw(st.lists(subscription(level), min_size=1, max_size=4)))
    props = draw(_props_or_empty(level == 5, properties("user_properties", sub_ids=1)))
    return Subscribe(draw(packet_id), subs, props)


@st.composite
def suback(draw: st.DrawFn, level: int) -> Suback:
    codes = RC_SUBACK_V5 if level == 5 else [0, 1, 2, 0x80]
    return Suback(
        draw(packet_id),
        tuple(draw(st.lists(st.sampled_from(codes), min_size=1, max_size=5))),
        draw(_props_or_empty(level == 5, properties(*ACK_PROPS))),
    )


@st.composite
def unsubscribe(draw: st.DrawFn, level: int) -> Unsubscribe:
    return Unsubscribe(
        draw(packet_id),
        tuple(draw(st.lists(topic_filter, min_size=1, max_size=4))),
        draw(_props_or_empty(level == 5, properties("user_properties"))),
    )


@st.composite
def unsuback(draw: st.DrawFn, level: int) -> Unsuback:
    if level == 4:
        return Unsuback(draw(packet_id))
    return Unsuback(
        draw(packet_id),
        tuple(draw(st.lists(st.sampled_from(RC_UNSUBACK), min_size=1, max_size=5))),
        draw(properties(*ACK_PROPS)),
    )


@st.composite
def disconnect(draw: st.DrawFn, level: int) -> Disconnect:
    if level == 4:
        return Disconnect()
    return Disconnect(
        draw(st.sampled_from(RC_DISCONNECT)),
        draw(
            properties(
                "session_expiry_interval", "server_reference", "reason_string", "user_properties"
            )
        ),
    )


@st.composite
def auth(draw: st.DrawFn) -> Auth:
    return Auth(
        draw(st.sampled_from(RC_AUTH)),
        draw(
            properties(
                "authentication_method",
                "authentication_data",
                "reason_string",
                "user_properties",
            )
        ),
    )


def client_packet(level: int) -> st.SearchStrategy[Packet]:
    """Any packet a client may send (except CONNECT)."""
    options: list[st.SearchStrategy[Packet]] = [
        publish(level, from_server=False),
        ack(level, Puback),
        ack(level, Pubrec),
        ack(level, Pubrel),
        ack(level, Pubcomp),
        subscribe(level),
        unsubscribe(level),
        st.just(Pingreq()),
        disconnect(level),
    ]
    if level == 5:
        options.append(auth())
    return st.one_of(options)


def server_packet(level: int) -> st.SearchStrategy[Packet]:
    """Any packet a server may send."""
    options: list[st.SearchStrategy[Packet]] = [
        connack(level),
        publish(level, from_server=True),
        ack(level, Puback),
        ack(level, Pubrec),
        ack(level, Pubrel),
        ack(level, Pubcomp),
        suback(level),
        unsuback(level),
        st.just(Pingresp()),
        disconnect(level),
    ]
    if level == 5:
        options.append(auth())
    return st.one_of(options)


@st.composite
def client_session(draw: st.DrawFn) -> tuple[int, list[Packet]]:
    """A client-to-server stream: a CONNECT then further client packets (level 3 is MQTT 3.1,
    whose packets after CONNECT are 3.1.1's)."""
    level = draw(st.sampled_from([3, 4, 5]))
    packets: list[Packet] = [draw(connect(level))]
    packets += draw(st.lists(client_packet(4 if level == 3 else level), max_size=6))
    return level, packets


@st.composite
def server_session(draw: st.DrawFn) -> tuple[int, list[Packet]]:
    """A server-to-client stream of packets."""
    level = draw(st.sampled_from([4, 5]))
    return level, draw(st.lists(server_packet(level), min_size=1, max_size=6))


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """Split ``data`` into chunks with the given sizes, cycling them."""
    chunks = []
    pos = 0
    i = 0
    while pos < len(data):
        size = sizes[i % len(sizes)] if sizes else len(data)
        chunks.append(data[pos : pos + size])
        pos += size
        i += 1
    return chunks


chunk_sizes = st.lists(st.integers(1, 64), max_size=8)


# -- (a) round trips -------------------------------------------------------------------


@SETTINGS
@given(session=client_session(), sizes=chunk_sizes)
def test_round_trip_client_stream(session: tuple[int, list[Packet]], sizes: list[int]) -> None:
    level, packets = session
    data = b"".join(encode(p, level) for p in packets)
    decoder = MQTTDecoder()
    out: list[Packet] = []
    for chunk in chunked(data, sizes):
        out += decoder.feed(chunk)
    assert out == packets
    assert decoder.protocol_level == (4 if level == 3 else level)
    assert decoder.buffered == 0


@SETTINGS
@given(session=server_session(), sizes=chunk_sizes)
def test_round_trip_server_stream(session: tuple[int, list[Packet]], sizes: list[int]) -> None:
    level, packets = session
    data = b"".join(encode(p, level) for p in packets)
    decoder = MQTTDecoder(role="client", protocol_level=level)
    out: list[Packet] = []
    for chunk in chunked(data, sizes):
        out += decoder.feed(chunk)
    assert out == packets


@SETTINGS
@given(
    level=st.sampled_from([4, 5]),
    data=st.data(),
)
def test_round_trip_single_packets(level: int, data: st.DataObject) -> None:
    from_server = data.draw(st.booleans())
    pkt = data.draw(server_packet(level) if from_server else client_packet(level))
    raw = encode(pkt, level)
    decoder = MQTTDecoder(role="client" if from_server else "server", protocol_level=level)
    assert decoder.feed(raw) == [pkt]
    # and the generic (non-inlined) PUBLISH parser agrees with the hot path
    if isinstance(pkt, Publish):
        size = raw[1] & 0x7F
        hl = 2
        shift = 7
        while raw[hl - 1] & 0x80:
            size |= (raw[hl] & 0x7F) << shift
            hl += 1
            shift += 7
        fresh = MQTTDecoder(role="client" if from_server else "server", protocol_level=level)
        assert fresh._parse_publish(raw, hl, hl + size, raw[0]) == pkt


# -- (b) robustness --------------------------------------------------------------------


def _decoder(config: tuple[str, int | None]) -> MQTTDecoder:
    role, level = config
    if role == "client":
        return MQTTDecoder(role="client", protocol_level=level)
    return MQTTDecoder(1_000_000, protocol_level=level)


decoder_config = st.sampled_from(
    [("server", None), ("server", 4), ("server", 5), ("client", 3), ("client", 4), ("client", 5)]
)


def feed_all(decoder: MQTTDecoder, chunks: list[bytes]) -> None:
    """Feed every chunk; only MQTTProtocolError may escape, and it ends the stream."""
    for chunk in chunks:
        try:
            packets = decoder.feed(chunk)
        except MQTTProtocolError as exc:
            assert isinstance(exc.reason_code, int)
            assert 0x80 <= exc.reason_code <= 0xA2
            # a failed decoder stays failed, with the same kind of error
            try:
                decoder.feed(b"\xc0\x00")
            except MQTTProtocolError as again:
                assert again.reason_code == exc.reason_code
            else:
                raise AssertionError("decoder accepted data after an error") from None
            return
        assert isinstance(packets, list)
        assert decoder.buffered <= sum(len(c) for c in chunks)


@settings(max_examples=300, deadline=None)
@given(config=decoder_config, data=st.binary(max_size=200), sizes=chunk_sizes)
def test_arbitrary_bytes(config: tuple[str, int | None], data: bytes, sizes: list[int]) -> None:
    feed_all(_decoder(config), chunked(data, sizes))


@settings(max_examples=300, deadline=None)
@given(config=decoder_config, body=st.binary(max_size=127), first=st.integers(0, 255))
def test_arbitrary_body_with_valid_length(
    config: tuple[str, int | None], body: bytes, first: int
) -> None:
    """Random bodies behind a consistent fixed header reach the per-packet parsers."""
    feed_all(_decoder(config), [bytes([first, len(body)]) + body])


@st.composite
def mutated_stream(draw: st.DrawFn) -> tuple[tuple[str, int | None], bytes]:
    if draw(st.booleans()):
        level, packets = draw(client_session())
        config: tuple[str, int | None] = ("server", None)
    else:
        level, packets = draw(server_session())
        config = ("client", level)
    data = bytearray(b"".join(encode(p, level) for p in packets))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[i : i + draw(st.integers(1, 4))]
        else:
            del data[i:]
    return config, bytes(data)


@settings(max_examples=400, deadline=None)
@given(case=mutated_stream(), sizes=chunk_sizes)
def test_mutated_valid_streams(
    case: tuple[tuple[str, int | None], bytes], sizes: list[int]
) -> None:
    config, data = case
    feed_all(_decoder(config), chunked(data, sizes))


@settings(max_examples=200, deadline=None)
@given(session=client_session(), cut=st.integers(0, 10_000))
def test_truncated_stream_only_buffers(session: tuple[int, list[Packet]], cut: int) -> None:
    """A prefix of a valid stream yields a prefix of its packets and keeps the rest."""
    level, packets = session
    data = b"".join(encode(p, level) for p in packets)
    cut = min(cut, len(data))
    decoder = MQTTDecoder()
    out = decoder.feed(data[:cut])
    assert out == packets[: len(out)]
    assert out + decoder.feed(data[cut:]) == packets


# -- topic helpers ---------------------------------------------------------------------

level_text = st.text(st.sampled_from("ab$"), max_size=2)


@settings(max_examples=300, deadline=None)
@given(
    topic_levels=st.lists(level_text, min_size=1, max_size=5),
    data=st.data(),
)
def test_topic_matches_against_reference(topic_levels: list[str], data: st.DataObject) -> None:
    topic = "/".join(topic_levels)
    filter_levels = data.draw(
        st.lists(level_text | st.sampled_from(["+", "#"]), min_size=1, max_size=6)
    )
    if "#" in filter_levels:
        filter_levels = filter_levels[: filter_levels.index("#") + 1]
    topic_filter = "/".join(filter_levels)
    assume(topic_filter)
    validate_topic_filter(topic_filter)

    def reference(f: list[str], t: list[str]) -> bool:
        if not f:
            return not t
        if f[0] == "#":
            return True
        if not t:
            return False
        return (f[0] == "+" or f[0] == t[0]) and reference(f[1:], t[1:])

    expected = reference(filter_levels, topic_levels)
    if topic.startswith("$") and filter_levels[0] in ("+", "#"):
        expected = False
    assert topic_matches(topic_filter, topic) is expected
