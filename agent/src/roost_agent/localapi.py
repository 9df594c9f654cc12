"""The local API: apps and containers on the device send data and read the metadata service.

An HTTP server of the standard library (one thread per connection), bound to
``config.local_host`` (127.0.0.1 unless configured otherwise):

================================  ==============================================================
``POST /v1/telemetry``            the server's payload forms: one JSON object, or an array of
``POST /v1/events``               them; answers ``{"queued": n}`` once they are on disk
``GET /v1/metadata/identity``     id, tenant, name, site, model, groups, tags (cached)
``GET /v1/metadata/config``       the desired state (cached)
``GET /v1/metadata/token``        a short-lived SAS token for the server's device doors
``GET /v1/status``                connected, queue statistics, …
``GET /healthz``                  ``{"status": "ok"}`` while the agent runs
================================  ==============================================================

Errors are ``application/problem+json`` (``{type, title, status, detail}``): malformed JSON,
a value that is not an object or an array, or an empty one → 400 and nothing is queued; a body
above :data:`MAX_BODY_BYTES` → 413; the queue full under the ``refuse`` policy → 507; metadata
never fetched while the server is unreachable, or no device key for tokens → 503.

The metadata routes need the header ``Metadata: true`` (as Azure's instance metadata service
does) and a ``Host`` that is an address or ``localhost``: a web page in a browser on the device
cannot send the first, and one reached through DNS rebinding cannot hide its host name.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

from roost_agent.config import Config
from roost_agent.metadata import Metadata, MetadataUnavailable
from roost_agent.store import QueueFull

logger = logging.getLogger(__name__)

# The largest body a local app may post (the server's own HTTP limit is of this order; a
# larger batch should be split by the app).
MAX_BODY_BYTES = 1024 * 1024
# A client silent this long between two reads is cut off (a stuck or hostile local process
# must not hold a thread forever).
SOCKET_TIMEOUT_S = 10.0
# The whole body must arrive within this time, however it trickles in.
BODY_DEADLINE_S = 30.0
READ_CHUNK = 64 * 1024
# An oversized body up to this size is read and dropped before the 413 (see read_body).
DRAIN_BYTES = 16 * MAX_BODY_BYTES
PORT_FILE = "local-api.port"
# Host names a local client may use besides IP addresses (containers reach the host by these).
LOCAL_HOST_NAMES = frozenset({"localhost", "host.docker.internal", "host.containers.internal"})


class AgentLike(Protocol):
    """What the local API uses of the agent."""

    config: Config
    metadata: Metadata

    def enqueue(self, kind: str, items: list[dict[str, Any]]) -> int: ...

    def status(self) -> dict[str, Any]: ...


class Problem(Exception):
    """An answer of the local API other than success (RFC 9457 problem details)."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def parse_items(body: bytes) -> list[dict[str, Any]]:
    """The items of a telemetry or events body: one object or a non-empty array of objects."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        value = json.loads(body, parse_constant=refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise Problem(400, f"malformed JSON: {exc}") from None
    if isinstance(value, dict):
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        raise Problem(
            400, f"the body must be a JSON object or an array, not {type(value).__name__}"
        )
    if not items or items == [{}]:
        raise Problem(400, "the body is empty: send an object, or an array of them")
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not item:
            raise Problem(400, f"item {index} must be a non-empty JSON object")
    return items


def _host_is_local(host_header: str | None) -> bool:
    if not host_header:
        return True  # HTTP/1.0 clients (curl --http1.0, busybox wget) may send none
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.lower() in LOCAL_HOST_NAMES:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: LocalApi


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY each answer waits ~40 ms for
    # the client's delayed ACK (2,200 points/s accepted instead of ~38,000 in bench/agent.py).
    disable_nagle_algorithm = True
    server_version = "roost-agent"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.api.socket_timeout_s)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("local api %s: " + format, self.address_string(), *args)

    # -- answers ---------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: Any,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body, separators=(",", ":"), default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _problem(self, problem: Problem) -> None:
        try:
            title = HTTPStatus(problem.status).phrase
        except ValueError:
            title = "Error"
        body = {"type": "about:blank", "title": title, "status": problem.status}
        body["detail"] = problem.detail
        self._send(problem.status, body, "application/problem+json", problem.headers)

    def _dispatch(self, method: str) -> None:
        path = self.path.partition("?")[0]
        try:
            route = ROUTES.get(path)
            if route is None:
                raise Problem(404, f"no route {path}: see GET /v1/status, /v1/metadata/…")
            handler = route.get(method)
            if handler is None:
                allow = ", ".join(sorted(route))
                raise Problem(405, f"{path} takes {allow}", {"Allow": allow})
            status, body = handler(self)
            self._send(status, body)
        except Problem as problem:
            self._problem(problem)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            logger.exception("local api: %s %s failed", method, path)
            self.close_connection = True
            self._problem(Problem(500, "the agent failed on this request (see its log)"))

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")  # no CORS: browsers' preflights are refused

    # -- requests ----------------------------------------------------------------------------

    def read_body(self) -> bytes:
        """The request body, at most MAX_BODY_BYTES, within BODY_DEADLINE_S."""
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise Problem(411, "send the body with a Content-Length (no chunked encoding)")
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            raise Problem(411, "send the body with a Content-Length")
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise Problem(400, f"Content-Length {raw!r} is not a whole number")
        if length > MAX_BODY_BYTES:
            # A body up to DRAIN_BYTES is read and dropped, so the client reads the answer
            # instead of a reset connection; a larger one is not worth the wait.
            if length <= DRAIN_BYTES:
                self._read(length, keep=False)
            else:
                self.close_connection = True
            raise Problem(
                413, f"the body is {length} bytes; at most {MAX_BODY_BYTES} (split the batch)"
            )
        return self._read(length, keep=True)

    def _read(self, length: int, keep: bool) -> bytes:
        deadline = time.monotonic() + self.server.api.body_deadline_s
        chunks: list[bytes] = []
        left = length
        try:
            while left:
                if time.monotonic() > deadline:
                    raise socket.timeout("the body took too long")
                chunk = self.rfile.read1(min(left, READ_CHUNK))
                if not chunk:
                    raise Problem(400, f"the body ended after {length - left} of {length} bytes")
                if keep:
                    chunks.append(chunk)
                left -= len(chunk)
        except socket.timeout:
            self.close_connection = True
            raise Problem(408, "the body did not arrive in time") from None
        except Problem:
            self.close_connection = True
            raise
        return b"".join(chunks)

    def require_metadata_header(self) -> None:
        if self.headers.get("Metadata", "").lower() != "true":
            raise Problem(400, "send the header 'Metadata: true' to read the metadata service")
        if not _host_is_local(self.headers.get("Host")):
            raise Problem(403, "the metadata service answers only requests to a local address")

    @property
    def agent(self) -> AgentLike:
        return self.server.api.agent


# -- routes ------------------------------------------------------------------------------------

Answer = tuple[int, Any]


def _ingest(handler: _Handler, kind: str) -> Answer:
    items = parse_items(handler.read_body())
    try:
        queued = handler.agent.enqueue(kind, items)
    except QueueFull as exc:
        raise Problem(507, f"the local queue is full ({exc}); nothing was queued") from exc
    return 200, {"queued": queued}


def _telemetry(handler: _Handler) -> Answer:
    return _ingest(handler, "telemetry")


def _events(handler: _Handler) -> Answer:
    return _ingest(handler, "events")


def _metadata(handler: _Handler, what: str) -> Answer:
    handler.require_metadata_header()
    metadata = handler.agent.metadata
    try:
        if what == "identity":
            return 200, metadata.identity()
        if what == "config":
            return 200, metadata.desired()
        return 200, metadata.local_token()
    except MetadataUnavailable as exc:
        raise Problem(503, str(exc), {"Retry-After": "10"}) from exc


def _identity(handler: _Handler) -> Answer:
    return _metadata(handler, "identity")


def _config(handler: _Handler) -> Answer:
    return _metadata(handler, "config")


def _token(handler: _Handler) -> Answer:
    return _metadata(handler, "token")


def _status(handler: _Handler) -> Answer:
    return 200, handler.agent.status()


def _healthz(handler: _Handler) -> Answer:
    return 200, {"status": "ok"}


ROUTES: dict[str, dict[str, Any]] = {
    "/v1/telemetry": {"POST": _telemetry},
    "/v1/events": {"POST": _events},
    "/v1/metadata/identity": {"GET": _identity},
    "/v1/metadata/config": {"GET": _config},
    "/v1/metadata/token": {"GET": _token},
    "/v1/status": {"GET": _status},
    "/healthz": {"GET": _healthz},
}


class LocalApi:
    """The local HTTP API of the agent (start, stop; :attr:`port` once started)."""

    def __init__(
        self,
        agent: AgentLike,
        *,
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
        body_deadline_s: float = BODY_DEADLINE_S,
    ) -> None:
        self.agent = agent
        self.socket_timeout_s = socket_timeout_s
        self.body_deadline_s = body_deadline_s
        self.port = agent.config.local_port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port_file(self) -> Path:
        return self.agent.config.data_dir / PORT_FILE

    def start(self) -> None:
        """Bind (raises OSError naming the address when taken) and serve on a thread."""
        config = self.agent.config
        server_class = _Server
        if ":" in config.local_host:

            class _Server6(_Server):
                address_family = socket.AF_INET6

            server_class = _Server6
        try:
            server = server_class((config.local_host, config.local_port), _Handler)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"the local API cannot listen on {config.local_host}:{config.local_port} "
                f"({exc.strerror or exc}); set [local_api] port (0: any free port)",
            ) from exc
        server.api = self
        self._server = server
        self.port = int(server.server_address[1])
        self._write_port_file()
        self._thread = threading.Thread(
            target=server.serve_forever, name="roost-local-api", daemon=True
        )
        self._thread.start()
        logger.info("local API on http://%s:%d", config.local_host, self.port)
        if not _is_loopback(config.local_host):
            logger.warning(
                "the local API listens on %s, not loopback only: whoever reaches this address "
                "can queue data and read device tokens ([local_api] host)",
                config.local_host,
            )

    def _write_port_file(self) -> None:
        path = self.port_file
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(f"{self.port}\n")
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("cannot write %s: %s", path, exc)

    def stop(self) -> None:
        """Stop serving and close the socket (requests in flight finish on their threads)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self.port_file.read_text().strip() == str(self.port):
                self.port_file.unlink()
        except OSError:
            pass
