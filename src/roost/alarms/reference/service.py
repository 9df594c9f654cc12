"""Reference tables (stub: filled in by its owner)."""

from __future__ import annotations

from typing import Any

from roost.core.context import ServiceDeps


class ReferenceService:
    """Tenant-owned reference tables."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps

    async def start(self) -> None:
        """Start following replacements made by other processes."""

    async def close(self) -> None:
        """Stop."""

    async def lookup(self, tenant_id: str, table: str, key: str) -> dict[str, Any] | None:
        """The row of ``table`` whose key is ``key``, or None."""
        return None

    async def exists(self, tenant_id: str, table: str) -> bool:
        """True when the tenant has a table of that name."""
        return False
