"""The ``diagnostics`` command: collect the agent's logs and status, upload them for the operator.

"A device crashed, why?" — an operator sends the device the command ``diagnostics`` (params, all
optional: ``{"lines": 2000, "note": "..."}``); the agent writes a tar.gz of

=================  ===========================================================================
``agent.log``      the tail of the log file ``[diagnostics] log_file`` names, when it does
``journal.txt``    else the last lines of ``journalctl -u roost-agent`` (where systemd runs it)
``status.json``    the agent's status (link, queue) and a health snapshot
``system.json``    uname, Python, host name, boot time
``df.txt``         ``df`` of the data directory's file system
``config.json``    the agent's configuration without its secrets (token, key)
=================  ===========================================================================

and POSTs it to ``/api/v1/device/diagnostics`` with the device's token. The command's result is
``{"diagnostic_id", "size", "sha256", "members"}``; the operator downloads the archive from
``GET /api/v1/devices/{id}/diagnostics/{diagnostic_id}/content``.

Memory stays bounded: each member is capped (:data:`MAX_MEMBER_BYTES`, a log read from its end),
and the archive is spooled to a temporary file in the data directory past
:data:`SPOOL_BYTES`, then streamed to the server from there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import platform
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from roost_agent import health
from roost_agent.credentials import authorize
from roost_agent.handlers import HandlerError

if TYPE_CHECKING:
    from roost_agent.agent import Agent
    from roost_agent.config import Config

log = logging.getLogger(__name__)

COMMAND = "diagnostics"
#: Log lines collected unless the command asks for another number (at most MAX_LINES).
DEFAULT_LINES = 2000
MAX_LINES = 50_000
#: No member grows past this: a runaway log must not make the archive (or memory) huge; the
#: server takes at most 50 MiB per archive.
MAX_MEMBER_BYTES = 8 * 1024 * 1024
#: The archive stays in memory up to this size, then goes to a temporary file.
SPOOL_BYTES = 1024 * 1024
#: journalctl and df get this long; a hung tool must not hold the command past its timeout.
TOOL_TIMEOUT_S = 20.0
#: The upload's timeout (per socket operation).
HTTP_TIMEOUT_S = 60.0
#: The server keeps a note of up to 500 characters.
MAX_NOTE_CHARS = 500
#: Configuration fields never put into the archive.
SECRET_FIELDS = frozenset({"token", "key"})
#: Keys of extra sections whose values are masked (a hook's password in [diagnostics]...).
SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "hash")


def register_diagnostics(agent: Agent) -> None:
    """Register the ``diagnostics`` command handler on ``agent.handlers``."""
    collector = Diagnostics(agent)
    agent.handlers.command(COMMAND)(collector.run)


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "***" if any(w in str(k).lower() for w in SECRET_WORDS) else _masked(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def public_config(config: Config) -> dict[str, Any]:
    """The configuration as JSON-able values, without secrets."""
    out: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        if item.name in SECRET_FIELDS:
            out[item.name] = "***" if getattr(config, item.name) else None
            continue
        value = getattr(config, item.name)
        if item.name == "extra":
            value = _masked(value)
        elif isinstance(value, Path):
            value = str(value)
        out[item.name] = value
    return out


def tail_file(path: Path, lines: int, max_bytes: int = MAX_MEMBER_BYTES) -> bytes:
    """The last ``lines`` lines of a file, reading at most ``max_bytes`` from its end."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - max_bytes))
        data = handle.read(max_bytes)
    kept = data.splitlines(keepends=True)[-lines:]
    return b"".join(kept)


def _run_tool(argv: list[str]) -> bytes:
    """A tool's output (capped), or a line saying why there is none."""
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} is not installed\n".encode()
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=TOOL_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{' '.join(argv)}: {exc}\n".encode()
    out = done.stdout[-MAX_MEMBER_BYTES:]
    if done.returncode != 0:
        out += f"\n[{argv[0]} exited {done.returncode}] ".encode() + done.stderr[-2000:]
    return out


def _ssl_context(config: Config) -> ssl.SSLContext:
    """Verify the server against the bundle's CA only (the system's when there is none)."""
    if config.ca_certificate:
        context = ssl.create_default_context(cadata=config.ca_certificate)
    else:
        context = ssl.create_default_context()
    if config.client_cert is not None and config.client_key is not None:
        context.load_cert_chain(str(config.client_cert), str(config.client_key))
    return context


