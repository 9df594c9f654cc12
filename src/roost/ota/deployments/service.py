"""Deployments: the one logic every door calls (skeleton, filled in by issue 14)."""

from __future__ import annotations

from roost.core.context import ServiceDeps


class DeploymentService:
    """Deployments of every tenant."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps
        self.db = deps.db

    async def start(self) -> None:
        """Start background work (server only)."""

    async def close(self) -> None:
        """Stop background work."""
