"""The device topics of commands: commands down, the device's answers up."""

from __future__ import annotations

from typing import Final

from roost.core.devicelink import DeviceTopic

#: The device's answer to command ``+``.
RESPONSE: Final = DeviceTopic(("devices/{id}/commands/+/response",))

TOPICS: Final = (RESPONSE,)
#: Where the server publishes commands (``devices/{id}/commands/{cmd_id}``) and refusals.
DOWNLINK: Final = "devices/{id}/commands"
