"""The simulator builds PUBLISH frames by hand; Roost's own decoder must read them back exactly."""

from __future__ import annotations

import pytest

from roost.mqtt.codec import PROTOCOL_V5, PROTOCOL_V311, MQTTDecoder, Publish
from roost.sim.mqtt_client import publish_frame


@pytest.mark.parametrize("level", [PROTOCOL_V311, PROTOCOL_V5])
@pytest.mark.parametrize("size", [0, 100, 200, 20_000])  # 1-, 2- and 3-byte remaining lengths
def test_hand_built_publish_frames_decode_as_sent(level: int, size: int) -> None:
    payload = b"x" * size
    decoder = MQTTDecoder(protocol_level=level)
    packets = decoder.feed(publish_frame(b"devices/d1/telemetry", payload, 1, 7, level))
    assert len(packets) == 1
    packet = packets[0]
    assert isinstance(packet, Publish)
    assert (packet.topic, packet.payload, packet.qos, packet.packet_id) == (
        "devices/d1/telemetry",
        payload,
        1,
        7,
    )
