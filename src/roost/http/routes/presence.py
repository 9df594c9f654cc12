"""HTTP routes: device presence and the fleet summary."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["presence"])
