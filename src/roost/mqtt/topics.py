"""MQTT topic names and filters: syntax, matching, and what a Roost device may use.

The first half is plain MQTT (names, filters, shared subscriptions, wildcard matching); the second
half is Roost's device ACL (DESIGN.md section 3): the pure functions the gateway asks before it
lets a device publish to a topic or subscribe to a filter.
"""

from __future__ import annotations

import enum
from typing import Final

from roost.mqtt.packets import MQTTProtocolError, ReasonCode


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
# Roost's device ACL
# --------------------------------------------------------------------------------------


class PublishRoute(enum.Enum):
    """Where a device's PUBLISH goes, by topic (DESIGN.md section 3, "Telemetry in")."""

    TELEMETRY = "telemetry"  # devices/{id}/telemetry
    EVENTS = "events"  # devices/{id}/events
    AUTO = "auto"  # the bare {id} (seed convention): telemetry or events by shape
    STATE_REPORTED = "state_reported"  # devices/{id}/state[/name/{name}]/reported
    STATE_GET = "state_get"  # devices/{id}/state[/name/{name}]/get (answer on …/get/accepted)
    COMMAND_RESPONSE = "command_response"  # devices/{id}/commands/{cmd}/response
    JOB_UPDATE = "job_update"  # devices/{id}/jobs/{job}/update
    JOB_GET = "job_get"  # devices/{id}/jobs/get (answer: the pending list on jobs/notify)
    JOB_START_NEXT = "job_start_next"  # devices/{id}/jobs/start-next

    @property
    def is_ingest(self) -> bool:
        """True for the telemetry/events topics, which go to the ingest service."""
        return self in _INGEST_ROUTES


_INGEST_ROUTES: Final = frozenset({PublishRoute.TELEMETRY, PublishRoute.EVENTS, PublishRoute.AUTO})

_FOUR_LEVEL_ROUTES: Final = {
    ("state", "reported"): PublishRoute.STATE_REPORTED,
    ("state", "get"): PublishRoute.STATE_GET,
    ("jobs", "get"): PublishRoute.JOB_GET,
    ("jobs", "start-next"): PublishRoute.JOB_START_NEXT,
}

#: The subtrees of ``devices/{id}/`` a device may subscribe inside (any filter within them).
SUBSCRIBE_SUBTREES: Final = frozenset({"commands", "state", "jobs"})


def publish_route(device_id: str, topic: str) -> PublishRoute | None:
    """The route of ``topic`` when device ``device_id`` may publish to it, else None.

    Only the device's own topics qualify; another device's id, a ``$`` topic, an unknown
    sub-topic or an empty level (``devices/x//telemetry``) all answer None.
    """
    if topic == device_id:
        return PublishRoute.AUTO
    parts = topic.split("/")
    n = len(parts)
    if n < 3 or parts[0] != "devices" or parts[1] != device_id:
        return None
    leaf = parts[2]
    if n == 3:
        if leaf == "telemetry":
            return PublishRoute.TELEMETRY
        if leaf == "events":
            return PublishRoute.EVENTS
        return None
    if n == 4:
        return _FOUR_LEVEL_ROUTES.get((leaf, parts[3]))
    if n == 6 and leaf == "state" and parts[3] == "name" and parts[4]:
        # A named state: devices/{id}/state/name/{name}/reported or …/get.
        if parts[5] == "reported":
            return PublishRoute.STATE_REPORTED
        if parts[5] == "get":
            return PublishRoute.STATE_GET
        return None
    if n == 5 and parts[3]:
        if leaf == "commands" and parts[4] == "response":
            return PublishRoute.COMMAND_RESPONSE
        if leaf == "jobs" and parts[4] == "update":
            return PublishRoute.JOB_UPDATE
    return None


def may_subscribe(device_id: str, topic_filter: str) -> bool:
    """Whether device ``device_id`` may subscribe to the (valid, non-shared) ``topic_filter``.

    A filter is allowed when every topic it can match lies inside the device's own
    ``devices/{id}/commands``, ``devices/{id}/state`` or ``devices/{id}/jobs`` subtree, where the
    server publishes commands, desired state and deltas, and job notifications and replies. So
    ``devices/{id}/commands/#``, ``devices/{id}/jobs/+/update/accepted`` and
    ``devices/{id}/state/delta`` are allowed; ``#``, ``devices/+/commands/#``,
    ``devices/{id}/#`` and ``devices/{id}/telemetry`` are not. The server never publishes a
    device's own uplink topics, so a filter that also covers them leaks nothing.
    """
    parts = topic_filter.split("/", 3)
    return (
        len(parts) >= 3
        and parts[0] == "devices"
        and parts[1] == device_id
        and parts[2] in SUBSCRIBE_SUBTREES
    )
