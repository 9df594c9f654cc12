"""The agent's local API and edge metadata service, used as apps and containers on a device do.

Clients here are plain httpx (or raw sockets): no agent code on the client side. The server is
a real ``roost serve``; the agent is the real ``roost-agent run`` subprocess where a test needs
only its doors, and an in-process :class:`LocalApi` over a real outbox where a test must look
at the queue or shorten the socket timeouts.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from roost_agent.config import Config, load_config
from roost_agent.localapi import MAX_BODY_BYTES, LocalApi
from roost_agent.metadata import Metadata
from roost_agent.store import Outbox

from roost.credentials.keys import sas
from tests.agent.support import AgentProcess, write_config
from tests.support import (
    Api,
    RoostServer,
    admin_client,
    assert_problem,
    eventually,
    free_port,
    make_device,
)

META = {"Metadata": "true"}
# The shortest lifetime the config allows: long enough to use a token, short enough to wait out.
TOKEN_TTL_S = 10


@dataclass
class StandInAgent:
    """What the local API uses of the agent, over a real outbox and real metadata."""

    config: Config
    metadata: Metadata
    outbox: Outbox

    def enqueue(self, kind: str, items: list[dict[str, Any]]) -> int:
        return self.outbox.put(kind, items)

    def status(self) -> dict[str, Any]:
        return {"connected": False, "queue": self.outbox.stats()}


@contextmanager
def local_api(config: Config, **options: float) -> Iterator[tuple[str, StandInAgent]]:
    """An in-process local API for ``config``; yields its URL and the agent behind it."""
    outbox = Outbox(config.queue_path, config.queue_max_bytes, config.queue_when_full)
    agent = StandInAgent(config, Metadata(config), outbox)
    api = LocalApi(agent, **options)
    api.start()
    try:
        yield f"http://127.0.0.1:{api.port}", agent
    finally:
        api.stop()
        outbox.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """One ``roost serve`` (SQLite) for the module (shadows the suite's per-backend server)."""
    with RoostServer(tmp_path_factory.mktemp("roost"), mqtt_port=free_port()).running() as up:
        yield up


@pytest.fixture
def admin(server: RoostServer) -> Iterator[Api]:
    """The superuser on :func:`server` (its devices are in the ``default`` tenant)."""
    with admin_client(server) as client:
        yield client


def offline_config(tmp_path: Path) -> Config:
    """A config whose server is not there (a closed port): for tests of the local side only."""
    nowhere = RoostServer(tmp_path / "nowhere", mqtt_port=free_port())
    return load_config(write_config(tmp_path / "agent.toml", nowhere, "dev-x", "t0k", local_port=0))


def device_config(
    tmp_path: Path, server: RoostServer, admin: Api, *, key: bool = True, **fields: Any
) -> tuple[Path, str]:
    """A device on ``server`` (with a SAS key) and an agent config for it; (config, device id)."""
    device = make_device(admin, **fields)
    section: dict[str, Any] = {"token_ttl_s": TOKEN_TTL_S}
    extra: dict[str, dict[str, Any]] = {"local_api": section}
    if key:
        resp = admin.post(f"/api/v1/devices/{device.id}/keys", json={})
        assert resp.status_code == 201, resp.text
        extra["device"] = {"key": resp.json()["key"]}
    path = write_config(tmp_path / "agent.toml", server, device.id, device.token, sections=extra)
    return path, device.id


# -- bad input ----------------------------------------------------------------------------------

BAD_BODIES = [
    (b'{"temperature": 21.5', "malformed JSON"),
    (b"", "malformed JSON"),
    (b"\xff\xfe{}", "malformed JSON"),
    (b'{"temperature": NaN}', "malformed JSON"),
    (b"42", "not int"),
    (b'"hot"', "not str"),
    (b"null", "not NoneType"),
    (b"[]", "empty"),
    (b"{}", "empty"),
    (b'[{"t": 1}, 3]', "item 1"),
    (b'[{"t": 1}, {}]', "item 1"),
]


@pytest.mark.parametrize("kind", ["telemetry", "events"])
def test_bad_bodies_get_a_clear_400_and_nothing_is_queued(tmp_path: Path, kind: str) -> None:
    with local_api(offline_config(tmp_path)) as (url, agent):
        for body, reason in BAD_BODIES:
            resp = httpx.post(
                f"{url}/v1/{kind}", content=body, headers={"content-type": "application/json"}
            )
            assert_problem(resp, 400, reason)
        assert agent.outbox.stats()["queued_points"] == 0
        assert agent.outbox.stats()["queued_items"] == 0

        # The same door takes good bodies, answering once they are queued.
        if kind == "telemetry":
            good: Any = [{"temperature": 21.5, "humidity": 40}, {"ts": 1, "values": {"t": 2}}]
        else:
            good = {"event": "door_open", "data": {"door": 2}}
        resp = httpx.post(f"{url}/v1/{kind}", json=good)
        assert resp.status_code == 200, resp.text
        queued = resp.json()["queued"]
        assert queued == (3 if kind == "telemetry" else 1)
        assert agent.outbox.stats()["queued_points"] == queued
        status = httpx.get(f"{url}/v1/status").json()
        assert status["queue"]["queued_points"] == queued


def test_oversized_bodies_get_413_and_nothing_is_queued(tmp_path: Path) -> None:
    with local_api(offline_config(tmp_path)) as (url, agent):
        big = json.dumps([{"v": "x" * 1000}] * 1100).encode()
        assert len(big) > MAX_BODY_BYTES
        with httpx.Client() as client:
            assert_problem(client.post(f"{url}/v1/telemetry", content=big), 413, "at most")
            # The connection stays usable after the refusal (the body was read and dropped).
            resp = client.post(f"{url}/v1/telemetry", json={"t": 1})
            assert resp.status_code == 200, resp.text
        just = json.dumps({"v": "x" * (MAX_BODY_BYTES - 10)}).encode()
        assert len(just) <= MAX_BODY_BYTES
        assert httpx.post(f"{url}/v1/events", content=just).status_code == 200

        # A claimed gigabyte is refused before anything is read.
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 30) as raw:
            raw.sendall(
                b"POST /v1/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Length: 1000000000\r\n\r\n{"
            )
            answer = _read_all(raw)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert agent.outbox.stats()["queued_points"] == 2


