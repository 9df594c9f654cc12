"""The MQTT door of state documents: reports and reads up, desired state and deltas down.

The default state's topics are ``devices/{id}/state/…``; a named state's are
``devices/{id}/state/name/{name}/…`` (inside the subtree a device may subscribe to). After a
change of ``desired`` the device gets the desired section on ``…/desired`` and, if the delta is
not empty, ``{"version", "delta", "timestamp"}`` on ``…/delta`` (QoS 1); it gets the current
delta of each of its states again on every (re)connect and whenever it subscribes to a filter
covering a delta topic. Desired state and delta go through ``DeviceLink.send_anywhere``, so a
change made through another process reaches the device wherever it is connected. A report or
read the service refuses is answered on ``…/rejected`` or ``…/get/rejected`` ``{"code",
"message"}``. Every document change is the service's (:mod:`roost.state.service`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import orjson

from roost.core.device_identity import DeviceIdentity
from roost.core.devicelink import DevicePublish, DeviceTopic
from roost.core.json import loads as load_json
from roost.errors import InvalidInput, NotFound, PayloadTooLarge, PermissionDenied
from roost.mqtt.topics import topic_matches
from roost.state.rules import DEFAULT_STATE, StateDocument

if TYPE_CHECKING:
    from roost.state.service import StateChange, StateService

#: A report of the default or a named document (``…/state/name/{name}/reported``).
REPORTED: Final = DeviceTopic(("devices/{id}/state/reported", "devices/{id}/state/name/+/reported"))
#: A read of the document, answered on ``…/get/accepted``.
GET: Final = DeviceTopic(("devices/{id}/state/get", "devices/{id}/state/name/+/get"))

TOPICS: Final = (REPORTED, GET)
#: Where the server publishes to the device: desired state, deltas, answers, rejections.
DOWNLINK: Final = "devices/{id}/state"


def topic_prefix(device_id: str, name: str) -> str:
    """Where a state's messages go: ``devices/{id}/state`` or ``…/state/name/{name}``."""
    base = f"devices/{device_id}/state"
    return base if name == DEFAULT_STATE else f"{base}/name/{name}"


def topic_state_name(topic: str) -> str:
    """The state a device topic names: ``…/state/name/{name}/…`` or the default state."""
    parts = topic.split("/")
    return parts[4] if len(parts) == 6 and parts[3] == "name" else DEFAULT_STATE


def parse_reported(payload: bytes) -> dict[str, Any]:
    """A device's report (the reported fields to merge) from its raw JSON payload."""
    try:
        fields = load_json(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise InvalidInput(
            'a state report is a JSON object of the reported fields, e.g. {"light": "on"}'
        )
    return fields


class StateOverMQTT:
    """State documents over the device link (see the module docstring); built by the service."""

    def __init__(self, service: StateService) -> None:
        self.service = service
        self.link = service.deps.link
        self.clock = service.deps.clock

    def register(self) -> None:
        """Handle reports, reads, subscriptions and (re)connections on the link (server only)."""
        self.link.route(REPORTED, self._on_reported)
        self.link.route(GET, self._on_get)
        self.link.on_subscribe(self._on_subscribe)
        self.link.on_connection(self._on_connection)

    # -- desired state down -------------------------------------------------------------------

    def publish_desired(self, change: StateChange) -> None:
        """Send the device the changed desired section and, when not empty, the delta (in the
        process holding its connection, whichever that is)."""
        doc = change.document
        now_ms = int(change.updated_at.timestamp() * 1000)
        prefix = topic_prefix(change.device_id, change.name)
        self.link.send_anywhere(
            change.device_pk,
            f"{prefix}/desired",
            {"version": doc.version, "desired": doc.desired, "timestamp": now_ms},
        )
        delta = doc.delta
        if delta:
            self.link.send_anywhere(
                change.device_pk,
                f"{prefix}/delta",
                {"version": doc.version, "delta": delta, "timestamp": now_ms},
            )

    def _on_subscribe(self, identity: DeviceIdentity, topic_filter: str) -> None:
        parts = topic_filter.split("/")
        # The ACL lets a device subscribe only inside devices/{id}/{commands,state,jobs}; of
        # those filters, only one ending in delta or a wildcard can cover a delta topic.
        if len(parts) >= 3 and parts[2] == "state" and parts[-1] in ("delta", "+", "#"):
            self.link.spawn(self._push(identity, topic_filter))

    async def _on_connection(self, identity: DeviceIdentity, up: bool) -> None:
        # A session that resumed with delta subscriptions gets the current deltas now; a new
        # one gets them when it subscribes (no store read per connection otherwise).
        link = self.link
        pk = identity.device_pk
        prefix = topic_prefix(identity.device_id, DEFAULT_STATE)
        if up and (
            link.subscribed(pk, f"{prefix}/delta") or link.subscribed(pk, f"{prefix}/name/-/delta")
        ):
            await self._push(identity, None)

    async def _push(self, identity: DeviceIdentity, topic_filter: str | None) -> None:
        await self.push_deltas(identity, topic_filter)

    async def push_deltas(self, identity: DeviceIdentity, topic_filter: str | None) -> int:
        """Send the device the current delta of each of its states (matching ``topic_filter``).

        Answers how many deltas a session took.
        """
        rows = await self.service.live_states(identity.device_pk)
        now_ms = int(self.clock().timestamp() * 1000)
        sent = 0
        for row in rows:
            doc = StateDocument(desired=row["desired"], reported=row["reported"])
            delta = doc.delta
            topic = f"{topic_prefix(identity.device_id, row['name'])}/delta"
            if not delta or (topic_filter is not None and not topic_matches(topic_filter, topic)):
                continue
            payload = {"version": row["version"], "delta": delta, "timestamp": now_ms}
            if self.link.send(identity.device_pk, topic, payload):
                sent += 1
        return sent

    # -- reports and reads up -----------------------------------------------------------------

    async def _on_reported(self, message: DevicePublish) -> None:
        identity = message.identity
        name = topic_state_name(message.topic)
        try:
            await self.service.report(identity, parse_reported(message.payload), name)
        except (InvalidInput, PayloadTooLarge) as exc:
            code = 413 if isinstance(exc, PayloadTooLarge) else 400
            self.link.send(
                identity.device_pk,
                f"{topic_prefix(identity.device_id, name)}/rejected",
                {"code": code, "message": exc.detail},
            )
            if isinstance(exc, InvalidInput):
                raise
            raise InvalidInput(exc.detail) from exc
        except NotFound as exc:  # deleted while connected
            raise PermissionDenied("the device no longer exists") from exc

    async def _on_get(self, message: DevicePublish) -> None:
        identity = message.identity
        name = topic_state_name(message.topic)
        try:
            doc = await self.service.device_get(identity, name)
        except NotFound as exc:
            if name != DEFAULT_STATE:
                self.link.send(
                    identity.device_pk,
                    f"{topic_prefix(identity.device_id, name)}/get/rejected",
                    {"code": 404, "message": exc.detail},
                )
                return
            raise PermissionDenied("the device no longer exists") from exc
        answer = {**doc, "timestamp": int(self.clock().timestamp() * 1000)}
        answer.pop("updated_at", None)
        self.link.send(
            identity.device_pk,
            f"{topic_prefix(identity.device_id, name)}/get/accepted",
            answer,
        )
