"""The device topics of state documents: reports and reads up, desired state and deltas down."""

from __future__ import annotations

from typing import Final

from roost.core.devicelink import DeviceTopic

#: A report of the default or a named document (``…/state/name/{name}/reported``).
REPORTED: Final = DeviceTopic(("devices/{id}/state/reported", "devices/{id}/state/name/+/reported"))
#: A read of the document, answered on ``…/get/accepted``.
GET: Final = DeviceTopic(("devices/{id}/state/get", "devices/{id}/state/name/+/get"))

TOPICS: Final = (REPORTED, GET)
#: Where the server publishes to the device: desired state, deltas, answers, rejections.
DOWNLINK: Final = "devices/{id}/state"
