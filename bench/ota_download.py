"""OTA downloads: 1,000 devices fetching one 50 MB artifact at once, beside nginx serving the file.

    .venv/bin/python bench/ota_download.py [--quick] [--devices 1000] [--size-mb 50]
        [--client-procs 2] [--hash-every 50] [--profile DIR] [--only nginx,roost]

One file of random bytes is written to a temp directory, then, in the same run:

* nginx (Debian's ``/usr/sbin/nginx``, started here with a config of our own on a free loopback
  port: ``worker_processes auto``, ``sendfile on``, ``tcp_nopush on``, ``access_log off``,
  ``open_file_cache``, ``keepalive``: Debian's ``nginx.conf`` defaults plus what a download
  mirror would set) serves it as a static file;
* Roost (``roost serve``, SQLite, a fresh data directory) gets the same file through
  ``POST /api/v1/artifacts`` (raw body, streamed) and serves it to its devices at
  ``GET /api/v1/ota/artifacts/{id}/download`` with each device's own token
  (``Authorization: Bearer``): the devices are imported in bulk and each gets a token of its own.

Both are fetched by the same load client: ``--client-procs`` processes (uvloop, a hand-written
HTTP/1.1 ``BufferedProtocol`` reading into one shared 256 KiB buffer, so the client spends its
CPU in the kernel's copy and next to nothing per byte in Python) start ``--devices`` downloads at
the same moment, one connection each, and count the body bytes. Every ``--hash-every``-th
download is also hashed and its sha256 compared with the file's (hashing all 50 GB would cost the
client more CPU than the servers it competes with). The figures: total throughput (bytes of every
body ÷ from the first connect to the last byte), per-download time p50/p99, CPU seconds of the
server and of the client, and the server's RSS sampled every 100 ms (before the load, peak,
after). Then the resume check against both servers: a download cut after half the file (the
connection closed), resumed with ``Range: bytes=N-`` (and ``If-Range`` with the ETag when the
server gave one), must answer 206 with the right ``Content-Range`` and give the file's sha256.

The goal (issue 14 §7): Roost's throughput ≥ 0.5× nginx's, Roost's RSS flat (no file held in
memory), the resumed download's sha256 right.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import (
    V1,
    Profiler,
    Results,
    RoostProcess,
    base_parser,
    cpu_seconds,
    free_port,
    load_average,
    machine,
    percentile,
    raise_fd_limit,
    rss_kib,
    stop_process,
    wait_for_port,
)

NGINX = "/usr/sbin/nginx"
ARTIFACT_ID = "bench-firmware"
MIB = 1024 * 1024
# One receive buffer per client process, shared by all its connections: a BufferedProtocol's
# buffer is filled and handed to buffer_updated in the same callback, so sharing is safe, and
# 256 KiB reads keep the per-read Python cost negligible beside the kernel's copy.
RECV_BUFFER = 256 * 1024
# Sampling period of the server's RSS: short enough to catch a peak of a few hundred ms.
RSS_PERIOD_S = 0.1
# After the load: how long the server gets to give back per-connection memory before "after".
SETTLE_S = 2.0
# A download that has not finished after this long is a failure (the full run takes ~1-3 min).
DOWNLOAD_TIMEOUT_S = 900.0
# The RSS goal: growth per concurrent download below two of the blob store's 1 MiB read chunks
# (one being sent, one being read): memory bounded by the chunk, not by the file.
FLAT_PER_DOWNLOAD = 2 * 1024 * 1024
# The largest response head accepted from a server (nginx and uvicorn send a few hundred bytes).
MAX_HEAD = 64 * 1024


# -- the artifact ----------------------------------------------------------------------------------


# Devices per deployment: a deployment's phase is a job, and a job lists at most 1,000 devices.
DEPLOYMENT_DEVICES = 1000


def write_artifact(path: Path, size: int) -> str:
    """``size`` random bytes into ``path``; answers their sha256 (hex)."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(MIB, left))
            digest.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def file_chunks(path: Path) -> Iterator[bytes]:
    """The file in 1 MiB pieces: an upload body that is never whole in memory."""
    with path.open("rb") as src:
        while chunk := src.read(MIB):
            yield chunk


# -- nginx -----------------------------------------------------------------------------------------


