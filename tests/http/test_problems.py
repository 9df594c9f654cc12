"""The HTTP shell's last line (``roost.http.problems``): an exception no handler takes is answered
problem+json inside the app, on a real uvicorn server, and the keep-alive connection serves the
next request; a value JSON cannot hold (orjson's 64-bit integers), even wrapped by SQLAlchemy, is
422 rather than 500."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI

from roost.http import problems
from tests.support import free_port


def _app() -> FastAPI:
    app = FastAPI()
    problems.install(app)
    table = sa.Table("docs", sa.MetaData(), sa.Column("body", sa.JSON))
    engine = sa.create_engine("sqlite://", json_serializer=lambda v: orjson.dumps(v).decode())
    table.metadata.create_all(engine)

    @app.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/encode")
    async def encode() -> None:
        orjson.dumps({"n": 2**64})

    @app.get("/stored")
    async def stored() -> None:
        with engine.begin() as conn:  # SQLAlchemy wraps its serialiser's error
            conn.execute(table.insert().values(body={"n": 2**64}))

    return app


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(_app(), host="127.0.0.1", port=port, log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_unexpected_errors_are_answered_and_the_connection_stays(base_url: str) -> None:
    ports = []
    with httpx.Client(base_url=base_url) as client:
        for path, status in (
            ("/boom", 500),
            ("/ok", 200),
            ("/encode", 422),
            ("/ok", 200),
            ("/stored", 422),
            ("/ok", 200),
            ("/boom", 500),
            ("/ok", 200),
        ):
            resp = client.get(path)
            assert resp.status_code == status, (path, resp.text)
            if status != 200:
                assert resp.headers["content-type"] == problems.PROBLEM_TYPE
                assert resp.json()["status"] == status
            if status == 422:
                assert "64-bit" in resp.json()["detail"], resp.text
            ports.append(resp.extensions["network_stream"].get_extra_info("client_addr")[1])
    assert len(set(ports)) == 1, "an error closed the keep-alive connection"
