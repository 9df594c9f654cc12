"""The device topics of jobs: updates and requests up, notifications and answers down."""

from __future__ import annotations

from typing import Final

from roost.core.devicelink import DeviceTopic

#: An update of the device's execution of job ``+``.
UPDATE: Final = DeviceTopic(("devices/{id}/jobs/+/update",))
#: A request for the pending list (answered on ``jobs/notify``).
GET: Final = DeviceTopic(("devices/{id}/jobs/get",))
#: Start the next pending execution (answered on ``jobs/start-next/accepted``).
START_NEXT: Final = DeviceTopic(("devices/{id}/jobs/start-next",))

TOPICS: Final = (UPDATE, GET, START_NEXT)
#: Where the server publishes notifications and the answers to updates and requests.
DOWNLINK: Final = "devices/{id}/jobs"
