"""The sans-IO MQTT session, driven with byte strings: no sockets, a scripted ingest.

Each test feeds a session the bytes a client would send and checks the bytes it wrote back (decoded
as a client would), what the ingest port was given, and whether the link was closed or paused.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.commands import mqtt as command_topics
from roost.core.device_identity import DeviceIdentity
from roost.core.devicelink import DevicePublish
from roost.core.ingest import IngestKind
from roost.errors import InvalidInput
from roost.mqtt.codec import (
    PROTOCOL_V5,
    PROTOCOL_V31,
    PROTOCOL_V311,
    Connack,
    Disconnect,
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
)
from roost.mqtt.host import GatewayConfig
from tests.mqtt.fakes import TOKENS, RecordingLink, connect_bytes, connected, make_gateway, settle

V3, V5 = PROTOCOL_V311, PROTOCOL_V5
V31 = PROTOCOL_V31  # MQTT 3.1: protocol name MQIsdp
LEVELS = [V3, V5]
TELEMETRY = "devices/dev-a/telemetry"


def publish(level: int, topic: str, payload: bytes, qos: int = 0, pid: int | None = None,
            dup: bool = False, properties: Properties | None = None) -> bytes:  # fmt: skip
    pkt = Publish(topic, payload, qos, False, dup, pid if qos else None, properties or Properties())
    return encode(pkt, level)


# -- CONNECT ----------------------------------------------------------------------------------


async def test_connect_v311_is_accepted_with_the_plain_connack_bytes() -> None:
    gateway, *_ = make_gateway()
    link = RecordingLink()
    session = gateway.open(link)
    session.feed(connect_bytes(V3))
    assert link.paused  # authenticating
    await settle(gateway)
    assert link.take() == b"\x20\x02\x00\x00"
    assert not link.paused and session.connected
    assert session.identity is not None and session.identity.device_id == "dev-a"


async def test_connect_v5_advertises_the_gateway_limits() -> None:
    gateway, *_ = make_gateway(GatewayConfig(max_packet_size=4096, receive_maximum=50))
    _, _, packets = await connected(gateway, V5, username="JWT")
    connack = packets[0]
    assert isinstance(connack, Connack) and connack.reason_code == 0
    assert connack.properties.maximum_packet_size == 4096
    assert connack.properties.receive_maximum == 50
    assert connack.properties.shared_subscription_available is False
    assert connack.properties.assigned_client_identifier is None


async def test_v5_empty_client_id_gets_an_assigned_one() -> None:
    gateway, *_ = make_gateway()
    session, _, packets = await connected(gateway, V5, client_id="")
    assigned = packets[0].properties.assigned_client_identifier  # type: ignore[union-attr]
    assert assigned and session.client_id == assigned


async def test_v311_empty_client_id_with_clean_session_is_accepted() -> None:
    gateway, *_ = make_gateway()
    session, _, packets = await connected(gateway, V3, client_id="")
    assert packets == [Connack(False, 0)] and session.client_id


async def test_v311_empty_client_id_without_clean_session_is_identifier_rejected() -> None:
    gateway, *_ = make_gateway()
    link = RecordingLink()
    gateway.open(link).feed(connect_bytes(V3, "", clean_start=False))
    await settle(gateway)
    assert link.take() == b"\x20\x02\x00\x02" and link.closed


@pytest.mark.parametrize(
    ("level", "username", "password", "expected"),
    [
        (V3, "dev-a", b"wrong", 4),
        (V3, "dev-b", b"token-a", 5),
        (V3, None, None, 4),
        (V5, "dev-a", b"wrong", 0x86),
        (V5, "JWT", b"", 0x86),
        (V5, "dev-b", b"token-a", 0x87),
    ],
)
async def test_refused_credentials_get_the_version_specific_code(
    level: int, username: str | None, password: bytes | None, expected: int
) -> None:
    gateway, *_ = make_gateway()
    link = RecordingLink()
    session = gateway.open(link)
    session.feed(connect_bytes(level, username=username, password=password))
    await settle(gateway)
    packets = link.packets(level)
    assert isinstance(packets[0], Connack) and packets[0].reason_code == expected
    assert link.closed and session.closed and not gateway.connections


async def test_authenticator_down_is_server_unavailable() -> None:
    gateway, auth, *_ = make_gateway()
    auth.unavailable = True
    link = RecordingLink()
    gateway.open(link).feed(connect_bytes(V3))
    await settle(gateway)
    assert link.take() == b"\x20\x02\x00\x03" and link.closed


async def test_unsupported_protocol_level_gets_connack_1() -> None:
    gateway, *_ = make_gateway()
    link = RecordingLink()
    gateway.open(link).feed(b"\x10\x0c\x00\x04MQTT\x03\x02\x00\x3c\x00\x00")
    await settle(gateway)
    assert link.take() == b"\x20\x02\x00\x01" and link.closed


async def test_mqtt_31_is_accepted_and_served_as_311() -> None:
    gateway, _, ingest, _ = make_gateway()
    link = RecordingLink()
    session = gateway.open(link)
    # The seed fleets' Node producer: protocolId MQIsdp, protocolVersion 3, username JWT.
    connect = connect_bytes(V31, username="JWT")
    assert connect[2:10] == b"\x00\x06MQIsdp" and connect[10] == 3
    session.feed(connect)
    await settle(gateway)
    assert link.take() == b"\x20\x02\x00\x00"
    assert session.connected and session.level == V31
    session.feed(publish(V31, TELEMETRY, b'{"t": 1}', 1, 5) + b"\xc0\x00")
    assert link.take() == b"\xd0\x00"  # PINGRESP at once
    ingest.ticket.resolve()
    assert link.take() == b"\x40\x02\x00\x05"  # PUBACK once durable
    assert ingest.stored == [(IngestKind.TELEMETRY, b'{"t": 1}')]
    session.feed(publish(V31, "devices/dev-b/telemetry", b"{}", 1, 6))
    assert link.closed  # a forbidden topic closes, as in 3.1.1


async def test_mqtt_31_resumed_session_keeps_its_state_without_the_flag_31_lacks() -> None:
    gateway, *_ = make_gateway()
    session, link, _ = await connected(gateway, V31, "keep", clean_start=False)
    session.feed(encode(Subscribe(1, (Subscription("devices/dev-a/commands/#", 1),)), V31))
    assert link.packets(V31) == [Suback(1, (1,))]
    session.feed(b"\xe0\x00")
    link = RecordingLink()
    again = gateway.open(link)
    again.feed(connect_bytes(V31, "keep", clean_start=False))
    await settle(gateway)
    # MQTT 3.1's CONNACK has no session present flag; the session is resumed all the same.
    assert link.take() == b"\x20\x02\x00\x00"
    assert again.state is not None and again.state.subscriptions
    assert gateway.deliver(1, "devices/dev-a/commands/c-1", b"{}", 1)
    [delivered] = link.packets(V31)
    assert isinstance(delivered, Publish) and delivered.topic == "devices/dev-a/commands/c-1"


@pytest.mark.parametrize(
    ("level", "expected"),
    [(V31, b"\x20\x02\x00\x05"), (V3, b"\x20\x02\x00\x05"), (V5, None)],
)
async def test_a_will_to_a_topic_the_device_may_not_use_is_refused_at_connect(
    level: int, expected: bytes | None
) -> None:
    gateway, _, ingest, _ = make_gateway()
    link = RecordingLink()
    session = gateway.open(link)
    session.feed(connect_bytes(level, will=Will("devices/dev-b/events", b'{"event": "x"}')))
    await settle(gateway)
    if expected is not None:
        assert link.take() == expected  # 3.1 / 3.1.1: return code 5, not authorized
    else:
        [connack] = link.packets(V5)
        # 0x90: "the Will Topic Name is not malformed, but is not accepted by this Server"
        assert isinstance(connack, Connack) and connack.reason_code == 0x90
        assert "devices/dev-b/events" in (connack.properties.reason_string or "")
    assert link.closed and session.closed and not gateway.connections
    assert session.state is None and not gateway.sessions_of(1)
    session.connection_lost()
    assert ingest.stored == [] and ingest.refusals == []  # never published later either


@pytest.mark.parametrize(
    "topic",
    ["devices/dev-a/events", "devices/dev-a/telemetry", "dev-a", "devices/dev-a/state/reported"],
)
async def test_a_will_to_the_devices_own_topics_is_accepted(topic: str) -> None:
    gateway, *_ = make_gateway()
    session, _, packets = await connected(gateway, V3, will=Will(topic, b"{}"))
    assert packets == [Connack(False, 0)] and session.connected


async def test_first_packet_not_connect_closes_without_answer() -> None:
    gateway, *_ = make_gateway()
    link = RecordingLink()
    gateway.open(link).feed(b"\xc0\x00")
    assert link.closed and link.take() == b""


async def test_packets_behind_connect_wait_for_authentication() -> None:
    gateway, _, ingest, _ = make_gateway()
    link = RecordingLink()
    session = gateway.open(link)
    session.feed(connect_bytes(V3) + publish(V3, TELEMETRY, b'{"t": 1}') + b"\xc0\x00")
    assert ingest.stored == []
    await settle(gateway)
    assert ingest.stored == [(IngestKind.TELEMETRY, b'{"t": 1}')]
    assert link.packets(V3) == [Connack(False, 0), Pingresp()]


async def test_no_connect_in_time_is_closed_by_the_sweep() -> None:
    gateway, _, _, clock = make_gateway(GatewayConfig(connect_timeout_s=10))
    link = RecordingLink()
    gateway.open(link).feed(b"\x10")  # a CONNECT that never completes
    gateway.tick(clock.now + 5)
    assert not link.closed
    gateway.tick(clock.now + 11)
    assert link.closed and not gateway.connections


# -- ACL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
async def test_publish_routes_by_topic(level: int) -> None:
    gateway, _, ingest, _ = make_gateway()
    session, _, _ = await connected(gateway, level)
    session.feed(
        publish(level, TELEMETRY, b"1")
        + publish(level, "devices/dev-a/events", b"2")
        + publish(level, "dev-a", b"3")
    )
    assert ingest.stored == [
        (IngestKind.TELEMETRY, b"1"),
        (IngestKind.EVENTS, b"2"),
        (IngestKind.AUTO, b"3"),
    ]


@pytest.mark.parametrize(
    "topic", ["devices/dev-b/telemetry", "dev-b", "devices/dev-a/other", "$SYS/x", "devices/dev-a"]
)
async def test_forbidden_publish_v311_closes_the_connection(topic: str) -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, V3)
    session.feed(publish(V3, topic, b"1", qos=1, pid=1))
    assert link.closed and session.closed and ingest.stored == []
    assert link.take() == b""


async def test_forbidden_publish_v5_qos1_is_puback_not_authorized_and_stays_open() -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, V5)
    session.feed(publish(V5, "devices/dev-b/telemetry", b"1", qos=1, pid=7))
    [ack] = link.packets(V5)
    assert isinstance(ack, Puback) and (ack.packet_id, ack.reason_code) == (7, 0x87)
    assert "dev-b" in (ack.properties.reason_string or "")
    assert not link.closed and ingest.stored == []


async def test_forbidden_publish_v5_qos0_is_disconnect_not_authorized() -> None:
    gateway, *_ = make_gateway()
    session, link, _ = await connected(gateway, V5)
    session.feed(publish(V5, "devices/dev-b/telemetry", b"1"))
    [pkt] = link.packets(V5)
    assert isinstance(pkt, Disconnect) and pkt.reason_code == 0x87 and link.closed


@pytest.mark.parametrize("level", LEVELS)
async def test_subscribe_grants_own_topics_and_refuses_the_rest_per_filter(level: int) -> None:
    gateway, *_ = make_gateway()
    session, link, _ = await connected(gateway, level)
    filters = [
        ("devices/dev-a/commands/#", 1),
        ("devices/dev-a/state/delta", 2),
        ("devices/dev-b/commands/#", 1),
        ("devices/+/commands/#", 0),
        ("#", 0),
        ("devices/dev-a/jobs/+/update/accepted", 1),
        ("devices/dev-a/telemetry", 0),
        ("bad/#/filter", 0),
    ]
    subs = tuple(Subscription(f, q) for f, q in filters)
    session.feed(encode(Subscribe(3, subs), level))
    [suback] = link.packets(level)
    assert isinstance(suback, Suback) and suback.packet_id == 3
    fail = 0x80 if level == V3 else 0x87
    invalid = 0x80 if level == V3 else 0x8F
    assert suback.reason_codes == (1, 2, fail, fail, fail, 1, fail, invalid)
    assert session.state is not None and set(session.state.subscriptions or ()) == {
        "devices/dev-a/commands/#", "devices/dev-a/state/delta",
        "devices/dev-a/jobs/+/update/accepted",
    }  # fmt: skip
    session.feed(encode(Unsubscribe(4, ("devices/dev-a/state/delta", "nope")), level))
    [unsuback] = link.packets(level)
    assert isinstance(unsuback, Unsuback)
    assert unsuback.reason_codes == (() if level == V3 else (0, 0x11))


async def test_shared_subscription_is_refused_in_v5() -> None:
    gateway, *_ = make_gateway()
    session, link, _ = await connected(gateway, V5)
    session.feed(encode(Subscribe(1, (Subscription("$share/g/devices/dev-a/commands/#"),)), V5))
    [suback] = link.packets(V5)
    assert suback == Suback(1, (0x9E,))


# -- QoS 0/1/2 and acknowledgements -----------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
async def test_qos0_is_stored_and_never_acknowledged(level: int) -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, level)
    session.feed(publish(level, TELEMETRY, b"1"))
    ingest.ticket.resolve()
    assert ingest.stored == [(IngestKind.TELEMETRY, b"1")] and link.take() == b""


@pytest.mark.parametrize("level", LEVELS)
async def test_puback_waits_for_durability_and_keeps_receipt_order(level: int) -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, level)
    session.feed(publish(level, TELEMETRY, b"1", 1, 10) + publish(level, TELEMETRY, b"2", 1, 11))
    first = ingest.new_batch()
    session.feed(publish(level, TELEMETRY, b"3", 1, 12))
    second = ingest.new_batch()
    assert link.take() == b""  # nothing durable yet
    second.resolve()
    assert link.take() == b""  # 12 is durable but 10 and 11 come first
    first.resolve()
    assert link.writes == 1  # three acks, one write
    assert link.take() == b"\x40\x02\x00\x0a\x40\x02\x00\x0b\x40\x02\x00\x0c"


async def test_failed_commit_is_puback_unspecified_error_in_v5() -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, V5)
    session.feed(publish(V5, TELEMETRY, b"1", 1, 5))
    ingest.new_batch().resolve(OSError("disk full"))
    [ack] = link.packets(V5)
    assert isinstance(ack, Puback) and ack.reason_code == 0x80 and not link.closed


async def test_failed_commit_closes_a_v311_connection_so_the_device_resends() -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, V3)
    session.feed(publish(V3, TELEMETRY, b"1", 1, 5))
    ingest.new_batch().resolve(OSError("disk full"))
    assert link.closed and link.take() == b""


async def test_refused_payload_v5_is_puback_payload_format_invalid_with_the_reason() -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, V5)
    session.feed(publish(V5, TELEMETRY, b"bad", 1, 9))
    [ack] = link.packets(V5)
    assert isinstance(ack, Puback) and ack.reason_code == 0x99
    assert ack.properties.reason_string == "item 0 value: not a number"
    await settle(gateway)
    assert ingest.refusals == [
        (TELEMETRY, [{"index": 0, "field": "value", "message": "not a number"}])
    ]


async def test_refused_payload_v5_without_problem_information_has_no_reason_string() -> None:
    gateway, *_ = make_gateway()
    props = Properties(request_problem_information=False)
    session, link, _ = await connected(gateway, V5, properties=props)
    session.feed(publish(V5, TELEMETRY, b"bad", 1, 9))
    assert link.packets(V5) == [Puback(9, 0x99)]


async def test_refused_payload_v311_is_acknowledged_and_recorded() -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, V3)
    session.feed(publish(V3, TELEMETRY, b"bad", 1, 9))
    assert link.take() == b"\x40\x02\x00\x09" and not link.closed
    await settle(gateway)
    assert [topic for topic, _ in ingest.refusals] == [TELEMETRY]


@pytest.mark.parametrize("level", LEVELS)
async def test_qos2_is_stored_once_released_and_completed(level: int) -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, level)
    session.feed(publish(level, TELEMETRY, b"q2", 2, 20))
    assert link.take() == b""
    session.feed(publish(level, TELEMETRY, b"q2", 2, 20, dup=True))  # resent before PUBREC
    ingest.new_batch().resolve()
    assert link.take() == b"\x50\x02\x00\x14\x50\x02\x00\x14"
    session.feed(publish(level, TELEMETRY, b"q2", 2, 20, dup=True))  # resent after PUBREC
    assert link.take() == b"\x50\x02\x00\x14"
    assert ingest.stored == [(IngestKind.TELEMETRY, b"q2")]
    session.feed(encode(Pubrel(20), level))
    assert link.take() == b"\x70\x02\x00\x14"
    session.feed(publish(level, TELEMETRY, b"again", 2, 20))  # the id is free again: new message
    ingest.new_batch().resolve()
    assert ingest.stored[-1] == (IngestKind.TELEMETRY, b"again")


async def test_pubrel_for_an_unknown_id_is_pubcomp_not_found_in_v5() -> None:
    gateway, *_ = make_gateway()
    session, link, _ = await connected(gateway, V5)
    session.feed(encode(Pubrel(33), V5))
    assert link.packets(V5) == [Pubcomp(33, 0x92)]


async def test_qos2_commit_failure_in_v5_is_pubrec_error_and_forgets_the_id() -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, V5)
    session.feed(publish(V5, TELEMETRY, b"x", 2, 4))
    ingest.new_batch().resolve(OSError("disk"))
    [rec] = link.packets(V5)
    assert isinstance(rec, Pubrec) and rec.reason_code == 0x80
    assert session.state is not None and not session.state.qos2_in


async def test_busy_writer_pauses_reading_and_never_drops() -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, V3)
    ingest.busy = True
    session.feed(publish(V3, TELEMETRY, b"1", 1, 1) + publish(V3, TELEMETRY, b"2", 1, 2))
    await settle(gateway)
    assert link.paused and ingest.stored == []
    ingest.capacity.set()
    await settle(gateway)
    assert not link.paused
    assert ingest.stored == [(IngestKind.TELEMETRY, b"1"), (IngestKind.TELEMETRY, b"2")]
    ingest.ticket.resolve()
    assert link.take() == b"\x40\x02\x00\x01\x40\x02\x00\x02"


async def test_slow_path_submits_and_keeps_order() -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, V3)
    session.feed(publish(V3, TELEMETRY, b"slow", 1, 1) + publish(V3, TELEMETRY, b"fast", 1, 2))
    assert link.paused
    await settle(gateway)
    assert ingest.stored == [(IngestKind.TELEMETRY, b"slow"), (IngestKind.TELEMETRY, b"fast")]
    ingest.ticket.resolve()
    assert link.take() == b"\x40\x02\x00\x01\x40\x02\x00\x02" and not link.paused


async def test_receive_maximum_exceeded_is_disconnect_0x93_in_v5() -> None:
    gateway, *_ = make_gateway(GatewayConfig(receive_maximum=2))
    session, link, _ = await connected(gateway, V5)
    session.feed(b"".join(publish(V5, TELEMETRY, b"1", 1, pid) for pid in (1, 2, 3)))
    [pkt] = link.packets(V5)
    assert isinstance(pkt, Disconnect) and pkt.reason_code == 0x93 and link.closed


async def test_receive_maximum_pauses_a_v311_client_until_acks_leave() -> None:
    gateway, _, ingest, _ = make_gateway(GatewayConfig(receive_maximum=2))
    session, link, _ = await connected(gateway, V3)
    session.feed(b"".join(publish(V3, TELEMETRY, b"1", 1, pid) for pid in (1, 2, 3)))
    assert link.paused and not link.closed
    ingest.ticket.resolve()
    assert not link.paused and len(link.take()) == 12


async def test_topic_alias_is_resolved_and_range_checked() -> None:
    gateway, _, ingest, _ = make_gateway(GatewayConfig(topic_alias_maximum=2))
    session, link, _ = await connected(gateway, V5)
    session.feed(publish(V5, TELEMETRY, b"1", properties=Properties(topic_alias=1)))
    session.feed(publish(V5, "", b"2", properties=Properties(topic_alias=1)))
    assert ingest.stored == [(IngestKind.TELEMETRY, b"1"), (IngestKind.TELEMETRY, b"2")]
    session.feed(publish(V5, TELEMETRY, b"3", properties=Properties(topic_alias=3)))
    [pkt] = link.packets(V5)
    assert isinstance(pkt, Disconnect) and pkt.reason_code == 0x94


async def test_oversize_packet_is_disconnect_0x95_in_v5_and_a_close_in_v311() -> None:
    gateway, *_ = make_gateway(GatewayConfig(max_packet_size=256))
    session, link, _ = await connected(gateway, V5)
    session.feed(publish(V5, TELEMETRY, b"x" * 300, 1, 1)[:50])  # the header says enough
    [pkt] = link.packets(V5)
    assert isinstance(pkt, Disconnect) and pkt.reason_code == 0x95 and link.closed
    session, link, _ = await connected(gateway, V3, "c2")
    session.feed(publish(V3, TELEMETRY, b"x" * 300, 1, 1))
    assert link.closed and link.take() == b""


async def test_malformed_packet_is_disconnect_0x81() -> None:
    gateway, *_ = make_gateway()
    session, link, _ = await connected(gateway, V5)
    session.feed(b"\x32\x03\x00\x05a")  # topic length past the packet
    [pkt] = link.packets(V5)
    assert isinstance(pkt, Disconnect) and pkt.reason_code == 0x81 and link.closed


# -- routed topics -------------------------------------------------------------------------------


async def test_state_topic_without_handler_is_not_supported_yet() -> None:
    gateway, *_ = make_gateway()
    session, link, _ = await connected(gateway, V5)
    session.feed(publish(V5, "devices/dev-a/state/reported", b"{}", 1, 3))
    [ack] = link.packets(V5)
    assert isinstance(ack, Puback) and ack.reason_code == 0x83
    assert ack.properties.reason_string == "not supported yet"
    session, link, _ = await connected(gateway, V3, "c3")
    session.feed(publish(V3, "devices/dev-a/state/reported", b"{}", 1, 3))
    assert link.take() == b"\x40\x02\x00\x03"


async def test_route_handler_gets_the_message_and_the_ack_waits_for_it() -> None:
    gateway, *_ = make_gateway()
    seen: list[DevicePublish] = []

    async def handler(message: DevicePublish) -> None:
        seen.append(message)
        if message.payload == b"invalid":
            raise InvalidInput("bad status")

    gateway.route(command_topics.RESPONSE, handler)
    session, link, _ = await connected(gateway, V5)
    topic = "devices/dev-a/commands/c1/response"
    session.feed(publish(V5, topic, b"ok", 1, 1) + publish(V5, topic, b"invalid", 1, 2))
    await settle(gateway)
    assert [m.payload for m in seen] == [b"ok", b"invalid"]
    assert seen[0].identity.device_id == "dev-a" and seen[0].topic == topic
    acks = link.packets(V5)
    assert [(a.packet_id, a.reason_code) for a in acks] == [(1, 0), (2, 0x99)]  # type: ignore[union-attr]


# -- keep alive, will, disconnect ------------------------------------------------------------------

WILL = Will("devices/dev-a/events", b'{"event": "gone"}', 1)


@pytest.mark.parametrize("level", LEVELS)
async def test_keepalive_expiry_closes_and_publishes_the_will(level: int) -> None:
    gateway, _, ingest, clock = make_gateway()
    session, link, _ = await connected(gateway, level, keep_alive=10, will=WILL)
    gateway.tick(clock.now + 14)
    assert not link.closed
    clock.now += 10
    session.feed(b"\xc0\x00")  # PINGREQ resets the clock
    assert link.packets(level) == [Pingresp()]
    gateway.tick(clock.now + 14)
    assert not link.closed
    gateway.tick(clock.now + 16)
    assert link.closed and session.closed
    if level == V5:
        [pkt] = link.packets(level)
        assert isinstance(pkt, Disconnect) and pkt.reason_code == 0x8D
    assert ingest.stored == [(IngestKind.EVENTS, b'{"event": "gone"}')]


async def test_keepalive_zero_means_the_maximum_and_v5_is_told() -> None:
    gateway, *_ = make_gateway(GatewayConfig(max_keep_alive_s=300))
    _, _, packets = await connected(gateway, V5, keep_alive=0)
    assert packets[0].properties.server_keep_alive == 300  # type: ignore[union-attr]


@pytest.mark.parametrize("level", LEVELS)
async def test_graceful_disconnect_drops_the_will(level: int) -> None:
    gateway, _, ingest, _ = make_gateway()
    session, link, _ = await connected(gateway, level, will=WILL)
    session.feed(b"\xe0\x00")
    assert link.closed and ingest.stored == [] and not gateway.connections


async def test_v5_disconnect_with_will_message_publishes_it() -> None:
    gateway, _, ingest, _ = make_gateway()
    session, _, _ = await connected(gateway, V5, will=WILL)
    session.feed(encode(Disconnect(0x04), V5))
    assert ingest.stored == [(IngestKind.EVENTS, WILL.payload)]


@pytest.mark.parametrize("level", [V31, V3])
async def test_connection_lost_publishes_the_will(level: int) -> None:
    gateway, _, ingest, _ = make_gateway()
    session, _, _ = await connected(gateway, level, will=WILL)
    session.connection_lost()
    assert ingest.stored == [(IngestKind.EVENTS, WILL.payload)]


async def test_will_delay_waits_and_is_cancelled_when_the_session_resumes() -> None:
    gateway, _, ingest, clock = make_gateway()
    delayed = Will(WILL.topic, WILL.payload, 1, properties=Properties(will_delay_interval=30))
    props = Properties(session_expiry_interval=600)
    session, _, _ = await connected(gateway, V5, will=delayed, properties=props)
    session.connection_lost()
    gateway.tick(clock.now + 29)
    assert ingest.stored == []
    gateway.tick(clock.now + 31)
    assert ingest.stored == [(IngestKind.EVENTS, WILL.payload)]
    session, _, _ = await connected(gateway, V5, "c2", will=delayed, properties=props)
    session.connection_lost()
    clock.now += 10
    await connected(gateway, V5, "c2", clean_start=False, properties=props)
    gateway.tick(clock.now + 100)
    assert len(ingest.stored) == 1  # resumed within the delay: no second will


async def test_revocation_closes_with_not_authorized_and_no_will() -> None:
    gateway, auth, ingest, _ = make_gateway()
    gateway.start()
    session_a, link_a, _ = await connected(gateway, V5, will=WILL)
    session_b, link_b, _ = await connected(
        gateway, V3, "other", username="dev-b", password=b"token-b"
    )
    auth.revoke("cred-a")
    [pkt] = link_a.packets(V5)
    assert isinstance(pkt, Disconnect) and pkt.reason_code == 0x87
    assert link_a.closed and not link_b.closed and ingest.stored == []
    await gateway.close()
    assert link_b.closed


# -- sessions: takeover, persistence, delivery ----------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
async def test_second_connect_with_the_same_client_id_takes_over(level: int) -> None:
    gateway, *_ = make_gateway()
    first, link1, _ = await connected(gateway, level, "same")
    second, link2, packets = await connected(gateway, level, "same")
    assert first.closed and link1.closed and not second.closed
    if level == V5:
        [pkt] = link1.packets(level)
        assert isinstance(pkt, Disconnect) and pkt.reason_code == 0x8E
    connack = packets[0]
    assert isinstance(connack, Connack) and (connack.session_present, connack.reason_code) == (
        False, 0,
    )  # fmt: skip
    assert gateway.connections == {second}


async def test_another_device_cannot_take_over_by_client_id() -> None:
    gateway, *_ = make_gateway()
    first, link1, _ = await connected(gateway, V3, "same")
    await connected(gateway, V3, "same", username="dev-b", password=b"token-b")
    assert not first.closed and not link1.closed


async def test_persistent_session_keeps_subscriptions_and_queued_messages() -> None:
    gateway, *_ = make_gateway()
    session, link, _ = await connected(gateway, V3, "p", clean_start=False)
    session.feed(encode(Subscribe(1, (Subscription("devices/dev-a/commands/#", 1),)), V3))
    assert link.packets(V3) == [Suback(1, (1,))]
    session.connection_lost()
    assert gateway.deliver(1, "devices/dev-a/commands/42", b"reboot", 1)
    assert not gateway.deliver(1, "devices/dev-a/state/delta", b"{}", 1)  # not subscribed
    session, link, packets = await connected(gateway, V3, "p", clean_start=False)
    assert packets == [
        Connack(True, 0),
        Publish("devices/dev-a/commands/42", b"reboot", 1, packet_id=1),
    ]
    session.feed(encode(Puback(1), V3))
    assert session.state is not None and not session.state.inflight


async def test_inflight_message_is_resent_with_dup_on_reconnect() -> None:
    gateway, *_ = make_gateway()
    session, link, _ = await connected(gateway, V3, "p", clean_start=False)
    session.feed(encode(Subscribe(1, (Subscription("devices/dev-a/commands/#", 2),)), V3))
    link.take()
    assert gateway.deliver(1, "devices/dev-a/commands/1", b"a", 1)
    assert link.packets(V3) == [Publish("devices/dev-a/commands/1", b"a", 1, packet_id=1)]
    session.connection_lost()  # no PUBACK
    _, _, packets = await connected(gateway, V3, "p", clean_start=False)
    assert packets[1] == Publish("devices/dev-a/commands/1", b"a", 1, dup=True, packet_id=1)


async def test_clean_session_forgets_subscriptions() -> None:
    gateway, *_ = make_gateway()
    session, _, _ = await connected(gateway, V3, "p", clean_start=False)
    session.feed(encode(Subscribe(1, (Subscription("devices/dev-a/commands/#", 1),)), V3))
    session.connection_lost()
    _, _, packets = await connected(gateway, V3, "p", clean_start=True)
    assert packets == [Connack(False, 0)]
    assert not gateway.deliver(1, "devices/dev-a/commands/1", b"a", 1)


async def test_persistent_session_expires() -> None:
    gateway, _, _, clock = make_gateway()
    props = Properties(session_expiry_interval=60)
    session, _, _ = await connected(gateway, V5, "p", clean_start=False, properties=props)
    session.connection_lost()
    assert gateway.sessions_of(1)
    gateway.tick(clock.now + 61)
    assert not gateway.sessions_of(1)


async def test_deliver_uses_min_qos_and_respects_the_client_receive_maximum() -> None:
    gateway, *_ = make_gateway()
    props = Properties(receive_maximum=2)
    session, link, _ = await connected(gateway, V5, properties=props)
    session.feed(encode(Subscribe(1, (Subscription("devices/dev-a/commands/#", 1),)), V5))
    link.take()
    for n in range(3):
        assert gateway.deliver(1, f"devices/dev-a/commands/{n}", b"x", 2)
    sent = link.packets(V5)
    assert [(p.qos, p.packet_id) for p in sent] == [(1, 1), (1, 2)]  # type: ignore[union-attr]
    session.feed(encode(Puback(1), V5))
    [third] = link.packets(V5)
    assert isinstance(third, Publish) and third.topic == "devices/dev-a/commands/2"
    assert gateway.deliver(1, "devices/dev-a/commands/q0", b"x", 0)
    [q0] = link.packets(V5)
    assert isinstance(q0, Publish) and q0.qos == 0


async def test_deliver_qos2_runs_the_full_handshake() -> None:
    gateway, *_ = make_gateway()
    session, link, _ = await connected(gateway, V5)
    session.feed(encode(Subscribe(1, (Subscription("devices/dev-a/commands/#", 2),)), V5))
    link.take()
    gateway.deliver(1, "devices/dev-a/commands/9", b"x", 2)
    [pub] = link.packets(V5)
    assert isinstance(pub, Publish) and pub.qos == 2
    session.feed(encode(Pubrec(pub.packet_id or 0), V5))
    assert link.packets(V5) == [Pubrel(pub.packet_id or 0)]
    session.feed(encode(Pubcomp(pub.packet_id or 0), V5))
    assert session.state is not None and not session.state.inflight


async def test_delivery_queue_is_bounded() -> None:
    gateway, *_ = make_gateway(GatewayConfig(max_queued_messages=2))
    session, _, _ = await connected(gateway, V3, "p", clean_start=False)
    session.feed(encode(Subscribe(1, (Subscription("devices/dev-a/commands/#", 1),)), V3))
    session.connection_lost()
    assert [gateway.deliver(1, "devices/dev-a/commands/x", b"x", 1) for _ in range(3)] == [
        True, True, False,
    ]  # fmt: skip


async def test_keepalive_is_not_held_against_a_client_we_stopped_reading() -> None:
    gateway, _, ingest, clock = make_gateway()
    session, link, _ = await connected(gateway, V3, keep_alive=10)
    ingest.busy = True
    session.feed(publish(V3, TELEMETRY, b"1", 1, 1))
    await settle(gateway)
    gateway.tick(clock.now + 60)
    assert link.paused and not link.closed
    clock.now += 60
    ingest.capacity.set()
    await settle(gateway)
    gateway.tick(clock.now + 14)
    assert not link.closed  # the silence counts again from the resume


async def test_credential_expiry_closes_the_session() -> None:
    gateway, _, _, clock = make_gateway()
    gateway.wall_clock = lambda: 1_700_000_000.0
    expires = datetime.fromtimestamp(1_700_000_030, UTC)
    expiring = DeviceIdentity("t1", "dev-a", 1, "cred-x", expires)
    TOKENS[b"expiring"] = expiring
    try:
        session, link, _ = await connected(gateway, V5, password=b"expiring")
    finally:
        del TOKENS[b"expiring"]
    gateway.tick(clock.now + 29)
    assert not link.closed
    gateway.tick(clock.now + 31)
    [pkt] = link.packets(V5)
    assert isinstance(pkt, Disconnect) and pkt.reason_code == 0x87 and link.closed


async def test_subscribe_hooks_hear_granted_filters_only() -> None:
    gateway, *_ = make_gateway()
    heard: list[tuple[str, str]] = []
    gateway.on_subscribe(
        lambda identity, topic_filter: heard.append((identity.device_id, topic_filter))
    )
    session, _, _ = await connected(gateway, V5)
    subs = (Subscription("devices/dev-a/jobs/notify", 1), Subscription("devices/dev-b/jobs/notify"))
    session.feed(encode(Subscribe(1, subs), V5))
    assert heard == [("dev-a", "devices/dev-a/jobs/notify")]


_CLIENT_PACKETS = [
    publish(V5, TELEMETRY, b"1", 1, 1),
    publish(V5, TELEMETRY, b"bad", 2, 2),
    publish(V5, "devices/dev-b/telemetry", b"1", 1, 3),
    publish(V5, "devices/dev-a/jobs/j/update", b"{}", 2, 4),
    encode(Pubrel(2), V5),
    encode(Subscribe(5, (Subscription("devices/dev-a/commands/#", 2),)), V5),
    encode(Puback(1), V5),
    encode(Pubrec(1), V5),
    b"\xc0\x00",
]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.one_of(st.sampled_from(_CLIENT_PACKETS), st.binary(min_size=1, max_size=40)),
        max_size=8,
    ),
    st.booleans(),
)
def test_any_byte_stream_after_connect_only_answers_or_closes(
    chunks: list[bytes], deliver: bool
) -> None:
    async def run() -> None:
        gateway, _, ingest, _ = make_gateway()
        session, link, _ = await connected(gateway, V5)
        for chunk in chunks:
            session.feed(chunk)
            if deliver:
                gateway.deliver(1, "devices/dev-a/commands/x", b"x", 2)
        await settle(gateway)
        ingest.ticket.resolve()
        link.packets(V5)  # whatever was written decodes as valid server packets
        if session.closed:
            assert link.closed and session not in gateway.connections

    asyncio.run(run())
