"""Response bodies of the diagnostics routes."""

from __future__ import annotations

from datetime import datetime

from roost.http import schemas as s


class DiagnosticOut(s.Out):
    """A diagnostics archive a device uploaded."""

    id: str
    device_id: str
    size: int
    sha256: str
    content_type: str
    filename: str
    note: str | None
    command_id: str | None
    created_at: datetime
