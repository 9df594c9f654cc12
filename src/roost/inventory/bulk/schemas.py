"""What a bulk import answers."""

from __future__ import annotations

from typing import Any

from pydantic import (
    Field,
)

from roost.http.schemas import Out


class ImportReport(Out):
    """What a bulk import did, or why it did nothing."""

    created: int
    updated: int
    unchanged: int = Field(0, description="Existing devices the file already described exactly")
    skipped: int
    errors: list[dict[str, Any]] = Field(
        description="One entry per refused row: row number (1 = first data row), device id, reason"
    )
    dry_run: bool
