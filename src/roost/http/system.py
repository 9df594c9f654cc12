"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from roost import __version__
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
    summary="The store is reachable",
    responses={503: {"description": "A dependency is down"}},
)
async def readyz(roost: RoostDep) -> dict[str, Any]:
    await roost.db.ping()
    return {"status": "ready", "store": roost.db.dialect}


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics (text format)",
    response_class=Response,
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
