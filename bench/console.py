"""The operator console in a real browser: device list, a week-long chart, a live point.

    .venv/bin/python bench/console.py [--quick] [--devices 10000] [--runs 7]
        [--backends sqlite,postgresql]

Headless Debian Chromium driven by Playwright (the same flags as the browser tests), against a
``roost serve`` on each backend:

* **device list**: 10,000 devices registered (bulk import); a signed-in browser opens
  ``/devices``; timed from the navigation's start until the first row of the table is on screen
  (Playwright waits for it to be visible), ``--runs`` times; the median and the worst;
* **7-day chart**: one device with a 1 Hz sensor over the last 7 days (604,800 points, sent through
  ``POST /api/v1/telemetry``); ``/devices/{id}/telemetry?range=7d`` timed until the chart says it
  has drawn (its ``data-drawn-at`` attribute) — page, API query (aggregated) and drawing;
* **live point**: the same page on the last hour; a paho device publishes a point at QoS 1; timed
  from the PUBACK until the chart shows that value (``data-last-value``), one at a time.

Goals (issue 12): first page < 500 ms, chart drawn < 1 s, live point < 1 s after its PUBACK. No
peer console runs here (Grafana and ThingsBoard need their own servers or Docker, which this
machine lacks), so the goals are the reference.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import (
    ADMIN_PASSWORD,
    V1,
    NatsServer,
    Results,
    RoostProcess,
    base_parser,
    fresh_postgres,
    load_average,
    percentile,
)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
CHROMIUM = "/usr/bin/chromium"
CHART_DEVICE = "bench-chart"
SENSOR = "temperature"
WEEK_S = 7 * 86_400
BATCH = 5_000
CHART = f'[data-roost-chart][data-sensor="{SENSOR}"]'


def fleet(count: int) -> list[dict[str, Any]]:
    """Devices spread over 20 sites' worth of tags (the list shows the first page)."""
    return [
        {
            "id": f"display-{i:05d}",
            "name": f"Display {i}",
            "tags": {"store": f"store-{i % 20:02d}", "floor": str(i % 3)},
        }
        for i in range(count)
    ]


def load_week(roost: RoostProcess, token: str, points: int) -> None:
    """``points`` one-second points ending now, through the HTTP ingest door."""
    import httpx

    now = int(time.time())
    start = now - points
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=roost.url, headers=headers, timeout=120) as device:
        for offset in range(0, points, BATCH):
            items = [
                {"sensor_id": SENSOR, "timestamp": start + i, "value": 20 + (i % 600) / 60}
                for i in range(offset, min(points, offset + BATCH))
            ]
            resp = device.post(f"{V1}/telemetry", content=orjson.dumps(items))
            if resp.status_code != 200:
                raise RuntimeError(f"ingest: {resp.status_code} {resp.text[:300]}")


