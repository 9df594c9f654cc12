"""Jobs over many devices (AWS IoT Jobs model): executions, rollout, abort, timeouts, retries."""

from __future__ import annotations

from roost.services.context import ServiceDeps


class JobService:
    """(being built for issue 4)"""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps

    async def start(self) -> None:
        """Register MQTT routes, hooks and timers (server only)."""

    async def close(self) -> None:
        """Stop background work."""