def _read_all(raw: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := raw.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_unknown_routes_methods_and_missing_lengths_are_problems(tmp_path: Path) -> None:
    with local_api(offline_config(tmp_path)) as (url, _agent):
        assert_problem(httpx.get(f"{url}/v2/telemetry"), 404, "no route")
        resp = httpx.get(f"{url}/v1/telemetry")
        assert_problem(resp, 405, "POST")
        assert resp.headers["allow"] == "POST"
        assert_problem(httpx.options(f"{url}/v1/metadata/token"), 405)  # no CORS preflight

        def chunks() -> Iterator[bytes]:
            yield b'{"t": 1}'

        assert_problem(httpx.post(f"{url}/v1/telemetry", content=chunks()), 411, "Content-Length")
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}


def test_slow_clients_are_cut_off(tmp_path: Path) -> None:
    config = offline_config(tmp_path)
    with local_api(config, socket_timeout_s=0.5, body_deadline_s=2) as (url, agent):
        port = int(url.rsplit(":", 1)[1])
        assert (config.data_dir / "local-api.port").read_text().strip() == str(port)
        # Headers that never end: the connection is closed without an answer.
        with socket.create_connection(("127.0.0.1", port), 30) as raw:
            raw.sendall(b"POST /v1/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            assert _read_all(raw) == b""
        # A body that stops coming: 408, then closed.
        with socket.create_connection(("127.0.0.1", port), 30) as raw:
            raw.sendall(
                b"POST /v1/telemetry HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 20\r\n\r\n{"
            )
            answer = _read_all(raw)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"application/problem+json" in answer
        # Meanwhile and after, others are served.
        assert httpx.post(f"{url}/v1/telemetry", json={"t": 1}).status_code == 200
        assert agent.outbox.stats()["queued_points"] == 1


def test_a_full_queue_under_refuse_answers_507(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    nowhere = RoostServer(tmp_path / "nowhere", mqtt_port=free_port())
    queue = {"max_bytes": 1_000_000, "when_full": "refuse"}
    config = load_config(
        write_config(path, nowhere, "d", "t", local_port=0, sections={"queue": queue})
    )
    with local_api(config) as (url, agent):
        item = {"v": "x" * 50_000}
        accepted = 0
        for _ in range(40):
            resp = httpx.post(f"{url}/v1/events", json=item)
            if resp.status_code != 200:
                break
            accepted += 1
        assert_problem(resp, 507, "full")
        assert 0 < accepted < 40
        assert agent.outbox.stats()["queued_items"] == accepted


# -- the metadata service -----------------------------------------------------------------------


def test_metadata_routes_want_the_metadata_header_and_a_local_host(tmp_path: Path) -> None:
    with local_api(offline_config(tmp_path)) as (url, _agent):
        for route in ("identity", "config", "token"):
            assert_problem(httpx.get(f"{url}/v1/metadata/{route}"), 400, "Metadata: true")
            rebound = httpx.get(
                f"{url}/v1/metadata/{route}", headers={**META, "Host": "evil.example:7090"}
            )
            assert_problem(rebound, 403, "local address")
        # Never fetched, the server unreachable: 503 saying so (not a hang, not a 500).
        resp = httpx.get(f"{url}/v1/metadata/identity", headers=META)
        assert_problem(resp, 503, "not reachable")


def test_no_device_key_means_no_local_token(
    tmp_path: Path, server: RoostServer, admin: Api
) -> None:
    path, _device_id = device_config(tmp_path, server, admin, key=False)
    with local_api(load_config(path)) as (url, _agent):
        assert_problem(httpx.get(f"{url}/v1/metadata/token", headers=META), 503, "key")


def test_a_container_gets_identity_config_and_a_short_lived_token(
    tmp_path: Path, server: RoostServer, admin: Api
) -> None:
    assert admin.post("/api/v1/sites", json={"id": "store-7", "name": "Store 7"}).status_code == 201
    path, device_id = device_config(tmp_path, server, admin, site_id="store-7", tags={"lane": "3"})
    resp = admin.patch(
        f"/api/v1/devices/{device_id}/state", json={"desired": {"volume": 4, "light": "on"}}
    )
    assert resp.status_code == 200, resp.text
    agent = AgentProcess(path, load_config(path).local_port).start()
    try:
        # The container: plain HTTP to the agent, then to the server with what it was given.
        with httpx.Client(base_url=agent.url, headers=META) as local:
            identity = local.get("/v1/metadata/identity")
            assert identity.status_code == 200, identity.text
            assert identity.json()["id"] == device_id
            assert identity.json()["site_id"] == "store-7"
            assert identity.json()["tags"] == {"lane": "3"}
            assert identity.json()["tenant_id"] == "default"
            config = local.get("/v1/metadata/config")
            assert config.status_code == 200, config.text
            assert config.json() == {"volume": 4, "light": "on"}

            # A change of desired reaches the metadata service (the delta makes it refresh).
            changed = admin.patch(
                f"/api/v1/devices/{device_id}/state", json={"desired": {"volume": 5}}
            )
            assert changed.status_code == 200, changed.text
            eventually(lambda: local.get("/v1/metadata/config").json().get("volume") == 5)
            assert local.get("/v1/metadata/config").json() == {"volume": 5, "light": "on"}

            granted = local.get("/v1/metadata/token").json()
            token = granted["token"]
            assert token.startswith("SharedAccessSignature sr=")
            assert granted["header"] == "Authorization" and granted["api_url"] == server.url
            expires_at = datetime.fromisoformat(granted["expires_at"].replace("Z", "+00:00"))
            assert 0 < granted["expires_in"] <= TOKEN_TTL_S
            assert "t0k" not in json.dumps(granted) and load_config(path).token not in token

            sent = httpx.post(
                f"{granted['api_url']}/api/v1/telemetry",
                json={"container_temp": 40.5},
                headers={granted["header"]: token},
            )
            assert sent.status_code == 200, sent.text
            stored = admin.get(
                f"/api/v1/devices/{device_id}/telemetry", params={"sensor": "container_temp"}
            ).json()
            assert [p["value"] for p in stored["items"]] == [40.5]

            # Once expired the server refuses it; the metadata service has signed a new one.
            _wait_until(expires_at.timestamp() + 1)
            refused = httpx.post(
                f"{server.url}/api/v1/telemetry", json={"t": 1}, headers={"Authorization": token}
            )
            assert refused.status_code in (401, 403), refused.text
            renewed = local.get("/v1/metadata/token").json()
            assert renewed["token"] != token and renewed["expires_at"] > granted["expires_at"]
            again = httpx.post(
                f"{server.url}/api/v1/telemetry",
                json={"container_temp": 41},
                headers={"Authorization": renewed["token"]},
            )
            assert again.status_code == 200, again.text
    finally:
        agent.stop()
    assert "Traceback" not in agent.log(), agent.log()


def _wait_until(epoch: float) -> None:
    """Sleep until the wall clock passes ``epoch`` (a token's expiry is wall-clock time)."""
    while time.time() < epoch:
        time.sleep(min(0.5, max(0.01, epoch - time.time())))


def test_metadata_answers_from_its_cache_while_the_server_is_down(tmp_path: Path) -> None:
    # Started with time to spare: the suite runs many servers at once.
    own = RoostServer(tmp_path / "own", mqtt_port=free_port()).start(timeout=90)
    try:
        with admin_client(own) as own_admin:
            path, device_id = device_config(tmp_path, own, own_admin, tags={"floor": "2"})
            own_admin.patch(f"/api/v1/devices/{device_id}/state", json={"desired": {"mode": "eco"}})
        config = load_config(path)
        with local_api(config) as (url, _agent):
            first = httpx.get(f"{url}/v1/metadata/identity", headers=META)
            assert first.status_code == 200, first.text
            assert httpx.get(f"{url}/v1/metadata/config", headers=META).json() == {"mode": "eco"}
            own.stop()
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"{own.url}/healthz")
            assert httpx.get(f"{url}/v1/metadata/identity", headers=META).json() == first.json()
            token = httpx.get(f"{url}/v1/metadata/token", headers=META)
            assert token.status_code == 200  # signed locally: no server needed
        # A restarted agent, the server still down: the cache on disk answers.
        assert (config.data_dir / "identity.json").exists()
        with local_api(config) as (url, _agent):
            again = httpx.get(f"{url}/v1/metadata/identity", headers=META)
            assert again.status_code == 200 and again.json() == first.json()
            assert httpx.get(f"{url}/v1/metadata/config", headers=META).json() == {"mode": "eco"}
            assert again.json()["tags"] == {"floor": "2"}
    finally:
        own.stop()


def test_refresh_follows_the_server(tmp_path: Path, server: RoostServer, admin: Api) -> None:
    path, device_id = device_config(tmp_path, server, admin)
    config = load_config(path)
    metadata = Metadata(config)
    assert metadata.desired() == {}
    assert metadata.identity()["tags"] == {}
    admin.patch(f"/api/v1/devices/{device_id}", json={"tags": {"zone": "b"}})
    admin.patch(f"/api/v1/devices/{device_id}/state", json={"desired": {"light": "off"}})
    assert metadata.desired() == {}  # cached until refreshed (on connect, on a delta)
    metadata.refresh()
    assert metadata.desired() == {"light": "off"}
    assert metadata.identity()["tags"] == {"zone": "b"}
    assert json.loads((config.data_dir / "desired.json").read_text()) == {"light": "off"}


def test_local_tokens_are_the_server_s_sas_form_and_renewed_at_half_life(tmp_path: Path) -> None:
    key = sas.new_key()
    nowhere = RoostServer(tmp_path / "nowhere", mqtt_port=free_port())
    extra: dict[str, dict[str, Any]] = {
        "device": {"key": key, "tenant_id": "acme"},
        "local_api": {"token_ttl_s": 100},
    }
    config = load_config(write_config(tmp_path / "a.toml", nowhere, "till-7", "t", sections=extra))
    now = [1_800_000_000.0]
    metadata = Metadata(config, clock=lambda: now[0])

    first = metadata.local_token()
    fields = sas.parse_sas(first["token"])
    assert fields.resource == "acme/devices/till-7" and fields.expiry == 1_800_000_100
    assert sas.signature_matches(sas.decode_key(key), fields)
    assert not sas.signature_matches(sas.decode_key(sas.new_key()), fields)
    assert (first["expires_at"], first["expires_in"]) == ("2027-01-15T08:01:40Z", 100)

    now[0] += 40  # more than half its life left: the same token
    same = metadata.local_token()
    assert same["token"] == first["token"] and same["expires_in"] == 60
    now[0] += 20  # less than half left: a new one, valid a whole lifetime
    renewed = metadata.local_token()
    assert renewed["token"] != first["token"] and renewed["expires_in"] == 100
    assert sas.parse_sas(renewed["token"]).expiry == 1_800_000_160
