"""HTTP routes: Commands to devices: queue, delivery, responses, timeouts, expiry, schedules."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["commands"])