class Diagnostics:
    """Collects the archive and uploads it (the ``diagnostics`` command's handler)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.config: Config = agent.config

    # -- the handler --------------------------------------------------------------------------

    def run(self, params: dict[str, Any]) -> dict[str, Any]:
        """Collect, upload, answer ``{"diagnostic_id", "size", "sha256", "members"}``."""
        lines = params.get("lines", DEFAULT_LINES)
        if not isinstance(lines, int) or isinstance(lines, bool) or not 1 <= lines <= MAX_LINES:
            raise HandlerError(f"lines must be an integer from 1 to {MAX_LINES}")
        note = params.get("note")
        if note is not None and not isinstance(note, str):
            raise HandlerError("note must be a string")
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.SpooledTemporaryFile(
            max_size=SPOOL_BYTES, dir=str(self.config.data_dir)
        ) as spool:
            members = self.collect(spool, lines)
            size = spool.tell()
            spool.seek(0)
            digest = hashlib.sha256()
            for block in iter(lambda: spool.read(1024 * 1024), b""):
                digest.update(block)
            spool.seek(0)
            answer = self.upload(spool, size, note[:MAX_NOTE_CHARS] if note else None)
        log.info("diagnostics %s uploaded: %d bytes", answer.get("id"), size)
        return {
            "diagnostic_id": answer["id"],
            "size": size,
            "sha256": digest.hexdigest(),
            "members": members,
        }

    # -- collecting ---------------------------------------------------------------------------

    def collect(self, out: IO[bytes], lines: int) -> list[str]:
        """Write the tar.gz to ``out``; answer the names of its members."""
        names: list[str] = []
        with tarfile.open(fileobj=out, mode="w:gz") as tar:

            def add(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = int(time.time())
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
                names.append(name)

            log_name, log_bytes = self._log(lines)
            add(log_name, log_bytes)
            add("status.json", self._json(self._status()))
            add("system.json", self._json(self._system()))
            add("df.txt", _run_tool(["df", "-P", "-k", str(self.config.data_dir)]))
            add("config.json", self._json(public_config(self.config)))
        return names

    @staticmethod
    def _json(value: Any) -> bytes:
        return json.dumps(value, indent=2, sort_keys=True, default=str).encode()[:MAX_MEMBER_BYTES]

    def _log_file(self) -> Path | None:
        named = getattr(self.config, "log_file", None)
        section = self.config.extra.get("diagnostics")
        if named is None and isinstance(section, dict):
            named = section.get("log_file")
        return Path(named) if named else None

    def _log(self, lines: int) -> tuple[str, bytes]:
        """(member name, bytes): the log file's tail, else the journal's, else why neither."""
        path = self._log_file()
        if path is not None:
            try:
                return "agent.log", tail_file(path, lines)
            except OSError as exc:
                return "agent.log", f"cannot read the log file {path}: {exc}\n".encode()
        if shutil.which("journalctl"):
            argv = ["journalctl", "-u", "roost-agent", "-n", str(lines), "--no-pager", "-q"]
            return "journal.txt", _run_tool(argv)
        return "agent.log", (
            b"no log file is configured ([diagnostics] log_file) and journalctl is not "
            b"installed: the agent logs to stderr only\n"
        )

    def _status(self) -> dict[str, Any]:
        status: dict[str, Any] = {}
        try:
            status["agent"] = self.agent.status()
        except Exception as exc:  # the archive is wanted most when something is broken
            status["agent_error"] = repr(exc)
        status["health"] = health.snapshot(self.config.data_dir)
        return status

    def _system(self) -> dict[str, Any]:
        uname = platform.uname()
        return {
            "uname": {
                "system": uname.system,
                "node": uname.node,
                "release": uname.release,
                "version": uname.version,
                "machine": uname.machine,
            },
            "hostname": socket.gethostname(),
            "python": sys.version,
            "pid": os.getpid(),
            "time": time.time(),
            "uptime_s": health.uptime(),
        }

    # -- uploading ----------------------------------------------------------------------------

    def upload(self, body: IO[bytes], size: int, note: str | None) -> dict[str, Any]:
        """POST the archive; the server's answer (``id``, ``size``, ``sha256`` …)."""
        query = urllib.parse.urlencode({"note": note} if note else {})
        url = self.config.api_url.rstrip("/") + "/api/v1/device/diagnostics"
        if query:
            url += "?" + query
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("Content-Type", "application/gzip")
        request.add_header("Content-Length", str(size))
        request.add_header("Accept", "application/json")
        authorize(request, self.config)  # the current credential (rotation switches it)
        context = _ssl_context(self.config) if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S, context=context) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:2000].decode(errors="replace")
            try:
                detail = json.loads(detail).get("detail", detail)
            except (ValueError, AttributeError):
                pass
            raise HandlerError(f"the server refused the upload ({exc.code}): {detail}") from exc
        except (OSError, ValueError) as exc:
            raise HandlerError(f"the upload failed: {exc}") from exc
        if not isinstance(answer, dict) or "id" not in answer:
            raise HandlerError(f"the server's answer has no id: {answer!r:.200}")
        return answer
