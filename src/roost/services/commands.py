"""Commands to devices: queue, delivery, responses, timeouts, expiry, schedules."""

from __future__ import annotations

from roost.services.context import ServiceDeps


class CommandService:
    """(being built for issue 4)"""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps

    async def start(self) -> None:
        """Register MQTT routes, hooks and timers (server only)."""

    async def close(self) -> None:
        """Stop background work."""
