"""The ``roost`` command, run as a real subprocess against a SQLite data dir and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from roost.config import load_settings
from roost.runtime import Roost
from roost.store.migrate import head_revision
from tests.support import fresh_postgres_database, postgres_reachable, skip_or_fail

ADMIN_PASSWORD = "cli-admin-password"


@dataclass
class Cli:
    """Runs ``python -m roost`` on one store."""

    data_dir: Path
    database_url: str = ""

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        env.update(ROOST_DATA_DIR=str(self.data_dir), ROOST_ADMIN_PASSWORD=ADMIN_PASSWORD)
        if self.database_url:
            env["ROOST_DATABASE_URL"] = self.database_url
        # Wide enough that rich never wraps a table row or an error line.
        env["COLUMNS"] = "250"
        return env

    def __call__(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "roost", *args],
            env=self.env(),
            input=stdin.decode() if stdin is not None else None,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def ok(self, *args: str, stdin: bytes | None = None) -> str:
        proc = self(*args, stdin=stdin)
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def json(self, *args: str) -> Any:
        return orjson.loads(self.ok(*args, "--json"))

    def login(self, username: str, password: str) -> str:
        """Log in through the identity service on the same store (proves a password works)."""

        async def attempt() -> str:
            settings = load_settings(
                {}, data_dir=self.data_dir, database_url=self.database_url or None
            )
            roost = Roost.build(settings)
            try:
                result = await roost.identity.login(username, password, "127.0.0.1")
                return str(result.user["username"])
            finally:
                await roost.close()

        return asyncio.run(attempt())


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The command on a fresh SQLite data dir."""
    return Cli(tmp_path / "data")


@pytest.fixture(params=["sqlite", "postgresql"])
def any_cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    """The command on a fresh store of each backend."""
    if request.param == "sqlite":
        yield Cli(tmp_path / "data")
        return
    reason = postgres_reachable()
    if reason:
        skip_or_fail(reason)
    with fresh_postgres_database() as url:
        yield Cli(tmp_path / "data", url)


def test_version(cli: Cli) -> None:
    assert cli.ok("--version").startswith("roost ")


def test_db_upgrade_and_current(cli: Cli) -> None:
    head = head_revision()
    assert cli.ok("db", "current").startswith(f"(empty) (the newest is {head}")
    assert cli.ok("db", "upgrade").strip() == f"database upgraded: (empty) → {head}"
    assert cli.ok("db", "upgrade").strip() == f"database already at revision {head} (the newest)"
    assert cli.ok("db", "current").strip() == f"{head} (head)"


def test_tenants_and_users(cli: Cli) -> None:
    out = cli.ok("tenant", "create", "acme", "--name", "ACME Retail", "--admin-user", "acme-boss")
    assert "created tenant acme (ACME Retail)" in out
    # No password given and stdin is no terminal: one is generated and printed once.
    generated = out.split("password for acme-boss: ")[1].split()[0]
    assert cli.login("acme-boss", generated) == "acme-boss"
    assert [t["id"] for t in cli.json("tenant", "list")] == ["acme", "default"]
    table = cli.ok("tenant", "list")
    assert "ACME Retail" in table and "Default" in table

    proc = cli("tenant", "create", "acme", "--name", "Again")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: tenant 'acme' already exists"

    cli.ok("user", "create", "olivia", "--role", "operator", "--tenant", "acme",
           "--password", "olivia-password")  # fmt: skip
    users = cli.json("user", "list", "--tenant", "acme")
    assert [(u["username"], u["role"]) for u in users] == [
        ("acme-boss", "admin"),
        ("olivia", "operator"),
    ]
    assert "olivia" in cli.ok("user", "list", "--tenant", "acme")
    assert cli.login("olivia", "olivia-password") == "olivia"

    proc = cli("user", "create", "short", "--role", "viewer", "--password", "short")
    assert (proc.returncode, proc.stderr.strip()) == (
        1,
        "error: password must have at least 8 characters",
    )
    proc = cli("user", "create", "x", "--role", "boss", "--password", "long-enough")
    assert (
        proc.returncode == 2 and "'boss' is not one of 'viewer', 'operator', 'admin'" in proc.stderr
    )
    proc = cli("user", "list", "--tenant", "nowhere")
    assert (proc.returncode, proc.stderr.strip()) == (1, "error: no tenant 'nowhere'")

    # The superuser's password, reset from the machine (the way back in when it is lost).
    out = cli.ok("user", "set-password", "admin")
    new = out.split("new password for admin: ")[1].split()[0]
    assert cli.login("admin", new) == "admin"
    cli.ok("user", "set-password", "olivia", "--password", "another-password")
    assert cli.login("olivia", "another-password") == "olivia"
    proc = cli("user", "set-password", "nobody", "--password", "whatever-it-is")
    assert (proc.returncode, proc.stderr.strip()) == (1, "error: no user 'nobody'")


BAD_BATCH = (
    "id,name,site_id,tag.color\nb-1,One,,blue\nb-2,Two,nowhere,red\nb 3,Three,,\nb-4,Four,,green\n"
)


