"""HTTP routes: Device state documents (desired/reported/delta), named states and their history."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["state"])
