"""Test support: a real ``roost serve`` process on a free port, and an HTTP client for it.

The suite drives Roost through its real doors. ``RoostServer`` starts the server as a subprocess
(SQLite in a temporary directory, or a fresh PostgreSQL database), waits for ``/healthz``, and on
stop reports whether the server logged any unhandled error: a 500 anywhere fails the session.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")

ADMIN_PASSWORD = "admin-test-password"
SECRET_KEY = "test-secret-key-for-forging-expired-tokens"
PG_URL = os.environ.get("ROOST_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
NATS_URL = os.environ.get("ROOST_TEST_NATS_URL", "nats://127.0.0.1:4222")


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end, on a thread of its own when this thread's loop is taken.

    Playwright's sync API (the console's browser tests) keeps its event loop marked as running
    in the main thread while a browser is open, and ``asyncio.run`` refuses to start there.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def services_required() -> bool:
    """CI sets ROOST_REQUIRE_SERVICES=1: a missing PostgreSQL or NATS is then a failure."""
    return os.environ.get("ROOST_REQUIRE_SERVICES", "") in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    """Skip locally, fail in CI."""
    if services_required():
        pytest.fail(f"{reason} (ROOST_REQUIRE_SERVICES is set, so this is a failure)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers at PG_URL, else the reason it does not."""
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=3)
        await conn.close()

    try:
        run_coroutine(probe())
    except Exception as exc:  # any failure to connect means "not available here"
        return f"PostgreSQL not reachable at {PG_URL}: {exc}"
    return None


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty database for one test session and drop it afterwards."""
    import asyncpg

    name = f"roost_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_coroutine(run(f'CREATE DATABASE "{name}"'))
    base, _, _ = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        run_coroutine(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class RoostServer:
    """A ``roost serve`` subprocess."""

    data_dir: Path
    database_url: str = ""
    env_overrides: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    # The MQTT listener's port (ROOST_MQTT_PORT); 0 keeps it off. Pass free_port() to test MQTT.
    mqtt_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        env.update(
            {
                "ROOST_DATA_DIR": str(self.data_dir),
                "ROOST_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "ROOST_SECRET_KEY": SECRET_KEY,
                "ROOST_HTTP_PORT": str(self.port),
                "ROOST_MQTT_PORT": str(self.mqtt_port),
                "ROOST_MQTTS_PORT": "0",
                "ROOST_LOG_LEVEL": "info",
                # The suite sends hundreds of deliberately bad credentials from 127.0.0.1 (the
                # access matrix alone); the brute-force limit has its own tests, which set it.
                "ROOST_CREDENTIAL_MAX_FAILURES": "0",
            }
        )
        if self.database_url:
            env["ROOST_DATABASE_URL"] = self.database_url
        env.update(self.env_overrides)
        return env

    def start(self, *extra_args: str, timeout: float = 60) -> RoostServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The child keeps its own descriptor; the parent's copy can close at once.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "roost", "serve", *extra_args],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"roost serve exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"roost serve did not come up in {timeout}s:\n{self.log_path.read_text()}"
        )

    @contextmanager
    def running(self) -> Iterator[RoostServer]:
        """Start, yield, stop; then fail if the server logged a traceback or an unhandled error."""
        self.start()
        try:
            yield self
        finally:
            self.stop()
        log = self.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log
        assert not self.unhandled_errors(), self.unhandled_errors()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def unhandled_errors(self) -> list[str]:
        """Log lines that show an unhandled exception (a 500) in the server."""
        if not self.log_path.exists():
            return []
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if "unhandled error" in line or "Exception in ASGI application" in line
        ]


class Api(httpx.Client):
    """An HTTP client for one Roost server, optionally authenticated."""

    def __init__(self, base_url: str, token: str | None = None, **kwargs: Any) -> None:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        super().__init__(base_url=base_url, headers=headers, timeout=30, **kwargs)

    def as_token(self, token: str | None) -> Api:
        """Another client for the same server with a different credential."""
        return Api(str(self.base_url), token)

    def login(self, username: str, password: str) -> str:
        resp = self.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert resp.status_code == 200, resp.text
        token: str = resp.json()["token"]
        return token


def assert_problem(
    resp: httpx.Response, status: int, detail_contains: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with ``status`` (and a detail mentioning a phrase)."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text}"
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["title"] and isinstance(body["detail"], str) and body["detail"]
    if detail_contains is not None:
        assert detail_contains.lower() in body["detail"].lower(), body
    return body


def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it answers something true and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s (last answer: {result!r})")
        time.sleep(interval)


def admin_client(server: RoostServer) -> Api:
    """A client of the superuser ``admin`` on ``server`` (close it when done)."""
    with Api(server.url) as anon:
        return Api(server.url, anon.login("admin", ADMIN_PASSWORD))


@dataclass(frozen=True)
class Device:
    """A device made for a test, with a token of its own."""

    id: str
    token: str
    token_id: str


def make_device(api: Api, **fields: Any) -> Device:
    """Register a device (a unique id, optional fields) and issue it a token."""
    device_id = unique("dev")
    resp = api.post("/api/v1/devices", json={"id": device_id, "name": device_id, **fields})
    assert resp.status_code == 201, resp.text
    resp = api.post(f"/api/v1/devices/{device_id}/tokens", json={})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    return Device(device_id, body["token"], body["id"])


def unique(prefix: str) -> str:
    """A unique id for records of one test."""
    return f"{prefix}-{secrets.token_hex(4)}"


@contextmanager
def private_nats(tmp: Path) -> Iterator[str]:
    """A ``nats-server -js`` of the test's own (free port, storage in ``tmp``); yields its URL.

    A Roost in scale mode owns the ``ROOST_INGEST`` stream of the NATS account it uses; a server
    of its own keeps one test's Roost from taking another's batches (as separate accounts would
    in production).
    """
    import shutil

    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        skip_or_fail("nats-server is not installed (Debian package nats-server)")
        raise AssertionError("unreachable")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not come up on port {port}")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
