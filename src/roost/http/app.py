"""The FastAPI application: routers under /api/v1, problem+json errors, limits, metrics, CORS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from roost import __version__
from roost.http import problems
from roost.http.middleware import BodyLimit, Metrics
from roost.http.routes import audit, devices, identity, inventory, system
from roost.runtime import Roost

API_PREFIX = "/api/v1"

DESCRIPTION = """\
Roost keeps a fleet's inventory, authenticates its devices, ingests their telemetry and events,
and lets people and programs act on them.

Authenticate with `POST /api/v1/auth/login` and send `Authorization: Bearer <token>` (or an API key)
on every other call. Errors are `application/problem+json` (RFC 9457). Collections answer
`{items, total, limit, offset}`, take `limit`, `offset`, `sort` (`-field` for descending), `q`, and
filters named like the fields.
"""


def create_app(roost: Roost, *, manage_lifecycle: bool = True) -> FastAPI:
    """Build the ASGI app around a Roost instance; the app starts and stops it unless told not to."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await roost.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await roost.close()

    app = FastAPI(
        title="Roost",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.roost = roost
    problems.install(app)
    app.include_router(system.router)
    app.include_router(identity.router, prefix=API_PREFIX)
    for router in inventory.ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(devices.router, prefix=API_PREFIX)
    app.include_router(devices.groups_router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)

    # Added last = outermost: the body limit applies before anything reads the body.
    if roost.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(roost.settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            max_age=600,
        )
    app.add_middleware(Metrics)
    app.add_middleware(BodyLimit, max_bytes=roost.settings.max_body_bytes)
    return app
