"""Fixtures of the agent tests that need a server of their own per test (one they may stop)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.support import SERVER_START_S
from tests.support import Api, RoostServer, admin_client, free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RoostServer]:
    """A server the test may stop and start again; no traceback in its log at the end.

    Modules that share one server between their tests define a module-scoped ``server``."""
    roost = RoostServer(tmp_path / "roost", mqtt_port=free_port()).start(timeout=SERVER_START_S)
    try:
        yield roost
    finally:
        roost.stop()
    log = roost.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]
    assert not roost.unhandled_errors(), roost.unhandled_errors()


@pytest.fixture
def admin(server: RoostServer) -> Iterator[Api]:
    with admin_client(server) as api:
        yield api
