"""The command line documents itself: every command and option has help, and the README names
every command (the way sqlite-utils' test_docs.py keeps its docs honest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from roost.cli.main import app

README = Path(__file__).resolve().parents[1] / "README.md"
ROOT = get_command(app)


def _is_group(command: Any) -> bool:
    # typer vendors click: its groups are not click.Group instances, so look at the shape.
    return isinstance(getattr(command, "commands", None), dict)


def _walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    yield " ".join(path), command
    if _is_group(command):
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, (*path, name))


COMMANDS = dict(_walk(ROOT, ("roost",)))
LEAVES = sorted(path for path, cmd in COMMANDS.items() if not _is_group(cmd))


def test_the_command_tree_is_complete() -> None:
    assert set(LEAVES) >= {
        "roost serve", "roost db upgrade", "roost db current", "roost tenant create",
        "roost tenant list", "roost user create", "roost user list", "roost user set-password",
        "roost device create", "roost device list", "roost device show", "roost device import",
        "roost device export",
    }  # fmt: skip


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_every_command_and_option_has_help(path: str) -> None:
    command = COMMANDS[path]
    summary = (command.help or "").strip()
    assert len(summary) >= 15, f"{path} needs a docstring or help text"
    for param in command.params:
        if param.name == "help":
            continue
        text = (getattr(param, "help", None) or "").strip()
        assert len(text) >= 10, f"{path}: {param.opts} needs help text"
    result = CliRunner().invoke(app, [*path.split()[1:], "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert summary.splitlines()[0].split(":")[0] in result.output


@pytest.mark.parametrize("path", LEAVES)
def test_readme_mentions_every_command(path: str) -> None:
    assert f"`{path}" in README.read_text() or f"{path} " in README.read_text(), (
        f"README.md does not mention {path}"
    )
