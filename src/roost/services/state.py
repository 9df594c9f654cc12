"""Device state documents (desired/reported/delta), named states and their history."""

from __future__ import annotations

from roost.services.context import ServiceDeps


class StateService:
    """(being built for issue 4)"""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps

    async def start(self) -> None:
        """Register MQTT routes, hooks and timers (server only)."""

    async def close(self) -> None:
        """Stop background work."""
