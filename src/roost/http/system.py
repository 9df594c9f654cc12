"""Health, readiness and Prometheus metrics (HTTP requests here, the rest from core.metrics)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from roost import __version__
from roost.core import metrics as operational
from roost.http.deps import get_roost
from roost.store.database import Database


class Services(Protocol):
    """What the system routes use of the running Roost."""

    @property
    def db(self) -> Database: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["system"])


@router.get("/healthz", operation_id="healthz", summary="The process is alive")
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="The store is reachable and can write",
    responses={503: {"description": "The store is down or cannot write (e.g. its disk is full)"}},
)
async def readyz(roost: RoostDep) -> dict[str, Any]:
    """Ready when the store answers a read and can take a write (probed at most once a second).

    A store that reads but cannot write (a full disk) is not ready: ingest would be refused.
    """
    await roost.db.ping()
    await roost.db.check_writable()
    return {"status": "ready", "store": roost.db.dialect}


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics (text format)",
    response_class=Response,
)
async def metrics() -> Response:
    """HTTP, MQTT, ingest and fleet metrics (listed in docs/operations.md)."""
    await operational.refresh()  # the database-backed gauges, cached for a few seconds
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
