"""Notifications (stub: filled in by its owner)."""

from __future__ import annotations

from roost.core.context import ServiceDeps


class NotificationService:
    """Channels, the outbox and its dispatcher."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps

    async def start(self) -> None:
        """Start the dispatcher."""

    async def close(self) -> None:
        """Stop the dispatcher."""
