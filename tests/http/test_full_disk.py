"""A full data disk, for real: a small tmpfs holds the database and is filled to the last byte.

Readiness must say the store cannot write, ingest must refuse (503) without losing anything it
acknowledged, and an operator must still be able to log in and read; once space is freed,
readiness and ingest come back by themselves.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support import (
    ADMIN_PASSWORD,
    Api,
    RoostServer,
    admin_client,
    assert_problem,
    eventually,
    make_device,
    skip_or_fail,
)

V1 = "/api/v1"
SEED = 1526717967  # 2018-05-19T08:19:27Z
# Room for the migrated database and some telemetry, and well above the free space below which
# the store reports that it cannot write (store/sqlite.py MIN_FREE_BYTES, 16 MiB).
DISK_SIZE = "48m"
# Points per ingest request: big enough that a few requests use up the space SQLite already
# holds in its WAL file (small writes keep fitting there after the disk is full).
POINTS = 2000
# Requests sent into the full disk before giving up on seeing a refusal.
MAX_SENDS = 200


@contextmanager
def small_disk(where: Path) -> Iterator[Path]:
    """A tmpfs of DISK_SIZE mounted at ``where`` (root on Linux only), unmounted afterwards."""
    if sys.platform != "linux" or os.geteuid() != 0:
        skip_or_fail("a full disk is simulated with a tmpfs mount, which needs root on Linux")
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def fill(disk: Path) -> Path:
    """Write zeros on ``disk`` until no byte is left; answers the file to delete to free it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 4096):
            block = bytes(size)
            try:
                while out.write(block) == size:
                    pass
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    assert os.statvfs(disk).f_bavail == 0
    return filler


class Sender:
    """A device sending batches of distinct points; counts the points acknowledged (200)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.next_ts = SEED
        self.acknowledged = 0

    def send(self) -> httpx.Response:
        points: list[dict[str, Any]] = [
            {"sensor_id": "t", "timestamp": self.next_ts + i, "value": float(i)}
            for i in range(POINTS)
        ]
        self.next_ts += POINTS
        resp = self.api.post(
            f"{V1}/telemetry",
            content=orjson.dumps(points),
            headers={"Content-Type": "application/json"},
        )
        if resp.status_code == 200:
            self.acknowledged += POINTS
        return resp


def stored_points(api: Api, device_id: str, until: int) -> int:
    """Points of sensor ``t`` the query API finds, counted in day buckets."""
    resp = api.get(
        f"{V1}/devices/{device_id}/telemetry",
        params={"sensor": "t", "from": SEED - 1, "to": until, "agg": "count", "interval": "1d"},
    )
    assert resp.status_code == 200, resp.text
    return sum(int(bucket["count"] or 0) for bucket in resp.json()["items"])


def test_a_full_disk_is_not_ready_refuses_ingest_and_still_lets_operators_in(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        server = RoostServer(tmp_path / "server", database_url=f"sqlite:///{disk / 'roost.db'}")
        server.start()
        try:
            with admin_client(server) as admin, Api(server.url) as anonymous:
                device = make_device(admin)
                with Api(server.url, device.token) as device_api:
                    sender = Sender(device_api)
                    assert anonymous.get("/readyz").status_code == 200
                    assert sender.send().status_code == 200

                    filler = fill(disk)
                    eventually(lambda: anonymous.get("/readyz").status_code == 503, timeout=5)
                    assert_problem(anonymous.get("/readyz"), 503, "full")
                    # Small writes may still fit in the WAL file's space; a few batches do not.
                    for _ in range(MAX_SENDS):
                        resp = sender.send()
                        if resp.status_code != 200:
                            break
                    assert_problem(resp, 503)
                    assert_problem(sender.send(), 503)

                    # The operator gets in (the login time is not saved) and reads.
                    with anonymous.as_token(anonymous.login("admin", ADMIN_PASSWORD)) as operator:
                        assert operator.get(f"{V1}/me").status_code == 200
                        listing = operator.get(f"{V1}/devices", params={"limit": 500})
                        assert listing.status_code == 200, listing.text
                        assert device.id in {item["id"] for item in listing.json()["items"]}
                        assert operator.get(f"{V1}/devices/{device.id}").status_code == 200
                        stored = stored_points(operator, device.id, sender.next_ts)
                        assert stored == sender.acknowledged
                    assert_problem(anonymous.get("/readyz"), 503, "full")

                    filler.unlink()
                    eventually(lambda: anonymous.get("/readyz").status_code == 200, timeout=5)
                    assert sender.send().status_code == 200
                    assert stored_points(admin, device.id, sender.next_ts) == sender.acknowledged
        finally:
            server.stop()
    assert not server.unhandled_errors(), server.unhandled_errors()