def test_devices_create_list_import_export(any_cli: Cli, tmp_path: Path) -> None:
    cli = any_cli
    out = cli.ok("device", "create", "kiosk-1", "--name", "Kiosk 1", "--tag", "floor=1",
                 "--tag", "brand=beauty")  # fmt: skip
    assert "created device kiosk-1" in out
    proc = cli("device", "create", "kiosk-1")
    assert (proc.returncode, proc.stderr.strip()) == (1, "error: device 'kiosk-1' already exists")
    proc = cli("device", "create", "kiosk-2", "--site", "nowhere")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: unknown reference: no site 'nowhere'",
                                        "  site_id: no site 'nowhere'"]  # fmt: skip

    # All or nothing: one bad row and the file is refused, every bad row listed.
    batch = tmp_path / "batch.csv"
    batch.write_text(BAD_BATCH)
    proc = cli("device", "import", str(batch))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0] == "error: import refused: 2 of 4 row(s) are invalid, so nothing was imported"
    assert lines[1] == "  row 2 (id b-2) site_id: no site 'nowhere'"
    assert lines[2].startswith("  row 3 (id b 3) id: device id 'b 3' is not valid")
    assert cli.json("device", "list")["total"] == 1

    proc = cli("device", "import", str(batch), "--dry-run", "--partial")
    assert proc.returncode == 0
    assert proc.stdout.strip() == (
        "dry run, nothing written: would have 2 created, 0 updated, 0 unchanged, 0 skipped"
    )
    assert cli.json("device", "list")["total"] == 1

    proc = cli("device", "import", str(batch), "--partial")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "imported: 2 created, 0 updated, 0 unchanged, 0 skipped"
    assert "2 row(s) refused:" in proc.stderr and "row 2 (id b-2)" in proc.stderr
    page = cli.json("device", "list", "--sort", "id")
    assert [d["id"] for d in page["items"]] == ["b-1", "b-4", "kiosk-1"]
    assert page["items"][0]["tags"] == {"color": "blue"}

    table = cli.ok("device", "list", "--tag", "brand:beauty")
    assert "kiosk-1" in table and "brand=beauty, floor=1" in table and "b-1" not in table
    assert "devices 1-1 of 1" in table

    # JSON with sensors and components, from standard input.
    robot = [{"id": "robot-1", "name": "Robot", "tags": {"line": "A"},
              "sensors": [{"id": "temperature", "type": "double", "unit": "°C"}],
              "components": [{"id": "arm", "name": "Arm", "parent_id": "base"},
                             {"id": "base", "name": "Base", "serial_number": "SN-9"}]}]  # fmt: skip
    out = cli.ok("device", "import", "-", "--format", "json", stdin=orjson.dumps(robot))
    assert out.strip() == "imported: 1 created, 0 updated, 0 unchanged, 0 skipped"
    shown = cli.json("device", "show", "robot-1")
    assert [s["id"] for s in shown["sensors"]] == ["temperature"]
    assert {(c["id"], c["parent_id"]) for c in shown["components"]} == {
        ("arm", "base"),
        ("base", None),
    }
    text = cli.ok("device", "show", "robot-1")
    assert "temperature" in text and "SN-9" in text
    proc = cli("device", "show", "nope")
    assert (proc.returncode, proc.stderr.strip()) == (1, "error: no device 'nope'")

    exported = cli.ok("device", "export")
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [r["id"] for r in rows] == ["b-1", "b-4", "kiosk-1", "robot-1"]
    assert rows[2]["tag.brand"] == "beauty"
    target = tmp_path / "fleet.json"
    proc = cli("device", "export", "--output", str(target), "--tag", "line:A")
    assert proc.returncode == 0 and proc.stderr.strip() == f"exported to {target}"
    fleet = orjson.loads(target.read_bytes())
    assert [d["id"] for d in fleet] == ["robot-1"]
    assert [c["id"] for c in fleet[0]["components"]] == ["base", "arm"]  # parent first

    # The export imports back: unchanged.
    out = cli.ok("device", "import", str(target), "--on-existing", "update")
    assert out.strip() == "imported: 0 created, 0 updated, 1 unchanged, 0 skipped"

    # Presence: none of them was ever heard from.
    assert cli.json("device", "list", "--status", "never_seen")["total"] == 4
    assert cli.json("device", "list", "--status", "online")["total"] == 0
    proc = cli("device", "list", "--status", "asleep")
    assert proc.returncode == 2 and "asleep" in proc.stderr


def test_usage_errors(cli: Cli, tmp_path: Path) -> None:
    unknown = tmp_path / "devices.txt"
    unknown.write_text("id\nx\n")
    proc = cli("device", "import", str(unknown))
    assert proc.returncode == 2 and "--format csv" in proc.stderr
    proc = cli("device", "import", str(tmp_path / "missing.csv"))
    assert proc.returncode == 2 and "missing.csv" in proc.stderr
    proc = cli("device", "import", str(unknown), "--format", "xml")
    assert proc.returncode == 2 and "'xml' is not one of 'csv', 'json'" in proc.stderr
    proc = cli("device", "import", str(unknown), "--format", "csv", "--on-existing", "merge")
    assert proc.returncode == 2 and "'merge' is not one of" in proc.stderr
    proc = cli("device", "list", "--tag", ":blue")
    assert (proc.returncode, proc.stderr.strip()) == (
        1,
        "error: tag filter ':blue' must look like key:value or key",
    )
    proc = cli("device", "create", "d-1", "--tag", "no-equals-sign")
    assert proc.returncode == 2 and "key=value" in proc.stderr
    proc = cli("device", "list", "--database-url", "postgresql://roost@127.0.0.1:1/roost")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot reach the postgresql database: ")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"id": "x"}')
    proc = cli("device", "import", str(bad_json))
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == "error: the JSON file must be an array of device objects, not an object"
    )


def test_the_cli_keeps_the_same_length_rules_as_the_api(cli: Cli) -> None:
    proc = cli("device", "create", "long-name", "--name", "x" * 201)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: too long: name"), proc.stderr
    proc = cli("device", "list", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["total"] == 0


def test_serve_names_the_fix_when_the_mqtt_port_is_taken(cli: Cli) -> None:
    import socket

    from tests.support import free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        proc = cli("serve", "--port", str(free_port()), "--mqtt-port", str(busy))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot listen for MQTT on 127.0.0.1:{busy}" in proc.stderr
    assert "--mqtt-port or ROOST_MQTT_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr
