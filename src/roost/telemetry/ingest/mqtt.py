"""The device topics that carry telemetry and events to ingest (DESIGN §3, "Telemetry in"), and
where a device is told why a message of its was refused.

A message the ingest service refuses (malformed JSON, a value of the wrong type, an unknown
sensor, …) is answered, for every protocol version, on ``devices/{id}/telemetry/rejected`` (sent
on ``devices/{id}/telemetry`` or the bare ``{id}``) or ``devices/{id}/events/rejected`` (sent on
``devices/{id}/events``) with ``{"topic", "code", "message", "errors"}``, at QoS 1 to a session
subscribed there. MQTT 3.1/3.1.1 have no negative acknowledgement, so this is how such a device
learns why; an MQTT 5 device also gets PUBACK 0x99 with the reason. HTTP and WebSocket senders
get the same errors in their answer instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from roost.core.devicelink import DeviceTopic
from roost.core.ingest import IngestKind

if TYPE_CHECKING:
    from roost.core.device_identity import DeviceIdentity
    from roost.core.devicelink import DeviceLink

TELEMETRY: Final = DeviceTopic(("devices/{id}/telemetry",), IngestKind.TELEMETRY)
EVENTS: Final = DeviceTopic(("devices/{id}/events",), IngestKind.EVENTS)
#: The bare device id (the seed fleets' convention): telemetry or events by the payload's shape.
AUTO: Final = DeviceTopic(("{id}",), IngestKind.AUTO)

TOPICS: Final = (TELEMETRY, EVENTS, AUTO)

#: Where refusals of telemetry (and of the bare id's messages) go.
TELEMETRY_REJECTED: Final = "devices/{id}/telemetry/rejected"
#: Where refusals of events go.
EVENTS_REJECTED: Final = "devices/{id}/events/rejected"
#: Where the server publishes to the device: the two refusal topics (a device may subscribe there).
DOWNLINKS: Final = (TELEMETRY_REJECTED, EVENTS_REJECTED)

#: Errors a refusal lists: the first few name the problem; a 100,000-item message could
#: otherwise make a refusal larger than the device's packet limit.
MAX_REPORTED_ERRORS: Final = 20
#: The code a refusal carries: 400 (Bad Request), as ``…/state/rejected`` says of a bad report;
#: its errors say what was wrong (an entry may carry a ``code`` of its own).
REFUSED_CODE: Final = 400


def rejected_topic(device_id: str, topic: str) -> str:
    """Where the refusal of a message the device sent on ``topic`` (an ingest topic) goes."""
    template = EVENTS_REJECTED if topic == f"devices/{device_id}/events" else TELEMETRY_REJECTED
    return template.replace("{id}", device_id)


def rejection(topic: str, errors: list[dict[str, Any]]) -> dict[str, Any]:
    """What a device is told of a refused message: the topic it came on, and why."""
    first = errors[0] if errors else {}
    where = f" {first['field']}" if first.get("field") else ""
    message = f"item {first.get('index', 0)}{where}: {first.get('message', 'refused')}"
    return {
        "topic": topic,
        "code": REFUSED_CODE,
        "message": message,
        "errors": errors[:MAX_REPORTED_ERRORS],
    }


class IngestOverMQTT:
    """Tells devices over the device link why their messages were refused."""

    def __init__(self, link: DeviceLink) -> None:
        self.link = link

    def refused(self, identity: DeviceIdentity, topic: str, errors: list[dict[str, Any]]) -> None:
        """Publish a refusal to the device's sessions subscribed to its rejected topic."""
        self.link.send(
            identity.device_pk,
            rejected_topic(identity.device_id, topic),
            rejection(topic, errors),
        )