class LiveDevice:
    """A paho device that publishes one point at a time and notes when its PUBACK came."""

    def __init__(self, roost: RoostProcess, token: str) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-live")
        self.client.username_pw_set(CHART_DEVICE, token)
        self.acked: dict[int, float] = {}
        self.ack = threading.Condition()
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", roost.mqtt_port, keepalive=30)
        self.client.loop_start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self.ack:
            self.acked[mid] = time.perf_counter()
            self.ack.notify_all()

    def publish(self, value: float) -> float:
        """Publish ``value`` now; the moment its PUBACK arrived."""
        body = orjson.dumps([{"sensor_id": SENSOR, "timestamp": time.time(), "value": value}])
        info = self.client.publish(f"devices/{CHART_DEVICE}/telemetry", body, qos=1)
        with self.ack:
            self.ack.wait_for(lambda: info.mid in self.acked, timeout=10)
        if info.mid not in self.acked:
            raise RuntimeError("no PUBACK within 10 s")
        return self.acked[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def sign_in(page: Any, url: str) -> None:
    page.goto(f"{url}/login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda u: "/login" not in u)


def timed_goto(page: Any, url: str, ready: str, timeout_ms: int = 30_000) -> float:
    """Milliseconds from the navigation's start until ``ready`` (a selector) is visible."""
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_selector(ready, state="visible", timeout=timeout_ms)
    return (time.perf_counter() - start) * 1000


def prepare(roost: RoostProcess, args: Any, results: Results, label: str) -> str:
    """The fleet and the week of points; the chart device's token.

    Done before Playwright starts: its sync API keeps an event loop running in this thread,
    and the setup's asyncio calls could not run beside it.
    """
    roost.import_devices([*fleet(args.devices), {"id": CHART_DEVICE, "name": "Chart device"}])
    (token,) = roost.device_tokens([CHART_DEVICE])
    started = time.perf_counter()
    load_week(roost, token, args.points)
    results.note(
        f"{label}: {args.devices:,} devices registered, {args.points:,} points of {CHART_DEVICE}/"
        f"{SENSOR} loaded in {time.perf_counter() - started:.1f} s"
    )
    return token


def measure(roost: RoostProcess, args: Any, results: Results, label: str) -> None:
    token = prepare(roost, args, results, label)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            measure_in(browser, roost, token, args, results, label)
        finally:
            browser.close()


def measure_in(
    browser: Any, roost: RoostProcess, token: str, args: Any, results: Results, label: str
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        sign_in(page, roost.url)
        # Device list: the first row of the first page on screen.
        timed_goto(page, f"{roost.url}/devices", "table tbody tr")  # warm-up
        lists = [
            timed_goto(page, f"{roost.url}/devices", "table tbody tr") for _ in range(args.runs)
        ]
        rows = page.locator("table tbody tr").count()
        median = statistics.median(lists)
        results.add(
            f"{label}: device list of {args.devices:,}, first page ({rows} rows) on screen",
            f"median {median:.0f} ms, worst {max(lists):.0f} ms",
            goal="< 500 ms",
            met=median < 500,
        )
        results.figures[f"{label}_list_ms"] = median

        # 7-day chart: drawn.
        chart_url = f"{roost.url}/devices/{CHART_DEVICE}/telemetry?range=7d"
        drawn = f"{CHART}[data-drawn-at]"
        timed_goto(page, chart_url, drawn)  # warm-up
        charts = [timed_goto(page, chart_url, drawn) for _ in range(args.runs)]
        points = page.locator(CHART).first.get_attribute("data-points")
        median = statistics.median(charts)
        results.add(
            f"{label}: 7-day chart of a 1 Hz sensor ({args.points:,} stored, {points} drawn)",
            f"median {median:.0f} ms, worst {max(charts):.0f} ms",
            goal="< 1 s",
            met=median < 1000,
        )
        results.figures[f"{label}_chart_ms"] = median

        # Live point: PUBACK → on the chart.
        timed_goto(page, f"{roost.url}/devices/{CHART_DEVICE}/telemetry?range=1h", drawn)
        page.wait_for_selector('[data-live-status][data-state="live"]', timeout=10_000)
        device = LiveDevice(roost, token)
        lags = []
        try:
            for n in range(args.live):
                value = 1000 + n + 0.25
                acked = device.publish(value)
                page.wait_for_function(
                    "([sel, v]) => { const el = document.querySelector(sel);"
                    " return el && Number(el.dataset.lastValue) === v; }",
                    arg=[CHART, value],
                    polling="raf",
                    timeout=10_000,
                )
                lags.append((time.perf_counter() - acked) * 1000)
        finally:
            device.close()
        median = statistics.median(lags)
        results.add(
            f"{label}: live point on the chart after its PUBACK ({len(lags)} points)",
            f"median {median:.0f} ms, p95 {percentile(lags, 95):.0f} ms, worst {max(lags):.0f} ms",
            goal="< 1 s",
            met=percentile(lags, 95) < 1000,
        )
        results.figures[f"{label}_live_ms"] = median
    finally:
        context.close()


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=WEEK_S)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--live", type=int, default=20)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.points, args.runs, args.live = 500, 20_000, 2, 3
    if not shutil.which(CHROMIUM):
        print("chromium is not installed: make system-deps", file=sys.stderr)
        return 2
    results = Results("console", "The operator console in Chromium")
    print(f"load average at start: {load_average():.2f}")
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with RoostProcess(mqtt=True) as roost:
                measure(roost, args, results, "SQLite")
                if roost.unhandled_errors():
                    results.fail("SQLite server logged errors")
        elif backend == "postgresql":
            with fresh_postgres(args.pg_url) as url, NatsServer() as nats:
                with RoostProcess(database_url=url, bus_url=nats.url, mqtt=True) as roost:
                    measure(roost, args, results, "PostgreSQL + NATS")
                    if roost.unhandled_errors():
                        results.fail("PostgreSQL server logged errors")
        else:
            parser.error(f"unknown backend {backend!r}")
    print(f"load average at end: {load_average():.2f}")
    results.write(args.json)
    return results.exit_code()


if __name__ == "__main__":
    sys.exit(main())
