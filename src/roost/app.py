"""The FastAPI application: every room's router under /api/v1, problem+json errors, limits,
metrics, CORS, and MQTT over WebSocket at /mqtt (composition, like :mod:`roost.runtime`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

from fastapi import APIRouter, FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route, WebSocketRoute

from roost import __version__
from roost.agents import console as agent_pages
from roost.agents import router as agents
from roost.alarms import console as alarm_pages
from roost.alarms import router as alarms
from roost.alarms.notify import console as notification_pages
from roost.alarms.notify import router as notifications
from roost.alarms.reference import router as reference
from roost.alarms.rules import console as rule_pages
from roost.alarms.rules import router as rules
from roost.audit import console as audit_pages
from roost.audit import router as audit
from roost.commands import console as command_pages
from roost.commands import rotation as rotation_requests
from roost.commands import router as commands
from roost.console import overview as console_overview
from roost.console import router as console
from roost.credentials import console as credential_pages
from roost.credentials import dependencies as device_doors
from roost.credentials import rotation, whoami
from roost.credentials.certificates import router as certificates
from roost.credentials.keys import router as keys
from roost.credentials.tokens import router as credentials
from roost.diagnostics import console as diagnostics_pages
from roost.diagnostics import router as diagnostics
from roost.http import docs, openapi, problems, system
from roost.http.middleware import BodyLimit, Metrics
from roost.identity import console as identity_pages
from roost.identity import router as identity
from roost.inventory import console as inventory_pages
from roost.inventory import router as inventory
from roost.inventory.bulk import console as bulk_pages
from roost.inventory.bulk import router as bulk
from roost.inventory.devices import console as device_pages
from roost.inventory.devices import router as devices
from roost.jobs import console as job_pages
from roost.jobs import router as jobs
from roost.mqtt.websocket import mqtt_websocket
from roost.ota import console as ota_pages
from roost.ota.apt import router as apt
from roost.ota.artifacts import router as artifacts
from roost.ota.ddi import router as ddi
from roost.ota.deployments import router as deployments
from roost.presence import console as presence_pages
from roost.presence import router as presence
from roost.provisioning import console as provisioning_pages
from roost.provisioning import router as provisioning
from roost.runtime import Roost
from roost.state import console as state_pages
from roost.state import router as state
from roost.telemetry.consumers import console as consumer_pages
from roost.telemetry.consumers import router as consumers
from roost.telemetry.ingest import router as ingest
from roost.telemetry.queries import console as telemetry_pages
from roost.telemetry.queries import router as telemetry

API_PREFIX = "/api/v1"

DESCRIPTION = """\
Roost keeps a fleet's inventory, authenticates its devices, ingests their telemetry and events,
and lets people and programs act on them.

Authenticate with `POST /api/v1/auth/login` and send `Authorization: Bearer <token>` (or an API key)
on every other call. Errors are `application/problem+json` (RFC 9457); text holding NUL (U+0000)
is refused (422). Collections answer
`{items, total, limit, offset}`, take `limit`, `offset`, `sort` (`-field` for descending), `q`, and
filters named like the fields.
"""


def mounted_routers() -> list[tuple[APIRouter, str]]:
    """Every router of the API with the prefix it is mounted at, in matching order."""
    return [
        (system.router, ""),
        (identity.router, API_PREFIX),
        *((router, API_PREFIX) for router in inventory.ROUTERS),
        (bulk.router, API_PREFIX),  # before /devices/{device_id}, which would take "import"
        (credentials.router, API_PREFIX),
        (devices.router, API_PREFIX),
        (devices.groups_router, API_PREFIX),
        (whoami.router, API_PREFIX),
        (rotation.router, API_PREFIX),
        (audit.router, API_PREFIX),
        (ingest.router, API_PREFIX),
        (telemetry.router, API_PREFIX),
        (presence.router, API_PREFIX),
        (state.router, API_PREFIX),
        (commands.router, API_PREFIX),
        (rotation_requests.router, API_PREFIX),
        (jobs.router, API_PREFIX),
        (certificates.router, API_PREFIX),
        (keys.router, API_PREFIX),
        (provisioning.router, API_PREFIX),
        (consumers.router, API_PREFIX),
        (reference.router, API_PREFIX),
        (notifications.router, API_PREFIX),
        (rules.router, API_PREFIX),
        (alarms.router, API_PREFIX),
        (artifacts.router, API_PREFIX),
        (deployments.router, API_PREFIX),
        (apt.router, API_PREFIX),
        (diagnostics.router, API_PREFIX),
        (agents.router, API_PREFIX),
        (ddi.router, ""),  # hawkBit's own paths: /{tenant}/controller/v1/{controllerId}
    ]


def console_rooms() -> list[ModuleType]:
    """Every room's console pages (``<room>/console.py``), in matching order."""
    return [
        console_overview,
        device_pages,  # /devices and /devices/{id}: before the tabs other rooms add under it
        telemetry_pages,
        presence_pages,
        state_pages,
        command_pages,
        job_pages,
        credential_pages,
        inventory_pages,
        bulk_pages,
        provisioning_pages,
        identity_pages,
        consumer_pages,
        audit_pages,
        alarm_pages,
        rule_pages,
        notification_pages,
        ota_pages,
        diagnostics_pages,
        agent_pages,
    ]


