"""Request-head limits of the HTTP and HTTPS listeners (src/roost/http/server.py), through raw
sockets against a real ``roost serve``: silent, slow (slowloris) and partial heads are closed at
the head deadline (a TLS handshake too), oversized heads and too many header fields get 431 and a
close (after any response to a request pipelined before them), heads within the limits and large
bodies are served, keep-alive and pipelining work, an idle keep-alive connection is closed after
its timeout, and a WebSocket upgrade leaves the head deadline behind.

The server runs with short limits (a one-second head deadline) so that the suite stays quick; the
only timing assertions are "closed within the limit plus a margin".
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import RoostServer, free_port

HEAD_TIMEOUT_S = 1.0
KEEPALIVE_TIMEOUT_S = 1
MAX_HEAD_BYTES = 65536
MAX_HEADERS = 100
# What a loaded two-core test machine may add to a deadline before the close is seen.
MARGIN_S = 2.5
# How long the server drains a refused connection before it closes (server.REFUSAL_LINGER_S).
LINGER_S = 2.0
MIB = 1024 * 1024
DOORS = ["http", "https"]


class Door:
    """Raw connections to one listener of the server (plain TCP, or TLS trusting the CA)."""

    def __init__(self, port: int, context: ssl.SSLContext | None) -> None:
        self.port = port
        self.context = context

    def tcp(self) -> socket.socket:
        """A plain TCP connection (on the HTTPS port: no TLS handshake started)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def connect(self) -> socket.socket:
        """A connection ready for HTTP (TLS done on the HTTPS door)."""
        sock = self.tcp()
        if self.context is None:
            return sock
        return self.context.wrap_socket(sock, server_hostname="127.0.0.1")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost with short head and keep-alive limits, listening for HTTP and HTTPS."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-limits"),
        env_overrides={
            "ROOST_HTTP_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
            "ROOST_HTTP_KEEPALIVE_TIMEOUT_S": str(KEEPALIVE_TIMEOUT_S),
            "ROOST_HTTPS_PORT": str(free_port()),
        },
    ).running() as running:
        yield running


@pytest.fixture(scope="module")
def https_context(server: RoostServer, tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A TLS client context that trusts the platform CA."""
    ca_file = Path(tmp_path_factory.mktemp("ca")) / "ca.pem"
    ca_file.write_text(httpx.get(f"{server.url}/api/v1/ca").json()["certificate"])
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture(params=DOORS)
def door(request: pytest.FixtureRequest, server: RoostServer) -> Door:
    """Each listener in turn."""
    if request.param == "http":
        return Door(server.port, None)
    context: ssl.SSLContext = request.getfixturevalue("https_context")
    return Door(int(server.env()["ROOST_HTTPS_PORT"]), context)


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open
    ``within`` seconds from now."""
    deadline = time.monotonic() + within
    received = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the connection is still open after {within:.1f} s: {received!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, ssl.SSLError):
            return bytes(received)
        if not chunk:
            return bytes(received)
        received += chunk


Response = tuple[int, dict[str, str], bytes]


def parse_response(buffer: bytearray) -> Response | None:
    """Take one whole response with a Content-Length off the front of ``buffer`` (None while it
    is incomplete)."""
    head, found, rest = bytes(buffer).partition(b"\r\n\r\n")
    if not found:
        return None
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers["content-length"])
    if len(rest) < length:
        return None
    buffer[:] = rest[length:]
    return int(status_line.split()[1]), headers, rest[:length]


def read_response(sock: socket.socket, buffer: bytearray) -> Response:
    """One response from a kept-alive connection (``buffer`` keeps what was read past it)."""
    sock.settimeout(10)
    while (response := parse_response(buffer)) is None:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response: {bytes(buffer)[:300]!r}"
        buffer += chunk
    return response


def refusal(data: bytes, status: int) -> dict[str, object]:
    """The problem+json the server answered before closing (and nothing after it)."""
    buffer = bytearray(data)
    response = parse_response(buffer)
    assert response is not None, f"no whole response before the close: {data[:300]!r}"
    code, headers, body = response
    assert code == status, data[:300]
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert not buffer, "more was sent after the refusal"
    problem: dict[str, object] = orjson.loads(body)
    assert problem["status"] == status and problem["detail"], problem
    return problem


