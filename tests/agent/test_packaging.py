"""roost-agent is its own distribution for devices: it imports nothing of the server, needs only
the standard library, paho-mqtt, cryptography, cronsim (and tomli before 3.11), and installs and
runs on Python 3.9 (Raspberry Pi OS 11's Python), checked with a real 3.9 interpreter and pip."""

from __future__ import annotations

import ast
import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import skip_or_fail

AGENT = Path(__file__).resolve().parents[2] / "agent"
PACKAGE = AGENT / "src" / "roost_agent"
ALLOWED = {"paho", "cryptography", "tomli", "cronsim", "roost_agent"}


def _top_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_agent_imports_only_the_standard_library_and_its_dependencies() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) >= 3
    for path in modules:
        foreign = {
            name
            for name in _top_imports(path)
            if name not in sys.stdlib_module_names and name not in ALLOWED and name != "__future__"
        }
        assert not foreign, f"{path.name} imports {sorted(foreign)}"
        assert "roost" not in _top_imports(path), f"{path.name} imports the server"


def _python39() -> str | None:
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9.*/bin/python3.9")))
    candidates += [p for p in ("/usr/bin/python3.9",) if os.path.exists(p)]
    return candidates[-1] if candidates else None


@pytest.fixture(scope="module")
def venv39(tmp_path_factory: pytest.TempPathFactory) -> Path:
    python = _python39()
    if python is None:
        skip_or_fail("no Python 3.9 interpreter here (pyenv 3.9.x)")
        raise AssertionError("unreachable")
    venv = tmp_path_factory.mktemp("py39") / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(AGENT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr
    return venv


def test_installs_and_runs_on_python_3_9(venv39: Path, tmp_path: Path) -> None:
    agent = venv39 / "bin" / "roost-agent"
    helped = subprocess.run([str(agent), "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout
    # Every module imports under 3.9 (syntax and what runs at import time).
    names = sorted(
        "roost_agent." + p.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
        for p in PACKAGE.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    )
    imported = subprocess.run(
        [
            str(venv39 / "bin" / "python"),
            "-c",
            f"import importlib; [importlib.import_module(n) for n in {names!r}]",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    config = tmp_path / "agent.toml"
    config.write_text(
        '[device]\nid = "pi-1"\ntoken = "t"\napi_url = "http://127.0.0.1:9"\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = 9\n'
        f'[agent]\ndata_dir = "{tmp_path / "data"}"\n'
    )
    checked = subprocess.run(
        [str(agent), "check", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr
    assert "pi-1" in checked.stdout
