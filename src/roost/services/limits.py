"""Abuse limits: per-device message and byte rates, connections per device, and brute-force
protection of every credential check (issue 5)."""

from __future__ import annotations

from roost.services.context import ServiceDeps


class DeviceLimits:
    """(being built for issue 5)"""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps

    async def start(self) -> None:
        """Start background work (server only)."""

    async def close(self) -> None:
        """Stop background work."""
