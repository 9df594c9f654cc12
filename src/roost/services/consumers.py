"""Consumers (apps) with keys limited by grants on devices, groups or sensors."""

from __future__ import annotations

from roost.services.context import ServiceDeps


class ConsumerService:
    """(being built for issue 5)"""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps

    async def start(self) -> None:
        """Start background work (server only)."""

    async def close(self) -> None:
        """Stop background work."""