def poll(sock: socket.socket, wait: float = 0.0) -> bytes | None:
    """What the server sent within ``wait`` seconds (b"" when it closed), or None if nothing came.
    (Socket readiness alone does not tell: TLS 1.3 session tickets arrive after the handshake.)"""
    sock.settimeout(wait)
    try:
        return sock.recv(65536)
    except (BlockingIOError, ssl.SSLWantReadError, TimeoutError):
        return None
    except ConnectionResetError:
        return b""
    finally:
        sock.settimeout(10)


def answer_then_close(sock: socket.socket, first: bytes) -> bytes:
    """``first`` and all the server sends after it, until it closes (a refused connection
    lingers a moment before closing)."""
    return first + read_until_closed(sock, LINGER_S + MARGIN_S) if first else b""


def send_head_piecewise(sock: socket.socket, head: bytes, piece: int = 65536) -> bytes:
    """Send ``head`` in pieces, stopping as soon as the server answers; answers what the server
    sent until it closed."""
    for start in range(0, len(head), piece):
        if (first := poll(sock)) is not None:
            return answer_then_close(sock, first)
        try:
            sock.sendall(head[start : start + piece])
        except (BrokenPipeError, ConnectionResetError):
            break
    return read_until_closed(sock, LINGER_S + MARGIN_S)


GET = b"GET /healthz HTTP/1.1\r\nHost: roost\r\n"


# -- the head deadline ----------------------------------------------------------------------------


def test_silent_connections_are_closed_at_the_head_deadline(door: Door) -> None:
    connections = [door.connect() for _ in range(20)]
    try:
        for sock in connections:
            assert read_until_closed(sock, HEAD_TIMEOUT_S + MARGIN_S) == b""
    finally:
        for sock in connections:
            sock.close()


def test_a_tls_handshake_that_never_starts_is_closed_at_the_head_deadline(
    server: RoostServer,
) -> None:
    door = Door(int(server.env()["ROOST_HTTPS_PORT"]), None)
    with door.tcp() as sock:
        assert read_until_closed(sock, HEAD_TIMEOUT_S + MARGIN_S) == b""


def test_a_slowloris_is_closed_at_the_head_deadline_not_at_each_line(door: Door) -> None:
    with door.connect() as sock:
        started = time.monotonic()
        sock.sendall(GET)
        # A header line every 0.2 s, for much longer than the deadline: were the deadline pushed
        # back by each line, the connection would stay open.
        for line in range(int(10 / 0.2)):
            if (first := poll(sock, 0.2)) is not None:
                break
            sock.sendall(b"X-Line-%d: slow\r\n" % line)
        else:
            raise AssertionError("the connection is still open after 10 s")
        assert time.monotonic() - started < HEAD_TIMEOUT_S + MARGIN_S
        answer = answer_then_close(sock, first)
    assert "did not arrive within" in str(refusal(answer, 408)["detail"])


def test_a_partial_head_is_closed_at_the_head_deadline(door: Door) -> None:
    with door.connect() as sock:
        sock.sendall(GET + b"X-Partial: a half-sent hea")
        answer = read_until_closed(sock, HEAD_TIMEOUT_S + LINGER_S + MARGIN_S)
    refusal(answer, 408)


# -- head size ------------------------------------------------------------------------------------


def test_an_8_mb_header_gets_431_and_a_close(door: Door) -> None:
    with door.connect() as sock:
        answer = send_head_piecewise(sock, GET + b"X-Big: " + b"a" * (8 * MIB) + b"\r\n\r\n")
    assert "larger than the 65536-byte limit" in str(refusal(answer, 431)["detail"])


def test_an_unfinished_4_mib_header_gets_431_and_a_close(door: Door) -> None:
    with door.connect() as sock:
        answer = send_head_piecewise(sock, GET + b"X-Big: " + b"a" * (4 * MIB))
    refusal(answer, 431)


