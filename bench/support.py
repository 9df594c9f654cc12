"""What every benchmark of ``bench/`` needs: servers started on free loopback ports, peers, results.

* :class:`RoostProcess` — ``roost serve`` as a subprocess, in a fresh data directory, on free HTTP
  and MQTT ports, on SQLite (default) or a fresh PostgreSQL database + a NATS JetStream server;
  with the admin calls a benchmark needs (import devices with their sensors, device tokens).
* Peers: :class:`NatsServer` (a ``nats-server -js`` of our own, so the benchmark never shares the
  ``ROOST_INGEST`` stream with anything else), :class:`Mosquitto`, :class:`InfluxDB` (installed
  with ``apt-get install -y influxdb`` when ``influxd`` is missing), :func:`fresh_postgres`.
* :class:`Results` — the figures of one script, printed and, with ``--json``, written for
  ``bench/run_all.py`` to put into BENCHMARKS.md.

Nothing here listens anywhere but 127.0.0.1; every server is stopped and its directory removed.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

V1 = "/api/v1"
ADMIN_PASSWORD = "bench-admin-password"
SECRET_KEY = "bench-secret-key-not-for-production"
PG_URL = os.environ.get("ROOST_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/postgres")
# Devices per import request: the import takes a few thousand records in one transaction.
IMPORT_CHUNK = 2000
# Token requests in flight while provisioning (each is a small write transaction).
TOKEN_CONCURRENCY = 16


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise RLIMIT_NOFILE of this process (and so of its children) as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of samples, nearest rank."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


def load_average() -> float:
    """The one-minute load average."""
    return os.getloadavg()[0]


# -- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a benchmark's table: Roost's figure beside the peer's."""

    case: str
    roost: str
    peer: str = ""
    peer_name: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Results:
    """The figures of one benchmark script."""

    benchmark: str
    title: str
    command: str = field(default_factory=lambda: " ".join([Path(sys.executable).name, *sys.argv]))
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def add(self, case: str, roost: str, peer: str = "", **kwargs: Any) -> Row:
        row = Row(case, roost, peer, **kwargs)
        self.rows.append(row)
        goal = f"  [goal {row.goal}: {'met' if row.met else 'NOT met'}]" if row.goal else ""
        beside = f"   | {row.peer_name}: {peer}" if peer else ""
        print(f"  {case}: Roost {roost}{beside}{goal}", flush=True)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        print(f"  CHECK FAILED: {text}", flush=True)

    def write(self, path: str | None) -> None:
        if path:
            Path(path).write_text(json.dumps(self.__dict__, default=lambda o: o.__dict__, indent=1))

    def exit_code(self) -> int:
        if self.failures:
            print(f"{len(self.failures)} correctness check(s) failed:", file=sys.stderr)
            for failure in self.failures:
                print(f"  - {failure}", file=sys.stderr)
            return 1
        return 0


def base_parser(description: str) -> Any:
    import argparse

    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke mode: small, short runs")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    parser.add_argument(
        "--pg-url", default=PG_URL, help="a PostgreSQL server to create fresh databases in"
    )
    return parser


# -- machine ----------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What the figures were taken on."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    info = {
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "cpu": cpu,
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version(PG_URL),
        "influxdb": _version(["influxd", "version"]),
        "mosquitto": _version(["/usr/sbin/mosquitto", "-h"]).split("\n")[0],
        "nats-server": _version(["nats-server", "--version"]),
    }
    return info


def _version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).strip()


def postgres_version(url: str) -> str:
    import asyncpg

    async def ask() -> str:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        return asyncio.run(ask())
    except Exception as exc:
        return f"unreachable ({exc})"


# -- PostgreSQL and NATS ------------------------------------------------------------------------


