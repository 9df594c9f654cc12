"""HTTP routes: the hawkBit DDI API under ``/{tenant}/controller/v1/{controllerId}``."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["ddi"])
