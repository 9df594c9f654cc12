"""Fixtures of the notification tests: a Roost served over HTTP in the test's event loop (so a
test can also enqueue notices in a transaction of its database), a real SMTP server (aiosmtpd)
and a real webhook receiver that checks the HMAC-SHA256 signature."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from roost.alarms.notify.model import AlarmNotice
from roost.app import create_app
from roost.config import Settings, load_settings
from roost.runtime import Roost
from tests.support import ADMIN_PASSWORD, free_port

SECRET = "hook-secret"


async def serve(app: Any, port: int) -> uvicorn.Server:
    """Run an ASGI app on a port of this loop (uvicorn has no "started" event to await)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    server_task = asyncio.get_running_loop().create_task(server.serve())
    server.config.server_task = server_task  # type: ignore[attr-defined]
    for _ in range(1000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    return server


async def stop(server: uvicorn.Server) -> None:
    """Stop a server made by :func:`serve`."""
    server.should_exit = True
    await server.config.server_task  # type: ignore[attr-defined]


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 20.0) -> Any:
    """Await ``check`` until it answers something true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within} s (last answer: {result!r})")
        await asyncio.sleep(0.05)


@dataclass
class Platform:
    """A Roost served on a port, with an admin's HTTP client; restartable on the same database."""

    settings: Settings
    roost: Roost | None = None
    server: uvicorn.Server | None = None
    http: httpx.AsyncClient | None = None

    async def start(self) -> Platform:
        roost = Roost.build(self.settings)
        await roost.start()
        port = free_port()
        self.server = await serve(create_app(roost, manage_lifecycle=False), port)
        self.roost = roost
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as anon:
            resp = await anon.post(
                "/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
            )
        token = resp.json()["token"]
        self.http = httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        return self

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        if self.server is not None:
            await stop(self.server)
        if self.roost is not None:
            await self.roost.close()
        self.roost = self.server = self.http = None

    @property
    def api(self) -> httpx.AsyncClient:
        assert self.http is not None
        return self.http

    async def enqueue(self, notices: list[AlarmNotice]) -> None:
        """What the rules engine does: enqueue inside its write transaction, wake after commit."""
        assert self.roost is not None
        async with self.roost.db.write() as conn:
            await self.roost.notifications.enqueue_in(conn, notices)
        self.roost.notifications.wake()

    async def channel(self, **body: Any) -> str:
        resp = await self.api.post("/api/v1/notification-channels", json=body)
        assert resp.status_code == 201, resp.text
        channel_id: str = resp.json()["id"]
        return channel_id

    async def log(self, **params: Any) -> list[dict[str, Any]]:
        resp = await self.api.get("/api/v1/notifications", params={"limit": 1000, **params})
        assert resp.status_code == 200, resp.text
        items: list[dict[str, Any]] = resp.json()["items"]
        return items


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
async def platform(tmp_path: Path, database_url: str, smtp_port: int) -> AsyncIterator[Platform]:
    settings = load_settings(
        {"ROOST_CONFIG": str(tmp_path / "none.toml")},
        data_dir=tmp_path,
        database_url=database_url,
        admin_password=ADMIN_PASSWORD,
        timer_check_s=0.2,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_from="roost@example.test",
        smtp_timeout_s=2.0,
    )
    made = await Platform(settings).start()
    try:
        yield made
    finally:
        await made.stop()


class _Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@dataclass
class SmtpServer:
    """An aiosmtpd server on a port, startable later (to play a relay that was down)."""

    port: int
    sink: _Sink = field(default_factory=_Sink)
    controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[tuple[list[str], Message]]:
        return self.sink.messages


@pytest.fixture
def smtp(smtp_port: int) -> Iterator[SmtpServer]:
    """The SMTP server Roost is configured with, not started: call ``start()``."""
    server = SmtpServer(smtp_port)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Hit:
    """One request the receiver got."""

    at: float
    body: dict[str, Any]
    signed: bool
    headers: dict[str, str]


@dataclass
class Receiver:
    """A webhook receiver: answers the statuses of ``answers`` in turn (then the last one)."""

    url: str
    answers: list[int] = field(default_factory=lambda: [200])
    hits: list[Hit] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        expected = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(
            request.headers.get("x-roost-signature", ""), f"sha256={expected}"
        )
        self.hits.append(Hit(time.monotonic(), orjson.loads(raw), signed, dict(request.headers)))
        status = self.answers[min(len(self.hits), len(self.answers)) - 1]
        return Response(b"receiver says no" if status >= 300 else b"ok", status_code=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    port = free_port()
    made = Receiver(f"http://127.0.0.1:{port}/hook")
    app = Starlette(routes=[Route("/hook", made.handle, methods=["POST"])])
    server = await serve(app, port)
    try:
        yield made
    finally:
        await stop(server)


def notice(
    alarm_id: int,
    channel_id: str,
    *,
    device_id: str | None = None,
    site_id: str | None = "site-1",
    type: str = "offline",
    status: str = "firing",
    severity: str = "major",
    tenant_id: str = "default",
) -> AlarmNotice:
    """An alarm notice as the rules engine makes one."""
    device = device_id or f"dev-{alarm_id:04d}"
    return AlarmNotice(
        tenant_id=tenant_id,
        alarm_id=alarm_id,
        type=type,
        device_id=device,
        site_id=site_id,
        group_ids=("g-1",),
        severity=severity,
        status=status,
        summary=f"{device} is {type}",
        details={"last_seen": "2026-12-07T08:00:00Z"},
        started_at=datetime(2026, 12, 7, 8, 0, tzinfo=UTC),
        ended_at=datetime(2026, 12, 7, 9, 0, tzinfo=UTC) if status == "resolved" else None,
        rule_id="rule-1",
        channel_ids=(channel_id,),
    )