@contextmanager
def fresh_postgres(url: str = PG_URL) -> Iterator[str]:
    """An empty database on the server at ``url``, dropped afterwards."""
    import asyncpg

    name = f"roost_bench_{os.getpid()}_{secrets.token_hex(3)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{url.rpartition('/')[0]}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class NatsServer:
    """A nats-server with JetStream (file storage in a temp dir) on a free loopback port."""

    def __init__(self, max_payload: int = 0) -> None:
        self.port = free_port()
        self.max_payload = max_payload  # 0: the server's default (1 MB)
        self._dir = tempfile.TemporaryDirectory(prefix="bench-nats-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def __enter__(self) -> NatsServer:
        argv = ["nats-server", "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        argv += ["-sd", self._dir.name]
        if self.max_payload:
            conf = Path(self._dir.name) / "nats.conf"
            conf.write_text(f"max_payload: {self.max_payload}\n")
            argv += ["-c", str(conf)]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, 15, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc)
        self._dir.cleanup()


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- Roost --------------------------------------------------------------------------------------


class RoostProcess:
    """``roost serve`` in a fresh data directory on free ports (see the module docstring)."""

    def __init__(
        self,
        *,
        database_url: str = "",
        bus_url: str = "",
        mqtt: bool = False,
        env: dict[str, str] | None = None,
        keep_dir: bool = False,
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="bench-roost-")
        self.data_dir = Path(self._dir.name)
        self.database_url = database_url
        self.bus_url = bus_url
        self.http_port = free_port()
        self.mqtt_port = free_port() if mqtt else 0
        self.extra_env = env or {}
        self.keep_dir = keep_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self._admin_token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "roost.db"

    @property
    def backend(self) -> str:
        return "PostgreSQL + NATS JetStream" if self.database_url else "SQLite"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        env.update(
            ROOST_DATA_DIR=str(self.data_dir),
            ROOST_ADMIN_PASSWORD=ADMIN_PASSWORD,
            ROOST_SECRET_KEY=SECRET_KEY,
            ROOST_HTTP_PORT=str(self.http_port),
            ROOST_MQTT_PORT=str(self.mqtt_port),
            ROOST_MQTTS_PORT="0",
            ROOST_LOG_LEVEL="warning",
        )
        if self.database_url:
            env["ROOST_DATABASE_URL"] = self.database_url
        if self.bus_url:
            env["ROOST_BUS_URL"] = self.bus_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60) -> RoostProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "roost", "serve"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"roost serve exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    if self.mqtt_port:
                        wait_for_port(self.mqtt_port, 10, self.proc)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"roost serve did not come up:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        stop_process(self.proc, timeout=60)

    def __enter__(self) -> RoostProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if not self.keep_dir:
            self._dir.cleanup()

    def unhandled_errors(self) -> list[str]:
        """Log lines of errors; the first one's context is printed."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(errors="replace").splitlines()
        found = [
            i
            for i, line in enumerate(lines)
            if "unhandled error" in line or "Traceback" in line or " ERROR " in line
        ]
        if found:
            print("\n".join(lines[max(0, found[0] - 2) : found[0] + 30]), file=sys.stderr)
        return [lines[i] for i in found]

    # -- admin calls --------------------------------------------------------------------------

    def admin_token(self) -> str:
        if self._admin_token is None:
            resp = httpx.post(
                f"{self.url}{V1}/auth/login",
                json={"username": "admin", "password": ADMIN_PASSWORD},
                timeout=30,
            )
            resp.raise_for_status()
            self._admin_token = resp.json()["token"]
        return self._admin_token

    def admin(self) -> httpx.Client:
        """A client authenticated as the admin (superuser, admin of the default tenant)."""
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.admin_token()}"},
            timeout=120,
        )

    def import_devices(self, records: list[dict[str, Any]]) -> None:
        """Create devices (with ``sensors``, ``group_ids``…) through the bulk import API."""
        with self.admin() as api:
            for start in range(0, len(records), IMPORT_CHUNK):
                resp = api.post(
                    f"{V1}/devices/import",
                    content=orjson.dumps(records[start : start + IMPORT_CHUNK]),
                    headers={"Content-Type": "application/json"},
                )
                if resp.status_code != 200:
                    raise RuntimeError(f"import failed: {resp.status_code} {resp.text[:500]}")

    def device_tokens(self, device_ids: Sequence[str]) -> list[str]:
        """A fresh token for each device (POST /devices/{id}/tokens), in order."""

        async def run() -> list[str]:
            limiter = asyncio.Semaphore(TOKEN_CONCURRENCY)
            headers = {"Authorization": f"Bearer {self.admin_token()}"}
            async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=120) as api:

                async def one(device_id: str) -> str:
                    async with limiter:
                        resp = await api.post(
                            f"{V1}/devices/{device_id}/tokens", json={"name": "bench"}
                        )
                    if resp.status_code != 201:
                        raise RuntimeError(f"token for {device_id}: {resp.status_code} {resp.text}")
                    token: str = resp.json()["token"]
                    return token

                return await asyncio.gather(*(one(d) for d in device_ids))

        return asyncio.run(run())

    def count_points(
        self, pairs: Sequence[tuple[str, str]], start: int, end: int, concurrency: int = 8
    ) -> dict[tuple[str, str], int]:
        """Points stored per (device, sensor) in [start, end) ns, through the query API.

        One ``agg=count`` bucket per sensor: what a user would ask, and what counts the points
        that are really stored (the answer does not trust any acknowledgement).
        """
        interval = max(1, (end - start) // 1_000_000_000 + 1)

        async def run() -> dict[tuple[str, str], int]:
            limiter = asyncio.Semaphore(concurrency)
            headers = {"Authorization": f"Bearer {self.admin_token()}"}
            async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=120) as api:

                async def one(device_id: str, sensor: str) -> int:
                    async with limiter:
                        resp = await api.get(
                            f"{V1}/devices/{device_id}/telemetry",
                            params={
                                "sensor": sensor,
                                "from": str(start),
                                "to": str(end),
                                "agg": "count",
                                "interval": f"{interval}s",
                            },
                        )
                    if resp.status_code != 200:
                        raise RuntimeError(f"count {device_id}/{sensor}: {resp.text[:300]}")
                    return sum(int(item.get("count") or 0) for item in resp.json()["items"])

                counts = await asyncio.gather(*(one(d, s) for d, s in pairs))
                return dict(zip(pairs, counts, strict=True))

        return asyncio.run(run())

    def log_next_offset(self) -> int:
        """The ingest log's next offset: items committed to the store so far (fresh database)."""
        with self.admin() as api:
            resp = api.get(f"{V1}/streams/bench-probe")
            if resp.status_code == 404:
                api.post(f"{V1}/streams", json={"id": "bench-probe", "start": "earliest"})
                resp = api.get(f"{V1}/streams/bench-probe")
            resp.raise_for_status()
            offset: int = resp.json()["log_next_offset"]
            return offset

    def wait_for_store(self, expected_items: int, timeout: float) -> float:
        """Wait until the store has ``expected_items`` items (scale mode commits after the ack).

        Answers the time.monotonic() at which they were all there.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_next_offset() >= expected_items:
                return time.monotonic()
            time.sleep(0.02)
        return float("nan")


# -- Mosquitto ------------------------------------------------------------------------------------


class Mosquitto:
    """A Mosquitto broker of our own (temp config, free port); the system one is left alone."""

    def __init__(self, extra_config: str = "") -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="bench-mosquitto-")
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Mosquitto:
        conf = Path(self._dir.name) / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"log_dest none\nmax_connections -1\n{self.extra_config}"
        )
        self.proc = subprocess.Popen(
            ["/usr/sbin/mosquitto", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, 10, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc)
        self._dir.cleanup()


# -- InfluxDB -------------------------------------------------------------------------------------


def ensure_influxd() -> str:
    """The influxd binary, installed from Debian's ``influxdb`` package when missing."""
    found = shutil.which("influxd")
    if found:
        return found
    print("influxd not found: apt-get install -y influxdb", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "influxdb"], env=env, capture_output=True)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "influxdb"], env=env, check=True)
    found = shutil.which("influxd")
    if not found:
        raise RuntimeError("influxd is still missing after apt-get install influxdb")
    return found


