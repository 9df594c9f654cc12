"""HTTP routes of this part (stub: filled in by its owner)."""

from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter

from roost.alarms.reference.service import ReferenceService


class Services(Protocol):
    """What these routes use of the running Roost."""

    @property
    def reference(self) -> ReferenceService: ...


router = APIRouter(tags=["reference"])
