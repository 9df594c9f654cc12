"""MQTT topic names and filters: syntax, matching, and what a Roost device may use.

The first half is plain MQTT (names, filters, shared subscriptions, wildcard matching); the second
half is the device ACL (DESIGN.md section 3): the table of the topics the capabilities declared,
which the gateway asks before it lets a device publish to a topic or subscribe to a filter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from roost.core.devicelink import DeviceTopic
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
# The device ACL: the topics the capabilities declared
# --------------------------------------------------------------------------------------


#: The level of a template that stands for the device's own id.
_ID: Final = "{id}"


class DeviceTopics:
    """Which topics a device may publish to and subscribe under: what the capabilities declared.

    The gateway knows no capability. Each room declares its uplink topics
    (:class:`~roost.core.devicelink.DeviceTopic`, e.g. ``devices/{id}/state/reported``) and its
    downlink subtrees (``devices/{id}/state``, where the server publishes to the device); the
    runtime puts them all in one table, which answers the two questions below for any device id.
    """

    def __init__(self, publish: Iterable[DeviceTopic] = (), subscribe: Iterable[str] = ()) -> None:
        self._bare: DeviceTopic | None = None
        self._by_levels: dict[int, list[tuple[tuple[str, ...], DeviceTopic]]] = {}
        self._subtrees: list[tuple[str, ...]] = []
        self._declared: list[DeviceTopic] = []
        for topic in publish:
            self.add(topic)
        for template in subscribe:
            self.allow_subscribe(template)

    def add(self, topic: DeviceTopic) -> None:
        """Let devices publish to ``topic`` (each template names ``{id}`` once, as a level)."""
        for template in topic.templates:
            levels = tuple(template.split("/"))
            if levels.count(_ID) != 1 or any(_ID in lv and lv != _ID for lv in levels):
                raise ValueError(f"a device topic names {_ID} once, as a level: {template!r}")
            if levels == (_ID,):
                self._bare = topic
            else:
                self._by_levels.setdefault(len(levels), []).append((levels, topic))
        self._declared.append(topic)

    def allow_subscribe(self, template: str) -> None:
        """Let devices subscribe to any filter inside ``template``'s subtree (no wildcard in it)."""
        levels = tuple(template.split("/"))
        if _ID not in levels or "+" in levels or "#" in levels:
            raise ValueError(f"a downlink subtree names {_ID} and no wildcard: {template!r}")
        self._subtrees.append(levels)

    @property
    def topics(self) -> list[DeviceTopic]:
        """Every declared uplink topic."""
        return list(self._declared)

    def publish_route(self, device_id: str, topic: str) -> DeviceTopic | None:
        """The declared topic ``topic`` is, when device ``device_id`` may publish to it, else None.

        Only the device's own topics qualify; another device's id, a ``$`` topic, an unknown
        sub-topic or an empty level (``devices/x//telemetry``) all answer None.
        """
        if topic == device_id:
            return self._bare
        parts = topic.split("/")
        for levels, declared in self._by_levels.get(len(parts), ()):
            for want, have in zip(levels, parts, strict=True):
                if want == _ID:
                    if have != device_id:
                        break
                elif want == "+":
                    if not have:
                        break
                elif want != have:
                    break
            else:
                return declared
        return None

    def may_subscribe(self, device_id: str, topic_filter: str) -> bool:
        """Whether device ``device_id`` may subscribe to the (valid, non-shared) ``topic_filter``.

        A filter is allowed when every topic it can match lies inside one of the device's own
        downlink subtrees (``devices/{id}/commands``, ``devices/{id}/state``, ...), where the
        server publishes commands, desired state and deltas, job notifications and replies, and
        refusals. So ``devices/{id}/commands/#``, ``devices/{id}/jobs/+/update/accepted``,
        ``devices/{id}/state/delta`` and ``devices/{id}/telemetry/rejected`` are allowed; ``#``,
        ``devices/+/commands/#``, ``devices/{id}/#`` and ``devices/{id}/telemetry`` are not. The
        server never publishes a device's own uplink topics, so a filter that also covers them
        leaks nothing.
        """
        parts = topic_filter.split("/")
        for levels in self._subtrees:
            if len(parts) >= len(levels) and all(
                have == (device_id if want == _ID else want)
                for want, have in zip(levels, parts, strict=False)
            ):
                return True
        return False