class InfluxDB:
    """InfluxDB 1.x with a generated config: loopback free ports, a temp data directory."""

    def __init__(self) -> None:
        self.binary = ensure_influxd()
        self.http_port = free_port()
        self.rpc_port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="bench-influx-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> InfluxDB:
        root = Path(self._dir.name)
        conf = root / "influxdb.conf"
        conf.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{root / "meta"}"
[data]
  dir = "{root / "data"}"
  wal-dir = "{root / "wal"}"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.http_port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "warn"
"""
        )
        self.proc = subprocess.Popen(
            [self.binary, "-config", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("influxd exited early")
            try:
                if httpx.get(f"{self.url}/ping", timeout=1).status_code == 204:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("influxd did not come up")
        self.client = httpx.Client(base_url=self.url, timeout=120)
        self.query("CREATE DATABASE bench", method="POST")
        return self

    def query(self, q: str, method: str = "GET", **params: str) -> dict[str, Any]:
        assert self.client is not None
        resp = self.client.request(method, "/query", params={"q": q, **params})
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        for result in body.get("results", []):
            if "error" in result:
                raise RuntimeError(f"influx: {result['error']}")
        return body

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        stop_process(self.proc)
        self._dir.cleanup()


# -- a plain keep-alive HTTP sender (the same for Roost and InfluxDB) -----------------------------


class Sender:
    """One keep-alive HTTP/1.1 connection sending pre-built bodies, one request at a time.

    ``http.client`` costs a few tens of µs a request: next to nothing beside 5,000 points.
    """

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = headers

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.conn.request("POST", path, body=body, headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        self.conn.close()


# -- profiling --------------------------------------------------------------------------------


class Profiler:
    """``py-spy record`` of a process while a benchmark runs (``--profile DIR``); then a summary.

    py-spy comes from PyPI (``pip install py-spy``); without it, or without ptrace rights, the
    benchmark runs unprofiled and says so.
    """

    def __init__(self, pid: int, out: Path | None, rate: int = 200) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        if self.out is None:
            return self
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(exe).exists():
            print("  (py-spy not installed: no profile; pip install py-spy)", flush=True)
            self.out = None
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(self.pid), "--format", "raw", "--rate", str(self.rate),
             "--output", str(self.out), "--nonblocking", "--threads"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def summary(self, top: int = 15) -> str:
        """The functions with the most samples, self and inclusive, as text."""
        if self.out is None or not self.out.exists():
            return ""
        return summarize_profile(self.out, top)


def summarize_profile(path: Path, top: int = 15) -> str:
    """Where the main thread's time goes, from a py-spy raw (collapsed stacks) file.

    Samples per thread first (py-spy counts a thread blocked in ``queue.get`` as busy: the
    aiosqlite and executor threads' figures are mostly waiting), then self time per line and
    inclusive time per Roost function, as shares of the main thread's samples (the event loop).
    """
    per_thread: dict[str, int] = {}
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    main = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread ") else "?"
        per_thread[thread] = per_thread.get(thread, 0) + count
        if thread != "MainThread":
            continue
        frames = frames[1:]
        if not frames:
            continue
        main += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in {f.rsplit(":", 1)[0] + ")" for f in frames}:
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not main:
        return "(no samples of the main thread)"
    busiest = sorted(per_thread.items(), key=lambda kv: -kv[1])[:4]
    lines = ["samples per thread: " + ", ".join(f"{name} {n}" for name, n in busiest)]
    lines.append(f"main thread, self time per line (% of its {main} samples):")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / main:5.1f}%  {frame}")
    lines.append("main thread, inclusive per Roost function:")
    shown = 0
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if "roost/" in frame and "roost/__main__" not in frame and "cli/serve" not in frame:
            lines.append(f"  {100 * count / main:5.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


# -- raw peers: plain rows into SQLite and PostgreSQL ---------------------------------------------

RawRows = list[list[tuple[int, int, float]]]


def sqlite_append(batches: RawRows) -> tuple[float, int]:
    """executemany into a rowid table without index, WAL, synchronous=NORMAL, a commit per batch.

    Answers rows/s and the rows counted afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE points (series INTEGER, ts INTEGER, value REAL)")
        started = time.perf_counter()
        for rows in batches:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO points VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        (stored,) = conn.execute("SELECT COUNT(*) FROM points").fetchone()
        conn.close()
    return sum(len(rows) for rows in batches) / seconds, int(stored)


def postgres_copy(url: str, batches: RawRows) -> tuple[float, int]:
    """asyncpg copy_records_to_table into a heap table without index, a transaction per batch."""
    import asyncpg

    async def run() -> tuple[float, int]:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE points (series bigint, ts bigint, value float8)")
            started = time.perf_counter()
            for rows in batches:
                async with conn.transaction():
                    await conn.copy_records_to_table("points", records=rows)
            seconds = time.perf_counter() - started
            stored: int = await conn.fetchval("SELECT COUNT(*) FROM points")
            return sum(len(rows) for rows in batches) / seconds, stored
        finally:
            await conn.close()

    return asyncio.run(run())


def synthetic_rows(points: int, series: int, batch: int = 5000) -> RawRows:
    """``points`` (series, ts ns, value) rows in batches: what the raw peers insert."""
    base = (int(time.time()) - 40 * 86_400) * 1_000_000_000
    return [
        [(i % series + 1, base + i * 1_000_000, 20 + (i % 1000) / 100)
         for i in range(start, min(points, start + batch))]
        for start in range(0, points, batch)
    ]  # fmt: skip
