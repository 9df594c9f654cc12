"""The MQTT door of commands: commands down to connected devices, their answers up.

A command goes out on ``devices/{id}/commands/{cmd}`` at QoS 1 when the device holds a
connection with a subscription covering that topic: the moment the gateway takes the copy it is
``SENT``, and the device's PUBACK makes it ``DELIVERED``. A device that is away, or not
subscribed yet, gets its queued commands when it connects or subscribes. The device answers with
``{"status": "SUCCEEDED"|"FAILED", "result"}`` on ``…/{cmd}/response``; a refusal is PUBACK 0x99
for MQTT 5 clients and, for every protocol version, ``{"id", "error"}`` on
``…/response/rejected``. Every row move is the service's (:mod:`roost.commands.service`).

In scale mode the device may be connected to another process than the one that queued the
command: :meth:`CommandsOverMQTT.offer` then relays over the bus (:data:`FLUSH_RELAY`), and the
process holding the connection sends the queue from the store, acknowledgements and all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import orjson

from roost.commands.rules import device_message
from roost.core.device_identity import DeviceIdentity
from roost.core.devicelink import DevicePublish, DeviceTopic
from roost.core.json import loads as load_json
from roost.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge

if TYPE_CHECKING:
    from roost.commands.service import CommandService

#: The device's answer to command ``+``.
RESPONSE: Final = DeviceTopic(("devices/{id}/commands/+/response",))

TOPICS: Final = (RESPONSE,)
#: The relay asking the process that holds a device's connection to send its queued commands.
FLUSH_RELAY: Final = "commands.flush"
#: Where the server publishes commands (``devices/{id}/commands/{cmd_id}``) and refusals.
DOWNLINK: Final = "devices/{id}/commands"


def command_topic(device_id: str, command_id: str) -> str:
    """The MQTT topic a command is published on."""
    return f"devices/{device_id}/commands/{command_id}"


class CommandsOverMQTT:
    """Commands over the device link (see the module docstring); built by the service."""

    def __init__(self, service: CommandService) -> None:
        self.service = service
        self.link = service.link

    def register(self) -> None:
        """Handle command responses and (re)connections on the link (server only)."""
        self.link.route(RESPONSE, self._on_response)
        self.link.on_connection(self._on_connection)
        self.link.on_subscribe(self._on_subscribe)
        self.link.on_relay(FLUSH_RELAY, self._on_flush_relay)

    # -- commands down ------------------------------------------------------------------------

    async def offer(self, device_pk: int, device_id: str) -> None:
        """Send the device's queued commands from here when it is connected here, else ask the
        process that holds its connection (if any) to send them."""
        if self.link.is_connected(device_pk):
            await self.flush(device_pk, device_id)
        else:
            self.link.relay(FLUSH_RELAY, [device_pk], {"device_id": device_id})

    async def _on_flush_relay(self, device_pks: list[int], args: dict[str, Any]) -> None:
        device_id = args.get("device_id")
        if isinstance(device_id, str):
            for pk in device_pks:
                await self.flush(pk, device_id)

    async def flush(self, device_pk: int, device_id: str) -> int:
        """Publish the device's sendable queued commands; those the gateway took become SENT."""
        if not self.link.is_connected(device_pk):
            return 0

        def send(row: dict[str, Any]) -> bool:
            ack = self._ack_callback(device_pk, row["id"])
            topic = command_topic(device_id, row["id"])
            return self.link.send(device_pk, topic, device_message(row), 1, ack)

        return await self.service.send_queued(device_pk, device_id, send)

    def _ack_callback(self, device_pk: int, command_id: str) -> Callable[[], None]:
        def acked() -> None:
            self.link.spawn(self.service.delivered(device_pk, command_id))

        return acked

    async def _on_connection(self, identity: DeviceIdentity, up: bool) -> None:
        # A session resumed with its subscriptions gets its queued commands now; a new one
        # gets them when it subscribes (no store read per connection in a reconnect storm).
        probe = command_topic(identity.device_id, "-")
        if up and self.link.subscribed(identity.device_pk, probe):
            await self.flush(identity.device_pk, identity.device_id)

    async def _flush_task(self, device_pk: int, device_id: str) -> None:
        """:meth:`flush` as background work (``link.spawn`` takes coroutines answering None)."""
        await self.flush(device_pk, device_id)

    def _on_subscribe(self, identity: DeviceIdentity, topic_filter: str) -> None:
        parts = topic_filter.split("/")
        if len(parts) >= 3 and parts[1] == identity.device_id and parts[2] == "commands":
            self.link.spawn(self._flush_task(identity.device_pk, identity.device_id))

    # -- answers up ---------------------------------------------------------------------------

    async def _on_response(self, message: DevicePublish) -> None:
        """A device's answer on ``devices/{id}/commands/{cmd}/response``.

        A refusal is PUBACK 0x99 for MQTT 5 clients and, for every protocol version, a message
        ``{"id", "error"}`` on ``…/response/rejected``.
        """
        command_id = message.topic.split("/")[3]
        try:
            try:
                body = load_json(message.payload)
            except orjson.JSONDecodeError:
                raise InvalidInput("the command response is not valid JSON") from None
            await self.service.respond(message.identity, command_id, body)
        except (InvalidInput, NotFound, Conflict, PayloadTooLarge) as exc:
            self.link.send(
                message.identity.device_pk,
                f"{message.topic}/rejected",
                {"id": command_id, "error": exc.detail},
                qos=0,
            )
            raise InvalidInput(exc.detail) from exc
