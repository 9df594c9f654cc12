"""The data directory is private: a server (or a CLI command) makes it 0700 and its files 0600,
SQLite's own ``-wal``/``-shm`` included, and tightens a data directory an older Roost left open."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.support import RoostServer


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def assert_private_tree(root: Path) -> list[str]:
    """Every directory under ``root`` is 0700 and every file 0600; answers what was checked."""
    assert mode(root) == 0o700, oct(mode(root))
    seen = []
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(folder, name)
            assert mode(path) == 0o700, (path, oct(mode(path)))
            seen.append(str(path.relative_to(root)) + "/")
        for name in files:
            path = Path(folder, name)
            assert mode(path) == 0o600, (path, oct(mode(path)))
            seen.append(str(path.relative_to(root)))
    return seen


def test_a_fresh_data_dir_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    # The server's own log goes elsewhere: the data directory is the server's alone.
    server = RoostServer(tmp_path / "logs", env_overrides={"ROOST_DATA_DIR": str(data_dir)})
    with server.running():
        # While serving, SQLite's WAL and shared-memory files exist beside the database.
        seen = assert_private_tree(data_dir)
        assert {"roost.db", "roost.db-wal", "roost.db-shm"} <= set(seen), seen
    assert "secret.key" not in seen  # the test server is given ROOST_SECRET_KEY
    assert_private_tree(data_dir)


def test_the_generated_secret_key_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = RoostServer(tmp_path / "logs", env_overrides={"ROOST_DATA_DIR": str(data_dir)})
    server.env_overrides["ROOST_SECRET_KEY"] = ""
    with server.running():
        seen = assert_private_tree(data_dir)
    assert "secret.key" in seen, seen


def test_an_open_data_dir_is_tightened_at_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "old"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)  # whatever the test runner's umask
    database = data_dir / "roost.db"
    database.touch()  # an empty file is an empty SQLite database
    os.chmod(database, 0o644)
    notes = data_dir / "notes.txt"  # not Roost's: left as the operator made it
    notes.write_text("the operator's own file\n")
    os.chmod(notes, 0o644)
    server = RoostServer(tmp_path / "logs", env_overrides={"ROOST_DATA_DIR": str(data_dir)})
    with server.running():
        assert mode(data_dir) == 0o700
        for name in ("roost.db", "roost.db-wal", "roost.db-shm"):
            assert mode(data_dir / name) == 0o600, name
        assert mode(notes) == 0o644
    log = server.log_path.read_text()
    assert f"made {data_dir} private (mode 700, was 755)" in log, log
    assert f"made {database} private (mode 600, was 644)" in log, log


def test_a_cli_command_makes_the_database_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli" / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env["ROOST_DATA_DIR"] = str(data_dir)
    result = subprocess.run(
        [sys.executable, "-m", "roost", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "roost.db") == 0o600
    for sidecar in ("roost.db-wal", "roost.db-shm"):
        if (data_dir / sidecar).exists():  # SQLite removes them when the last connection closes
            assert mode(data_dir / sidecar) == 0o600, sidecar
