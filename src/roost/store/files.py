"""Private files: the data directory and the database files are readable by their owner only.

The data directory holds the SQLite database (every device's telemetry and credential hashes),
the token signing key and the TLS keys. It is made mode 0700 and its files 0600; one made by an
older Roost, or by hand, is tightened when the server starts, with a log line saying so.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

PRIVATE_DIR: Final = 0o700
PRIVATE_FILE: Final = 0o600
#: Permission bits that let anyone but the owner in.
_OTHERS: Final = stat.S_IRWXG | stat.S_IRWXO


def private_directory(path: Path) -> None:
    """Make ``path`` (and missing parents) if needed; the directory itself ends up mode 0700."""
    if not path.exists():
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR)


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing, else take group and others' access."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        _tighten(path, PRIVATE_FILE)


def private_database(path: Path) -> None:
    """A SQLite database file 0600 before SQLite opens it: SQLite then makes its ``-wal`` and
    ``-shm`` files with the database file's mode; existing ones are tightened too."""
    folder = path.parent
    if not folder.exists():
        private_directory(folder)  # a folder Roost makes is private; an existing one is the user's
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        _tighten(path.with_name(path.name + suffix), PRIVATE_FILE)


def tighten_data_dir(root: Path, entries: tuple[str, ...]) -> None:
    """Take group and others' access from ``root`` and Roost's own ``entries`` in it (files, or
    folders taken whole); anything else an operator keeps there is left alone."""
    if not root.is_dir():
        return
    _tighten(root, PRIVATE_DIR)
    for name in entries:
        entry = root / name
        if entry.is_dir() and not entry.is_symlink():
            _tighten(entry, PRIVATE_DIR)
            for folder, dirs, files in os.walk(entry):
                for child in dirs:
                    _tighten(Path(folder, child), PRIVATE_DIR)
                for child in files:
                    _tighten(Path(folder, child), PRIVATE_FILE)
        else:
            _tighten(entry, PRIVATE_FILE)


def _tighten(path: Path, mode: int) -> None:
    """``chmod`` to ``mode`` when group or others have any access (logged), else leave it."""
    try:
        current = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(current) or not current & _OTHERS:
        return
    path.chmod(mode)
    log.warning("made %s private (mode %03o, was %03o)", path, mode, stat.S_IMODE(current))
