"""Memory of ``roost serve`` under MQTT overload, and a minute after it (issue 11.3).

    .venv/bin/python bench/overload_memory.py [--quick] [--cases overload,modest,normal]
        [--devices 500] [--seconds 60] [--idle 60]

Each case runs against its own fresh ``roost serve`` (SQLite; devices and their ten sensors
declared beforehand, as ``bench/mqtt_ingest.py`` does): every device holds one MQTT 3.1.1
connection (``bench/mqtt_load.py``'s hand-built frames) and keeps ``window`` QoS 1 PUBLISHes of
20 values each in flight for ``--seconds``, then waits for its outstanding acknowledgements.

* **overload**: ``--devices`` devices × 500 in flight (far more than the server commits);
* **modest**: ``--devices`` devices × 4 in flight;
* **normal**: 200 devices × 20 in flight for 25 s.

The server's RSS and anonymous memory (``RssAnon`` of /proc/<pid>/status) are sampled every
second: before the load (after provisioning), during it (peak), and for ``--idle`` seconds after
the last acknowledgement; then the server's compaction lag (``roost_compaction_lag_seconds``)
is read, and memory sampled once more when compaction has folded the run's backlog into blocks
(plus 10 s). Then the points are counted back through the query API (an ``agg=count`` per
device and sensor): a message acknowledged but not stored fails the run. Goals: peak RSS below
512 MiB under overload, and RSS within 50 MiB of the pre-load level ``--idle`` seconds after
the load.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.mqtt_ingest import NS_PER_MS, SENSORS, provision
from bench.mqtt_load import LoadSpec, run_load
from bench.support import Results, RoostProcess, base_parser, load_average, raise_fd_limit

# Values per message: two key/value items of the ten declared sensors.
POINTS_PER_MESSAGE = 20
# The goals (MiB): the overload peak, and how far above its pre-load level the server
# may stay once idle.
PEAK_GOAL_MIB = 512
IDLE_GOAL_MIB = 50
# Seconds between memory samples.
SAMPLE_EVERY_S = 1.0
# Compaction lag (s) below which the backlog of a run counts as folded into blocks, and how long
# the server then gets to give memory back (two of its heap keeper's 5 s ticks).
CAUGHT_UP_S = 5.0
SETTLE_S = 10.0


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of a process in KiB, from /proc/<pid>/status."""
    rss = anon = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("RssAnon:"):
            anon = int(line.split()[1])
    return rss, anon