def offered_services(roost: Roost) -> tuple[object, ...]:
    """The Roost as each room's routes see it (their ``Services`` Protocols).

    The routers take the running Roost untyped from the app's state and type it with a Protocol
    of what they use; this annotation is where mypy checks that a Roost offers all of it.
    """
    typed: tuple[
        system.Services,
        identity.Services,
        inventory.Services,
        bulk.Services,
        credentials.Services,
        devices.Services,
        audit.Services,
        device_doors.DeviceDoors,
        ingest.Services,
        telemetry.Services,
        presence.Services,
        state.Services,
        commands.Services,
        jobs.Services,
        certificates.Services,
        keys.Services,
        provisioning.Services,
        consumers.Services,
        reference.Services,
        notifications.Services,
        rules.Services,
        alarms.Services,
        artifacts.Services,
        diagnostics.Services,
        whoami.Services,
        rotation.Services,
        rotation_requests.Services,
        agents.Services,
    ] = (roost,) * 28
    return typed


def create_app(roost: Roost, *, manage_lifecycle: bool = True) -> FastAPI:
    """Build the ASGI app around a Roost; the app starts and stops it unless told not to."""

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
        docs_url=None,  # served by roost.http.docs, without a CDN
        redoc_url=None,
    )
    app.state.roost = roost
    problems.install(app)
    docs.install(app, title="Roost")
    openapi.install(app)
    # The route templates the metrics name (FastAPI may hand the router's own route, without
    # the prefix it was included under, to the middleware).
    templates: dict[int, str] = {}
    for router, prefix in mounted_routers():
        app.include_router(router, prefix=prefix)
        templates.update(
            (id(route), prefix + route.path)
            for route in router.routes
            if isinstance(route, Route | WebSocketRoute)
        )
    # The operator console at / (after the API, whose paths it never shadows).
    console.install(app, console_rooms())
    # MQTT over WebSocket (subprotocol "mqtt"): the device gateway's second door.
    app.router.routes.append(WebSocketRoute("/mqtt", mqtt_websocket(roost.gateway)))

    # Added last = outermost: the body limit applies before anything reads the body.
    if roost.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(roost.settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            max_age=600,
        )
    app.add_middleware(Metrics, access_log=roost.settings.access_log, templates=templates)
    app.add_middleware(
        BodyLimit,
        max_bytes=roost.settings.max_body_bytes,
        per_path={
            f"{API_PREFIX}/devices/import": roost.settings.max_import_bytes,
            # Artifact uploads are streamed to storage; the service enforces its own limit.
            f"{API_PREFIX}{artifacts.UPLOAD_PATH}": roost.settings.artifact_max_bytes,
            # Diagnostics archives are streamed too; the service refuses them past 50 MiB.
            f"{API_PREFIX}{diagnostics.UPLOAD_PATH}": diagnostics.MAX_BYTES,
        },
    )
    return app
