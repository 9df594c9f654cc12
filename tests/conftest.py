"""Shared fixtures: running Roost servers on each backend, role-bearing clients, and empty
databases on each backend (for the store and the telemetry engine's contract suites)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from roost.store.database import Database, open_database
from tests.support import (
    ADMIN_PASSWORD,
    Api,
    RoostServer,
    fresh_postgres_database,
    postgres_reachable,
    skip_or_fail,
    unique,
)

BACKENDS = ["sqlite", "postgresql"]
# Telemetry retention applied every second (not hourly), so that tests can watch it work.
SERVER_ENV = {"ROOST_RETENTION_CHECK_S": "1"}


def _start(tmp: Path, backend: str) -> Iterator[RoostServer]:
    if backend == "postgresql":
        reason = postgres_reachable()
        if reason:
            skip_or_fail(reason)
        with fresh_postgres_database() as url:
            server = RoostServer(tmp, database_url=url, env_overrides=SERVER_ENV).start()
            try:
                yield server
            finally:
                server.stop()
    else:
        server = RoostServer(tmp, env_overrides=SERVER_ENV).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RoostServer]:
    """A Roost server per backend, shared by the session; fails if it logged any unhandled error."""
    backend = request.param
    gen = _start(tmp_path_factory.mktemp(f"roost-{backend}"), backend)
    srv = next(gen)
    yield srv
    errors = srv.unhandled_errors()
    for _ in gen:  # stops the server
        pass
    assert not errors, "the server logged unhandled errors (500s):\n" + "\n".join(errors)


@pytest.fixture(scope="session")
def admin(server: RoostServer) -> Iterator[Api]:
    """The superuser's client."""
    anon = Api(server.url)
    token = anon.login("admin", ADMIN_PASSWORD)
    anon.close()
    with Api(server.url, token) as api:
        yield api


@dataclass
class Tenant:
    """A fresh tenant with one user per role, each with a logged-in client."""

    id: str
    admin: Api
    operator: Api
    viewer: Api
    anonymous: Api
    passwords: dict[str, str]
    usernames: dict[str, str]
    extra: list[Api] = field(default_factory=list)

    def client(self, token: str) -> Api:
        """Another client of the server (e.g. a device's), closed with the tenant."""
        api = self.anonymous.as_token(token)
        self.extra.append(api)
        return api


@pytest.fixture
def tenant(server: RoostServer, admin: Api) -> Iterator[Tenant]:
    """A new tenant per test, so tests never see each other's records."""
    tenant_id = unique("t")
    usernames = {role: f"{tenant_id}-{role}" for role in ("admin", "operator", "viewer")}
    passwords = {role: f"pw-{role}-{tenant_id}" for role in usernames}
    resp = admin.post(
        "/api/v1/tenants",
        json={
            "id": tenant_id,
            "name": f"Tenant {tenant_id}",
            "admin": {"username": usernames["admin"], "password": passwords["admin"]},
        },
    )
    assert resp.status_code == 201, resp.text
    anon = Api(server.url)
    tadmin = anon.as_token(anon.login(usernames["admin"], passwords["admin"]))
    for role in ("operator", "viewer"):
        resp = tadmin.post(
            "/api/v1/users",
            json={"username": usernames[role], "password": passwords[role], "role": role},
        )
        assert resp.status_code == 201, resp.text
    clients = {
        role: anon.as_token(anon.login(usernames[role], passwords[role]))
        for role in ("operator", "viewer")
    }
    made = Tenant(
        tenant_id, tadmin, clients["operator"], clients["viewer"], anon, passwords, usernames
    )
    yield made
    for client in (tadmin, *clients.values(), anon, *made.extra):
        client.close()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'roost.db'}"
        return
    reason = postgres_reachable()
    if reason:
        skip_or_fail(reason)
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """An opened, empty database."""
    database = open_database(database_url)
    try:
        yield database
    finally:
        await database.dispose()
