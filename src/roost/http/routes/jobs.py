"""HTTP routes: jobs over many devices (AWS IoT Jobs model)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["jobs"])
