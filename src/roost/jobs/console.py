"""Console pages of this room (see roost.console.web): being built."""

from __future__ import annotations

from fastapi import APIRouter

from roost.console.web import ConsoleRoute

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