def test_an_oversized_head_in_one_write_gets_431(door: Door) -> None:
    # Whole, and small enough that the server may read all of it at once.
    with door.connect() as sock:
        sock.sendall(GET + b"X-Big: " + b"a" * (MAX_HEAD_BYTES + 1000) + b"\r\n\r\n")
        answer = read_until_closed(sock, LINGER_S + MARGIN_S)
    refusal(answer, 431)


def test_5000_headers_get_431_and_a_close(door: Door) -> None:
    with door.connect() as sock:
        answer = send_head_piecewise(sock, GET + b"x: 1\r\n" * 5000 + b"\r\n")
    assert "more than 100 header fields" in str(refusal(answer, 431)["detail"])


@pytest.mark.parametrize("piece", [1024, 1 << 20], ids=["in-pieces", "at-once"])
def test_a_head_within_the_limits_is_served(door: Door, piece: int) -> None:
    headers = b"".join(b"X-Field-%d: value\r\n" % n for n in range(MAX_HEADERS - 2))
    big = b"X-Big: " + b"a" * (MAX_HEAD_BYTES - 8 * 1024) + b"\r\n"
    with door.connect() as sock:
        head = GET + headers + big + b"\r\n"
        for start in range(0, len(head), piece):
            sock.sendall(head[start : start + piece])
        status, _, body = read_response(sock, bytearray())
    assert status == 200 and orjson.loads(body)["status"] == "ok"


def test_a_large_body_is_not_counted_as_head(door: Door) -> None:
    body = b"{" + b" " * MIB + b"}"
    with door.connect() as sock:
        sock.sendall(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: roost\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        status, _, _ = read_response(sock, bytearray())
    assert status == 422


# -- keep-alive -----------------------------------------------------------------------------------


def test_keep_alive_and_pipelining_work_and_an_idle_connection_is_closed(door: Door) -> None:
    with door.connect() as sock:
        buffer = bytearray()
        for _ in range(3):
            sock.sendall(GET + b"\r\n")
            assert read_response(sock, buffer)[0] == 200
        sock.sendall((GET + b"\r\n") * 3)  # pipelined
        assert [read_response(sock, buffer)[0] for _ in range(3)] == [200, 200, 200]
        # Idle now: closed after the keep-alive timeout, without an answer.
        assert read_until_closed(sock, KEEPALIVE_TIMEOUT_S + MARGIN_S) == b""
        assert not buffer


def test_a_slow_head_after_a_kept_alive_request_is_closed_at_its_deadline(door: Door) -> None:
    with door.connect() as sock:
        buffer = bytearray()
        sock.sendall(GET + b"\r\n")
        assert read_response(sock, buffer)[0] == 200
        sock.sendall(GET)  # the next head begins, and never ends
        answer = bytes(buffer) + read_until_closed(sock, HEAD_TIMEOUT_S + LINGER_S + MARGIN_S)
    refusal(answer, 408)


def test_a_refused_head_pipelined_behind_a_request_is_answered_after_its_response(
    door: Door,
) -> None:
    with door.connect() as sock:
        sock.sendall(GET + b"\r\n" + GET + b"x: 1\r\n" * 5000 + b"\r\n")
        answer = bytearray(read_until_closed(sock, LINGER_S + MARGIN_S))
    first = parse_response(answer)
    assert first is not None and first[0] == 200, bytes(answer[:300])
    refusal(bytes(answer), 431)


def test_a_websocket_upgrade_is_not_held_to_the_head_deadline(door: Door) -> None:
    with door.connect() as sock:
        sock.sendall(
            b"GET /mqtt HTTP/1.1\r\nHost: roost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        )
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 101 "), "no upgrade"
        # MQTT's own wait for CONNECT (ten seconds) applies now, not the head deadline.
        assert poll(sock, HEAD_TIMEOUT_S + MARGIN_S) is None


def test_a_body_still_arriving_after_an_early_answer_is_not_counted_as_head(door: Door) -> None:
    body = b" " * (5 * MIB)
    with door.connect() as sock:
        sock.sendall(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: roost\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        buffer = bytearray()
        assert read_response(sock, buffer)[0] == 413  # by Content-Length, before the body
        sock.sendall(body)
        sock.sendall(GET + b"\r\n")
        assert read_response(sock, buffer)[0] == 200
