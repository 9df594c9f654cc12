"""MQTT ingest pushes back instead of buffering (issue 11.3), against a running ``roost serve``.

While no commit can complete (the test holds SQLite's write lock), a MQTT 3.1.1 client floods
QoS 1 PUBLISHes without waiting: the server takes what its budget of unacknowledged points
allows, acknowledges nothing, and stops reading, so the flood stalls in the socket. Once commits
go through again, every message is acknowledged in order and every acknowledged point is stored.
"""

from __future__ import annotations

import bisect
import select
import socket
import sqlite3
import time
from collections.abc import Iterator

import pytest

from roost.mqtt.codec import Connect, encode
from roost.mqtt.wire import encode_varint
from tests.support import Api, Device, RoostServer, admin_client, free_port, make_device

SENSORS = [f"s{k}" for k in range(10)]
ITEMS = 50  # items of ten sensors per message: 500 points, ~6.5 KB
MESSAGES = 200  # 100,000 points: 100 times the server's budget below
BUDGET_POINTS = 1000
# A socket that takes nothing for this long is stalled (a server that reads drains it at once).
STALL_S = 2.0
TS_BASE_MS = (int(time.time()) - 86_400) * 1000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A Roost (SQLite) whose ingest takes at most BUDGET_POINTS unacknowledged points."""
    with RoostServer(
        tmp_path_factory.mktemp("roost-pushback"),
        mqtt_port=free_port(),
        env_overrides={"ROOST_INGEST_MAX_UNACKED_POINTS": str(BUDGET_POINTS)},
    ).running() as running:
        yield running


@pytest.fixture(scope="module")
def admin(server: RoostServer) -> Iterator[Api]:
    with admin_client(server) as api:
        yield api


@pytest.fixture
def device(admin: Api) -> Device:
    made = make_device(admin)
    for sensor in SENSORS:
        resp = admin.post(
            f"/api/v1/devices/{made.id}/sensors", json={"id": sensor, "type": "double"}
        )
        assert resp.status_code == 201, resp.text
    return made


def publish_frame(topic: bytes, packet_id: int, seq: int) -> bytes:
    """A QoS 1 PUBLISH of ITEMS items of every sensor; timestamps unique per message."""
    values = ",".join(f'"{s}":{seq}.5' for s in SENSORS)
    items = ",".join(
        f'{{"ts":{TS_BASE_MS + seq * ITEMS + k},"values":{{{values}}}}}' for k in range(ITEMS)
    )
    payload = f"[{items}]".encode()
    body = len(topic).to_bytes(2, "big") + topic + packet_id.to_bytes(2, "big") + payload
    return b"\x32" + encode_varint(len(body)) + body


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"connection closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def stored_points(admin: Api, device_id: str, sensor: str) -> int:
    start = (TS_BASE_MS - 1) * 1_000_000
    end = (TS_BASE_MS + (MESSAGES + 1) * ITEMS) * 1_000_000
    resp = admin.get(
        f"/api/v1/devices/{device_id}/telemetry",
        params={"sensor": sensor, "from": str(start), "to": str(end), "agg": "count",
                "interval": "1d"},
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    return sum(int(item.get("count") or 0) for item in resp.json()["items"])


def test_a_flood_stalls_until_commits_catch_up_and_every_ack_is_stored(
    server: RoostServer, admin: Api, device: Device
) -> None:
    topic = f"devices/{device.id}/telemetry".encode()
    frames = [publish_frame(topic, n + 1, n) for n in range(MESSAGES)]
    ends = []
    total = 0
    for frame in frames:
        total += len(frame)
        ends.append(total)
    data = b"".join(frames)

    sock = socket.socket()
    # A small send buffer, so that what the kernels hold is small beside the flood.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    sock.connect(("127.0.0.1", server.mqtt_port))
    sock.settimeout(30)
    connect = Connect(
        client_id=device.id, protocol_level=4, clean_start=True, keep_alive=600,
        username="JWT", password=device.token.encode(),
    )  # fmt: skip
    sock.sendall(encode(connect, 4))
    assert read_exactly(sock, 4) == b"\x20\x02\x00\x00"

    lock = sqlite3.connect(server.data_dir / "roost.db", isolation_level=None, timeout=10)
    lock.execute("BEGIN IMMEDIATE")  # no commit completes while this is held
    try:
        sock.setblocking(False)
        sent = 0
        while sent < len(data):
            try:
                sent += sock.send(data[sent : sent + 65536])
            except BlockingIOError:
                _, writable, _ = select.select([], [sock], [], STALL_S)
                if not writable:
                    break
        else:
            pytest.fail(f"the server read all {len(data):,} bytes while no commit could complete")
        # Nothing is acknowledged before it is committed.
        readable, _, _ = select.select([sock], [], [], 0)
        assert not readable, sock.recv(64)
        taken = bisect.bisect_right(ends, sent)
        assert taken < MESSAGES
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    # Commits go through again: the rest of the flood is read, everything acknowledged in order.
    sock.setblocking(True)
    sock.settimeout(30)
    sock.sendall(data[sent:])
    acks = read_exactly(sock, 4 * MESSAGES)
    expected = b"".join(b"\x40\x02" + (n + 1).to_bytes(2, "big") for n in range(MESSAGES))
    assert acks == expected
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()

    for sensor in SENSORS:
        assert stored_points(admin, device.id, sensor) == MESSAGES * ITEMS
