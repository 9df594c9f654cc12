"""The device topics that carry telemetry and events to ingest (DESIGN §3, "Telemetry in")."""

from __future__ import annotations

from typing import Final

from roost.core.devicelink import DeviceTopic
from roost.core.ingest import IngestKind

TELEMETRY: Final = DeviceTopic(("devices/{id}/telemetry",), IngestKind.TELEMETRY)
EVENTS: Final = DeviceTopic(("devices/{id}/events",), IngestKind.EVENTS)
#: The bare device id (the seed fleets' convention): telemetry or events by the payload's shape.
AUTO: Final = DeviceTopic(("{id}",), IngestKind.AUTO)

TOPICS: Final = (TELEMETRY, EVENTS, AUTO)