class Nginx:
    """Debian's nginx with a config of our own (free loopback port, temp prefix) serving ``root``.

    The config is Debian's ``nginx.conf`` defaults (``worker_processes auto``, ``sendfile on``,
    ``tcp_nopush on``, ``keepalive_timeout 65``) with what a download mirror sets on top: access
    log off, ``open_file_cache``, enough ``worker_connections`` for the fleet and a listen
    backlog as large as uvicorn's.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="bench-nginx-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        """The master and its workers."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [self.pid, *(int(c) for c in children)]

    def config(self) -> str:
        prefix = Path(self._dir.name)
        temps = "\n".join(
            f"  {name}_temp_path {prefix / name};"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return f"""worker_processes auto;
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
worker_rlimit_nofile 65536;
events {{
  worker_connections 8192;
}}
http {{
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  types_hash_max_size 2048;
  default_type application/octet-stream;
  access_log off;
  open_file_cache max=1000 inactive=60s;
{temps}
  server {{
    listen 127.0.0.1:{self.port} backlog=2048;
    root {self.root};
    location / {{ }}
  }}
}}
"""

    def __enter__(self) -> Nginx:
        prefix = Path(self._dir.name)
        conf = prefix / "nginx.conf"
        conf.write_text(self.config())
        # The workers run as nobody (the master as root): the served tree must be readable.
        os.chmod(self._dir.name, 0o755)
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(self.port, 10, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc)
        self._dir.cleanup()


def nginx_version() -> str:
    done = subprocess.run([NGINX, "-v"], capture_output=True, text=True)
    return done.stderr.strip().removeprefix("nginx version: ")


# -- the load client -------------------------------------------------------------------------------


@dataclass
class Fetch:
    """What one download got: status, body bytes, times (monotonic), sha256 when hashed."""

    status: int = 0
    received: int = 0
    started: float = 0.0
    ended: float = 0.0
    sha256: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""


class Download(asyncio.BufferedProtocol):
    """One HTTP/1.1 GET on its own connection: parses the head, counts (and maybe hashes) the body.

    ``cut_after``: close the connection once that many body bytes came (the resume check); only
    those bytes are hashed.
    """

    def __init__(
        self, request: bytes, buffer: memoryview, fetch: Fetch, done: asyncio.Future[None], *,
        hasher: Any = None, cut_after: int = 0,
    ) -> None:  # fmt: skip
        self.request = request
        self.buffer = buffer
        self.fetch = fetch
        self.done = done
        self.hasher = hasher
        self.cut_after = cut_after
        self.head = bytearray()
        self.expected = -1
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.write(self.request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self.expected < 0:
            self.head += self.buffer[:nbytes]
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD:
                    self.finish("response head too large")
                return
            self.parse_head(bytes(self.head[:end]))
            body = memoryview(bytes(self.head[end + 4 :]))
            self.head = bytearray()
            if self.done.done():
                return
            self.body(body)
        else:
            self.body(self.buffer[:nbytes])

    def parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.fetch.status = int(lines[0].split(" ", 2)[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.fetch.headers[name.strip().lower()] = value.strip()
        length = self.fetch.headers.get("content-length")
        if length is None:
            self.finish(f"no Content-Length (status {self.fetch.status})")
            return
        self.expected = int(length)
        if self.expected == 0:
            self.finish()

    def body(self, chunk: memoryview) -> None:
        fetch = self.fetch
        if self.cut_after and fetch.received + len(chunk) >= self.cut_after:
            chunk = chunk[: self.cut_after - fetch.received]
            fetch.received += len(chunk)
            if self.hasher is not None:
                self.hasher.update(chunk)
            self.finish()
            return
        fetch.received += len(chunk)
        if self.hasher is not None:
            self.hasher.update(chunk)
        if fetch.received >= self.expected:
            if fetch.received > self.expected:
                self.finish(f"{fetch.received} body bytes, Content-Length {self.expected}")
            else:
                self.finish()

    def finish(self, error: str = "") -> None:
        if self.done.done():
            return
        self.fetch.ended = time.monotonic()
        self.fetch.error = error
        if self.hasher is not None:
            self.fetch.sha256 = self.hasher.hexdigest()
        if self.transport is not None:
            self.transport.close()
        self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.finish(f"connection lost after {self.fetch.received} bytes: {exc}")


def request_bytes(port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "User-Agent: roost-bench"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def fetch_one(
    port: int, request: bytes, buffer: memoryview, *, hash_it: bool = False,
    hasher: Any = None, cut_after: int = 0,
) -> Fetch:  # fmt: skip
    """One download on a new connection (``hasher``: continue this hash instead of a new one)."""
    loop = asyncio.get_running_loop()
    fetch = Fetch(started=time.monotonic())
    done: asyncio.Future[None] = loop.create_future()
    if hasher is None and hash_it:
        hasher = hashlib.sha256()
    protocol = Download(request, buffer, fetch, done, hasher=hasher, cut_after=cut_after)
    try:
        await loop.create_connection(lambda: protocol, "127.0.0.1", port)
        await asyncio.wait_for(done, DOWNLOAD_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        protocol.finish(f"{type(exc).__name__}: {exc}")
    return fetch


def client_worker(
    port: int, requests: Sequence[bytes], hashed: Sequence[bool], barrier: Any, out: Any
) -> None:
    """One client process: wait at the barrier, start every download at once, put the results."""
    import uvloop

    raise_fd_limit()

    async def run() -> list[Fetch]:
        buffer = memoryview(bytearray(RECV_BUFFER))
        return await asyncio.gather(
            *(fetch_one(port, r, buffer, hash_it=h) for r, h in zip(requests, hashed, strict=True))
        )

    barrier.wait()
    out.put(uvloop.run(run()))


@dataclass
class Load:
    """The figures of one load run."""

    fetches: list[Fetch]
    seconds: float
    client_cpu: float

    @property
    def total_bytes(self) -> int:
        return sum(f.received for f in self.fetches)

    @property
    def mb_per_s(self) -> float:
        return self.total_bytes / self.seconds / 1e6

    def durations(self) -> list[float]:
        return [f.ended - f.started for f in self.fetches]


def run_load(port: int, requests: Sequence[bytes], hash_every: int, procs: int) -> Load:
    """Every request at once, over ``procs`` client processes; answers when all ended."""
    ctx = multiprocessing.get_context("spawn")
    hashed = [hash_every > 0 and i % hash_every == 0 for i in range(len(requests))]
    barrier = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    before = os.times()
    workers = [
        ctx.Process(
            target=client_worker,
            args=(port, requests[p::procs], hashed[p::procs], barrier, out),
            daemon=True,
        )
        for p in range(procs)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=60)
    fetches = [f for _ in workers for f in out.get(timeout=DOWNLOAD_TIMEOUT_S + 60)]
    for worker in workers:
        worker.join()
    after = os.times()
    client_cpu = after.children_user + after.children_system
    client_cpu -= before.children_user + before.children_system
    first = min(f.started for f in fetches)
    last = max(f.ended for f in fetches)
    return Load(fetches, last - first, client_cpu)


# -- the server's memory ---------------------------------------------------------------------------


class RssSampler:
    """The summed RSS (KiB) of some processes every RSS_PERIOD_S in a thread: peak and samples."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.peak = 0
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        return sum(rss_kib(pid) for pid in self.pids)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.now()
            self.samples.append(value)
            self.peak = max(self.peak, value)
            self._stop.wait(RSS_PERIOD_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- one server under load -------------------------------------------------------------------------


@dataclass
class Target:
    """A server to load: where, what each device asks, and whose CPU and memory to watch."""

    name: str
    port: int
    path: str
    headers: list[dict[str, str]]
    pids: list[int]


def measure(
    target: Target, args: Any, sha256: str, size: int, results: Results
) -> dict[str, float]:
    """The load run against one server, then its resume check; prints and answers the figures."""
    requests = [request_bytes(target.port, target.path, h) for h in target.headers]
    cpu_before = sum(cpu_seconds(pid) for pid in target.pids)
    with RssSampler(target.pids) as rss:
        time.sleep(3 * RSS_PERIOD_S)
        rss_before = rss.now()
        load = run_load(target.port, requests, args.hash_every, args.client_procs)
        time.sleep(SETTLE_S)
        rss_after = rss.now()
    server_cpu = sum(cpu_seconds(pid) for pid in target.pids) - cpu_before
    name = target.name
    bad = [f for f in load.fetches if f.error or f.status != 200 or f.received != size]
    if bad:
        example = bad[0]
        results.fail(
            f"{name}: {len(bad)} of {len(load.fetches)} downloads failed "
            f"(e.g. status {example.status}, {example.received} bytes, {example.error!r})"
        )
    hashed = [f for f in load.fetches if f.sha256]
    wrong = [f for f in hashed if f.sha256 != sha256]
    if wrong:
        results.fail(f"{name}: {len(wrong)} of {len(hashed)} hashed downloads have a wrong sha256")
    durations = load.durations()
    figures = {
        "mb_per_s": load.mb_per_s,
        "seconds": load.seconds,
        "p50_s": percentile(durations, 0.5),
        "p99_s": percentile(durations, 0.99),
        "server_cpu_s": server_cpu,
        "client_cpu_s": load.client_cpu,
        "rss_before_mib": rss_before / 1024,
        "rss_peak_mib": rss.peak / 1024,
        "rss_after_mib": rss_after / 1024,
        "hashed": len(hashed),
        "hashed_ok": len(hashed) - len(wrong),
        "ok": len(load.fetches) - len(bad),
    }
    print(
        f"  {name}: {len(load.fetches)} downloads ({figures['ok']:.0f} complete), "
        f"{load.total_bytes / 1e9:.2f} GB in {load.seconds:.1f} s = {load.mb_per_s:,.0f} MB/s; "
        f"per download p50 {figures['p50_s']:.1f} s, p99 {figures['p99_s']:.1f} s; "
        f"CPU server {server_cpu:.1f} s, client {load.client_cpu:.1f} s; "
        f"RSS before {figures['rss_before_mib']:.0f} MiB, peak {figures['rss_peak_mib']:.0f}, "
        f"after {figures['rss_after_mib']:.0f}; sha256 right in "
        f"{figures['hashed_ok']:.0f}/{len(hashed)} hashed",
        flush=True,
    )
    figures["resume_ok"] = float(resume_check(target, sha256, size, results))
    return figures


def resume_check(target: Target, sha256: str, size: int, results: Results) -> bool:
    """A download cut after half the file, resumed with Range (+ If-Range): right sha256?"""
    cut = size // 2 + 12345  # not on a chunk boundary of anyone's

    async def run() -> str:
        buffer = memoryview(bytearray(RECV_BUFFER))
        headers = dict(target.headers[0])
        first_request = request_bytes(target.port, target.path, headers)
        hasher = hashlib.sha256()
        first = await fetch_one(target.port, first_request, buffer, hasher=hasher, cut_after=cut)
        if first.status != 200 or first.received != cut or first.error:
            return f"first part: status {first.status}, {first.received} bytes, {first.error!r}"
        headers["Range"] = f"bytes={cut}-"
        etag = first.headers.get("etag")
        if etag:
            headers["If-Range"] = etag
        rest = await fetch_one(
            target.port, request_bytes(target.port, target.path, headers), buffer, hasher=hasher
        )
        wanted_range = f"bytes {cut}-{size - 1}/{size}"
        if rest.status != 206 or rest.headers.get("content-range") != wanted_range:
            return (
                f"resume: status {rest.status}, Content-Range "
                f"{rest.headers.get('content-range')!r} (wanted 206, {wanted_range!r})"
            )
        if rest.error or first.received + rest.received != size:
            return f"resume: {rest.received} bytes after {cut}, {rest.error!r}"
        if rest.sha256 != sha256:
            return f"resumed download's sha256 {rest.sha256} != {sha256}"
        return ""

    import uvloop

    problem = uvloop.run(run())
    if problem:
        results.fail(f"{target.name}: {problem}")
        print(f"  {target.name}: resume check FAILED: {problem}", flush=True)
        return False
    print(
        f"  {target.name}: cut after {cut:,} bytes, resumed with Range: 206, right Content-Range, "
        "sha256 right",
        flush=True,
    )
    return True


def run_nginx(args: Any, root: Path, sha256: str, size: int, results: Results) -> dict[str, float]:
    with Nginx(root) as nginx:
        print(f"nginx {nginx_version()} on 127.0.0.1:{nginx.port} (pids {nginx.pids()})")
        # The same request heads as Roost's (a bearer token each): nginx ignores the header.
        headers = [
            {"Authorization": f"Bearer {'x' * 43}", "Connection": "close"}
            for _ in range(args.devices)
        ]
        target = Target("nginx", nginx.port, "/artifact.bin", headers, nginx.pids())
        return measure(target, args, sha256, size, results)


def run_roost(
    args: Any, artifact: Path, sha256: str, size: int, results: Results
) -> dict[str, float] | None:
    env = dict(item.split("=", 1) for item in args.roost_env)
    with RoostProcess(env=env) as roost:
        started = time.monotonic()
        devices = [f"ota-{i:05d}" for i in range(args.devices)]
        roost.import_devices([{"id": d, "name": d} for d in devices])
        tokens = roost.device_tokens(devices)
        print(
            f"Roost on 127.0.0.1:{roost.http_port}: {len(devices)} devices imported, a token "
            f"each, in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        with roost.admin() as api:
            started = time.monotonic()
            resp = api.post(
                f"{V1}/artifacts",
                params={
                    "id": ARTIFACT_ID,
                    "name": "Bench firmware",
                    "version": "1.0.0",
                    "type": "firmware",
                    "filename": "artifact.bin",
                    "sha256": sha256,
                },
                content=file_chunks(artifact),
                headers={"Content-Type": "application/octet-stream"},
                timeout=600,
            )
            if resp.status_code in (404, 405):
                results.fail(f"Roost: no artifact upload route yet ({resp.status_code})")
                return None
            if resp.status_code not in (200, 201):
                results.fail(f"Roost: upload answered {resp.status_code} {resp.text[:300]}")
                return None
            body = resp.json()
            print(
                f"  uploaded {size / MIB:.0f} MiB in {time.monotonic() - started:.1f} s "
                f"(sha256 {body.get('sha256', '?')[:16]}…)",
                flush=True,
            )
            if body.get("sha256") != sha256 or body.get("size") != size:
                results.fail(f"Roost: the upload's answer does not match the file: {body}")
            # A device downloads only what a deployment sent it: one deployment per 1,000
            # devices (a phase is a job, and a job lists at most 1,000 devices).
            for n in range(0, len(devices), DEPLOYMENT_DEVICES):
                resp = api.post(
                    f"{V1}/deployments",
                    json={
                        "id": f"bench-{n // DEPLOYMENT_DEVICES}",
                        "artifact_ids": [ARTIFACT_ID],
                        "targets": {"devices": devices[n : n + DEPLOYMENT_DEVICES]},
                    },
                    timeout=120,
                )
                if resp.status_code != 201:
                    results.fail(f"Roost: deployment answered {resp.status_code} {resp.text[:300]}")
                    return None
        headers = [{"Authorization": f"Bearer {t}", "Connection": "close"} for t in tokens]
        path = f"{V1}/ota/artifacts/{ARTIFACT_ID}/download"
        target = Target("Roost", roost.http_port, path, headers, [roost.pid])
        profile = Path(args.profile) / "ota_download.raw" if args.profile else None
        with Profiler(roost.pid, profile) as profiler:
            figures = measure(target, args, sha256, size, results)
        if profile is not None:
            print(profiler.summary(), flush=True)
        errors = roost.unhandled_errors()
        if errors:
            results.fail(f"Roost: server logged errors: {errors[:3]}")
        return figures


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--devices", type=int, default=1000, help="concurrent downloads")
    parser.add_argument("--size-mb", type=float, default=50, help="artifact size, MB (10^6)")
    parser.add_argument(
        "--client-procs", type=int, default=2, help="load client processes (the same for both)"
    )
    parser.add_argument(
        "--hash-every", type=int, default=50, help="hash every Nth download (0: none, 1: all)"
    )
    parser.add_argument("--only", default="nginx,roost", help="which servers: nginx,roost")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds (nginx then Roost, then Roost then nginx…)"
    )
    parser.add_argument("--profile", metavar="DIR", help="py-spy the Roost server into DIR")
    parser.add_argument(
        "--roost-env", action="append", default=[], metavar="NAME=VALUE",
        help="more environment for roost serve (repeat), e.g. ROOST_LOG_LEVEL=info",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.devices = min(args.devices, 50)
        args.size_mb = min(args.size_mb, 5)
    raise_fd_limit()
    size = int(args.size_mb * 1e6)
    results = Results("ota_download", "OTA downloads: concurrent devices, one artifact")
    info = machine()
    print(
        f"machine: {info['nproc']} cores ({info['cpu']}), {info['ram']}, Linux {info['kernel']}, "
        f"Python {info['python']}; load average {load_average():.2f}",
        flush=True,
    )
    wanted = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-ota-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        artifact = root / "artifact.bin"
        sha256 = write_artifact(artifact, size)
        os.chmod(artifact, 0o644)
        print(
            f"artifact: {size:,} random bytes, sha256 {sha256[:16]}…; {args.devices} concurrent "
            f"downloads, {args.client_procs} client processes, every {args.hash_every}th hashed",
            flush=True,
        )
        for n in range(args.rounds):
            # Odd rounds run Roost first: neither server always gets the fresher machine.
            print(f"round {n + 1} of {args.rounds} (load average {load_average():.2f})")
            peer = ours = None
            for name in ("nginx", "roost") if n % 2 == 0 else ("roost", "nginx"):
                if name == "nginx" and "nginx" in wanted:
                    peer = run_nginx(args, root, sha256, size, results)
                elif name == "roost" and "roost" in wanted:
                    ours = run_roost(args, artifact, sha256, size, results)
            report(results, args, size, ours, peer, f"round {n + 1}: " if args.rounds > 1 else "")
    results.write(args.json)
    return results.exit_code()


def report(
    results: Results, args: Any, size: int,
    ours: dict[str, float] | None, peer: dict[str, float] | None, prefix: str = "",
) -> None:  # fmt: skip
    """The rows of one round: Roost beside nginx, and whether the goals were met."""
    for label, figures in (("roost", ours), ("nginx", peer)):
        for key, value in (figures or {}).items():
            results.figures[f"{prefix}{label} {key}"] = value
    if ours is None:
        return

    def both(key: str, fmt: str) -> tuple[str, str]:
        return fmt.format(ours[key]), (fmt.format(peer[key]) if peer else "")

    ratio = ours["mb_per_s"] / peer["mb_per_s"] if peer else float("nan")
    roost_tp, nginx_tp = both("mb_per_s", "{:,.0f} MB/s")
    results.add(
        f"{prefix}{args.devices} downloads of {size / 1e6:.0f} MB, total throughput",
        f"{roost_tp} ({ratio:.2f}×)",
        nginx_tp,
        peer_name="nginx",
        goal="≥ 0.5× nginx",
        met=ratio >= 0.5,
    )
    p50, p50_peer = both("p50_s", "{:.1f} s")
    p99, p99_peer = both("p99_s", "{:.1f} s")
    results.add(f"{prefix}per download, p50 / p99", f"{p50} / {p99}", f"{p50_peer} / {p99_peer}",
                peer_name="nginx")  # fmt: skip
    cpu, cpu_peer = both("server_cpu_s", "{:.1f} s")
    results.add(f"{prefix}server CPU", cpu, cpu_peer, peer_name="nginx")
    growth = ours["rss_peak_mib"] - ours["rss_before_mib"]
    rss = (
        f"before {ours['rss_before_mib']:.0f} MiB, peak {ours['rss_peak_mib']:.0f} "
        f"(+{growth:.0f}, {growth * 1024 / args.devices:.0f} KiB a download), "
        f"after {ours['rss_after_mib']:.0f}"
    )
    rss_peer = (
        f"before {peer['rss_before_mib']:.0f} MiB, peak {peer['rss_peak_mib']:.0f}" if peer else ""
    )
    # Flat: no download holds its file; what grows is the chunks in flight, at most a couple of
    # the store's 1 MiB read chunks per download (a held file would be +50 MB a download).
    per_download = growth * MIB / args.devices
    results.add(
        f"{prefix}server RSS",
        rss,
        rss_peer,
        peer_name="nginx",
        goal="flat: < 2 MiB a download, no file held",
        met=per_download < FLAT_PER_DOWNLOAD,
    )
    results.add(
        f"{prefix}resumed download (cut at half, Range), sha256",
        "right" if ours["resume_ok"] else "WRONG",
        ("right" if peer["resume_ok"] else "WRONG") if peer else "",
        peer_name="nginx",
    )


if __name__ == "__main__":
    sys.exit(main())