@dataclass
class Sampler:
    """Samples a process's memory every second in a thread, tagged by phase."""

    pid: int
    phase: str = "before"
    samples: list[tuple[str, float, int, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def sample(self) -> tuple[int, int]:
        rss, anon = memory_kib(self.pid)
        self.samples.append((self.phase, time.monotonic(), rss, anon))
        return rss, anon

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            try:
                self.sample()
            except (OSError, RuntimeError):
                return

    def peak(self, phase: str) -> tuple[int, int]:
        """The highest RSS and anonymous memory sampled in ``phase``."""
        rows = [(rss, anon) for p, _, rss, anon in self.samples if p == phase]
        return (max(r for r, _ in rows), max(a for _, a in rows)) if rows else (0, 0)


@dataclass
class Case:
    name: str
    devices: int
    window: int
    seconds: float


def compaction_lag(roost: RoostProcess) -> float:
    """The server's ``roost_compaction_lag_seconds``: how old its oldest uncompacted data is."""
    text = httpx.get(f"{roost.url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith("roost_compaction_lag_seconds"):
            return float(line.split()[-1])
    return float("nan")


def settled(roost: RoostProcess, sampler: Sampler, timeout_s: float) -> tuple[int, int, float]:
    """Memory once compaction has caught up (lag under CAUGHT_UP_S) and the server had
    SETTLE_S to give memory back; and the seconds that took after the idle window."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s and not compaction_lag(roost) < CAUGHT_UP_S:
        time.sleep(1.0)
    time.sleep(SETTLE_S)
    rss, anon = sampler.sample()
    return rss, anon, time.monotonic() - began


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


def run_case(case: Case, idle_s: float, results: Results) -> dict[str, Any]:
    """One fresh server: provision, sample before / during / after the load, count back."""
    with RoostProcess(mqtt=True) as roost:
        ids = [f"o-{n:05d}" for n in range(case.devices)]
        devices = provision(roost, ids, declare=True)
        time.sleep(2.0)  # let provisioning's allocations settle
        with Sampler(roost.pid) as sampler:
            before = sampler.sample()
            sampler.phase = "load"
            spec = LoadSpec(
                "127.0.0.1", roost.mqtt_port, duration=case.seconds, window=case.window,
                points=POINTS_PER_MESSAGE,
            )  # fmt: skip
            result, _ = run_load(spec, devices, 1)
            sampler.phase = "after"
            end_sample = sampler.sample()
            time.sleep(idle_s)
            after = sampler.sample()
            idle = [s for s in sampler.samples if s[0] == "after"]
            lag = compaction_lag(roost)
            sampler.phase = "settling"
            caught_up = settled(roost, sampler, 240.0)
        peak = sampler.peak("load")
        peak = (max(peak[0], end_sample[0]), max(peak[1], end_sample[1]))
        # Count back what was stored, per device and sensor (after the idle window, so that the
        # queries do not touch the figures).
        pairs = [(device, sensor) for device, _ in devices for sensor in SENSORS[1:]]
        start = (spec.ts_base_ms - 1) * NS_PER_MS
        end = (spec.ts_base_ms + 10**9) * NS_PER_MS
        counts = roost.count_points(pairs, start, end)
        per_sensor = POINTS_PER_MESSAGE // 10
        stored = sum(counts.values()) // POINTS_PER_MESSAGE
        lost = 0
        for device, _ in devices:
            acked = result.acked_per_device.get(device, 0) * per_sensor
            lost += sum(max(0, acked - counts[device, s]) for s in SENSORS[1:])
        errors = roost.unhandled_errors()
    label = f"{case.name}: {case.devices} devices × {case.window} in flight, {case.seconds:.0f} s"
    print(
        f"  {label}: acked {result.acked:,} messages ({result.rate:,.0f} msg/s), stored "
        f"{stored:,}; RSS {mib(before[0])} → peak {mib(peak[0])} → {mib(after[0])} MiB "
        f"{idle_s:.0f} s after (anon {mib(before[1])} → {mib(peak[1])} → {mib(after[1])}); "
        f"idle trace (MiB): {' '.join(mib(s[2]) for s in idle[:: max(1, len(idle) // 12)])}; "
        f"compaction lag then {lag:.0f} s; caught up {caught_up[2]:.0f} s later: RSS "
        f"{mib(caught_up[0])} (anon {mib(caught_up[1])})",
        flush=True,
    )
    if result.errors:
        results.fail(f"{case.name}: load generator errors: {result.last_error}")
    if lost:
        results.fail(f"{case.name}: {lost:,} ACKNOWLEDGED points not stored")
    if errors:
        results.fail(f"{case.name}: server logged errors: {errors[:3]}")
    return {
        "label": label,
        "before": before,
        "peak": peak,
        "after": after,
        "lag": lag,
        "caught_up": caught_up,
        "acked": result.acked,
        "sent": result.sent,
        "stored": stored,
        "rate": result.rate,
    }


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--cases", default="overload,modest,normal")
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0, help="sending time (overload)")
    parser.add_argument("--window", type=int, default=500, help="in flight per device (overload)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds sampled after the load")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.seconds, args.idle = min(args.devices, 100), 5.0, 10.0
    raise_fd_limit()
    catalog = {
        "overload": Case("overload", args.devices, args.window, args.seconds),
        "modest": Case("modest", args.devices, 4, args.seconds),
        "normal": Case("normal", min(200, args.devices), 20, min(25.0, args.seconds)),
    }
    results = Results("overload_memory", "Memory under MQTT overload, and after it")
    print(f"load average before: {load_average():.2f}", flush=True)
    figures = {name: run_case(catalog[name], args.idle, results) for name in args.cases.split(",")}
    print(f"load average after: {load_average():.2f}", flush=True)
    print(
        f"\n| case | pre-load RSS (anon) MiB | peak RSS (anon) MiB | RSS (anon) {args.idle:.0f} s "
        "after, MiB | compaction lag then | RSS (anon) once compacted | acked | stored |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    for name, f in figures.items():
        print(
            f"| {f['label']} | {mib(f['before'][0])} ({mib(f['before'][1])}) | "
            f"{mib(f['peak'][0])} ({mib(f['peak'][1])}) | {mib(f['after'][0])} "
            f"({mib(f['after'][1])}) | {f['lag']:.0f} s | {mib(f['caught_up'][0])} "
            f"({mib(f['caught_up'][1])}) | {f['acked']:,} | {f['stored']:,} |"
        )
        results.figures[f"{name} peak rss mib"] = f["peak"][0] / 1024
        results.figures[f"{name} idle rss mib"] = f["after"][0] / 1024
        grown = (f["after"][0] - f["before"][0]) / 1024
        results.add(
            f"{name}: RSS {args.idle:.0f} s after the load, above pre-load",
            f"{grown:,.0f} MiB",
            goal=f"≤ {IDLE_GOAL_MIB} MiB",
            met=grown <= IDLE_GOAL_MIB,
        )
        if name == "overload":
            results.add(
                "overload: peak RSS",
                f"{f['peak'][0] / 1024:,.0f} MiB",
                goal=f"< {PEAK_GOAL_MIB} MiB",
                met=f["peak"][0] / 1024 < PEAK_GOAL_MIB,
            )
    results.write(args.json)
    return results.exit_code()


if __name__ == "__main__":
    sys.exit(main())
