"""Rules on the ingest path (issue 13.7): MQTT throughput with 100 threshold rules, alarm latency.

    .venv/bin/python bench/rules.py [--quick] [--devices 1000] [--seconds 10] [--rounds 2]
        [--cases none,quiet,firing] [--rate MSG_PER_S] [--triggers 200] [--database-url URL]

Roost (``roost serve``, SQLite unless ``--database-url`` names a PostgreSQL server, in which a
fresh database is made for every server; single process, in-memory bus) with ``--devices``
devices (``m-00000``…; sensors ``t`` and ``s0``…``s9``; device *i* in group ``g-{i % 10}`` and
site ``site-{i // 10 % 10}``), each on one MQTT 3.1.1 connection of ``bench/mqtt_load.py`` (the
load generator of ``mqtt_ingest.py``: QoS 1, ``--window`` messages in flight, every message a
distinct point; a PUBACK leaves after the commit).

**1. Throughput, beside the same run without rules.** Each case runs on a FRESH server (same
provisioning), the cases interleaved round by round (``none, quiet, firing, none, quiet, …``), and
each server runs two phases: 1 point per message (sensor ``t``), then 100 points per message
(ten items of ``s0``…``s9``). The rules are created through ``POST /api/v1/rules`` before a phase
and deleted after it (``DELETE``), so each phase has exactly 100 rules:

* ``none`` (A): no rules;
* ``quiet`` (B): 100 plain threshold rules (``value > 1000 + 10·j``, an ``alarm`` action),
  above every value sent (0.5…39.5), so the steady state is "nothing fires". Rule *j* targets the
  whole fleet (j % 3 = 0), group ``g-{j % 10}`` (j % 3 = 1, 10 % of the fleet) or the site query
  ``{"site_id": "site-{j % 10}"}`` (j % 3 = 2, 10 %). 1-point phase: all 100 on ``t``;
  100-point phase: rule *j* on ``s{j % 10}``, ten rules per sensor;
* ``firing`` (C): the same, but the last rule of each sensor is ``value > 39`` on groups
  ``g-0``…``g-3`` (40 % of the fleet): one value in 40 crosses it, so ~1 % of the points cross
  a threshold; each crossing raises an alarm and the next point clears it. The alarms raised are
  counted (``roost_alarm_changes_total{change="raised"}``) against the crossings sent: every
  crossing must raise exactly one alarm.

Per phase: acknowledged messages/s after a 1 s warm-up (as ``mqtt_ingest.py``), the server's CPU
per message, every point counted back through the query API (an acknowledged point not stored
fails the run), and whether the rules engine kept up: its catch-up log reads during the phase
(``roost_rules_catch_up_reads_total``: 0 = it evaluated every commit from the bus announcement,
never fell behind by more than its queue) and the time from the last PUBACK until
``roost_rules_evaluated_total{feed="log"}`` reached every point sent. Reported: the median of
each case over the rounds and B/A. Goal: rules cost ≤ 10 % (B/A ≥ 0.90).

**2. Alarm latency** at half the maximum rate: a fresh server with the ``quiet`` rules on ``t``
and ``--triggers`` extra devices (``trig-000``…, not in any group or site: only the whole-fleet
rules watch them). Background load at ``--rate`` msg/s (default: half the median ``none``
1-point figure of part 1, or of a 5 s saturation run when part 1 is skipped); meanwhile each
trigger device publishes one point of value 1005.5 at QoS 1, spread evenly over
``--latency-seconds``; it crosses only rule ``r-000`` (``> 1000``, whole fleet). An admin reads
``GET /api/v1/ws/alarms``; latency = the time the ``raised`` change of that device arrives − the
time its PUBACK arrived (same clock, this process). p50/p95/p99/max; an alarm not seen within 10 s
of the last trigger is missed (must be 0), and the alarms list (``GET /api/v1/alarms``) must hold
one per trigger. Goal: p99 ≤ 1 s.

The load generator, the server and this process share the machine's cores: see the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.mqtt_load import TS_BASE_MS, LoadResult, LoadRun, LoadSpec, run_load
from bench.support import (
    V1,
    Results,
    RoostProcess,
    base_parser,
    cpu_seconds,
    fresh_postgres,
    load_average,
    percentile,
)

#: The sensors of every device, as in mqtt_ingest.py: ``t`` (1 point/message) and ``s0``…``s9``.
SENSORS = ["t", *[f"s{k}" for k in range(10)]]
RULES = 100
GROUPS = 10
SITES = 10
#: Quiet thresholds: rule j fires above 1000 + 10·j (every value sent is below 40).
QUIET_BASE = 1000.0
QUIET_STEP = 10.0
#: The firing variant: values sent are k + .5 (1 point) or k + .25 (100 points), k = seq % 40.
HOT_THRESHOLD = 39.0
HOT_GROUPS = 4
#: A trigger point's value: above rule r-000's threshold only.
TRIGGER_VALUE = 1005.5
TRIGGER_RULE = "r-000"
#: How long after the last trigger an alarm not yet seen counts as missed.
MISSED_AFTER_S = 10.0
#: How long the engine may take to evaluate what was committed before the phase fails.
CATCH_UP_TIMEOUT_S = 180.0
NS_PER_MS = 1_000_000
CASES = ("none", "quiet", "firing")
CASE_NAMES = {"none": "A, no rules", "quiet": "B, 100 quiet rules", "firing": "C, ~1 % firing"}


# -- the fleet and the rules ---------------------------------------------------------------------


def provision(
    roost: RoostProcess, devices: int, triggers: int = 0
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Groups, sites, the fleet (and trigger devices) with their tokens."""
    with roost.admin() as api:
        for k in range(GROUPS):
            api.post(f"{V1}/groups", json={"id": f"g-{k}", "name": f"Group {k}"}).raise_for_status()
        for k in range(SITES):
            api.post(
                f"{V1}/sites", json={"id": f"site-{k}", "name": f"Site {k}"}
            ).raise_for_status()
    sensors = [{"id": s, "type": "double"} for s in SENSORS]
    ids = [f"m-{n:05d}" for n in range(devices)]
    trigger_ids = [f"trig-{n:03d}" for n in range(triggers)]
    records = [
        {
            "id": device_id,
            "name": device_id,
            "group_ids": [f"g-{n % GROUPS}"],
            "site_id": f"site-{n // 10 % SITES}",
            "sensors": sensors,
        }
        for n, device_id in enumerate(ids)
    ] + [
        {"id": d, "name": d, "sensors": [{"id": "t", "type": "double"}]} for d in trigger_ids
    ]  # fmt: skip
    roost.import_devices(records)
    tokens = roost.device_tokens(ids + trigger_ids)
    return (
        list(zip(ids, tokens[:devices], strict=True)),
        list(zip(trigger_ids, tokens[devices:], strict=True)),
    )


def hot(j: int, points: int) -> bool:
    """Is rule j a firing-variant rule (the last of its sensor)?"""
    return j == RULES - 1 if points == 1 else j >= RULES - 10


def rule_set(case: str, points: int) -> list[dict[str, Any]]:
    """The 100 rules of a case for a phase (see the module docstring)."""
    if case == "none":
        return []
    out = []
    for j in range(RULES):
        sensor = "t" if points == 1 else f"s{j % 10}"
        targets: dict[str, Any] | None = None
        if j % 3 == 1:
            targets = {"groups": [f"g-{j % GROUPS}"]}
        elif j % 3 == 2:
            targets = {"query": {"site_id": f"site-{j % SITES}"}}
        threshold = QUIET_BASE + QUIET_STEP * j
        if case == "firing" and hot(j, points):
            threshold = HOT_THRESHOLD
            targets = {"groups": [f"g-{k}" for k in range(HOT_GROUPS)]}
        rule: dict[str, Any] = {
            "id": f"r-{j:03d}",
            "name": f"{sensor} above {threshold:g}",
            "source": {"kind": "telemetry", "sensor": sensor},
            "condition": {"type": "threshold", "op": ">", "value": threshold},
            "actions": [{"type": "alarm", "severity": "warning"}],
        }
        if targets is not None:
            rule["targets"] = targets
        out.append(rule)
    return out


@contextlib.contextmanager
def rules_in_place(roost: RoostProcess, rules: list[dict[str, Any]]) -> Iterator[float]:
    """Create the rules (yields the seconds it took), delete them afterwards."""
    started = time.monotonic()
    with roost.admin() as api:
        for rule in rules:
            resp = api.post(f"{V1}/rules", json=rule)
            if resp.status_code != 201:
                raise RuntimeError(f"rule {rule['id']}: {resp.status_code} {resp.text[:300]}")
    took = time.monotonic() - started
    try:
        yield took
    finally:
        with roost.admin() as api:
            for rule in rules:
                api.delete(f"{V1}/rules/{rule['id']}").raise_for_status()


def metrics(roost: RoostProcess) -> dict[str, float]:
    """The counters this benchmark reads from ``GET /metrics`` (summed over other labels)."""
    text = httpx.get(f"{roost.url}/metrics", timeout=30).text
    wanted = {
        "evaluated": re.compile(r'^roost_rules_evaluated_total\{[^}]*feed="log"[^}]*\} (\S+)$'),
        "catch_up_reads": re.compile(r"^roost_rules_catch_up_reads_total(?:\{\})? (\S+)$"),
        "raised": re.compile(r'^roost_alarm_changes_total\{[^}]*change="raised"[^}]*\} (\S+)$'),
    }
    out = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        for name, pattern in wanted.items():
            found = pattern.match(line)
            if found:
                out[name] += float(found.group(1))
    return out


# -- part 1: throughput ---------------------------------------------------------------------------


def count_stored(
    roost: RoostProcess, devices: list[tuple[str, str]], spec: LoadSpec, result: LoadResult,
    label: str, results: Results,
) -> int:  # fmt: skip
    """Count the phase's points through the query API; fail on an acknowledged point lost."""
    sensors = ["t"] if spec.points == 1 else SENSORS[1:]
    pairs = [(device, sensor) for device, _ in devices for sensor in sensors]
    start = (spec.ts_base_ms - 1) * NS_PER_MS
    end = (spec.ts_base_ms + 10**9) * NS_PER_MS
    counts = roost.count_points(pairs, start, end)
    per_sensor = spec.points // len(sensors)
    stored = lost_acked = missing = 0
    for device, _ in devices:
        sent = result.sent_per_device.get(device, 0) * per_sensor
        acked = result.acked_per_device.get(device, 0) * per_sensor
        for sensor in sensors:
            got = counts[device, sensor]
            stored += got
            lost_acked += max(0, acked - got)
            missing += max(0, sent - max(got, acked))
    if lost_acked:
        results.fail(f"{label}: {lost_acked:,} ACKNOWLEDGED points not stored")
    if missing:
        results.fail(f"{label}: {missing:,} points sent but neither acknowledged nor stored")
    return stored


def expected_crossings(result: LoadResult, points: int) -> int:
    """Alarms the firing variant must raise: one per crossing message and hot rule."""
    per_message = 1 if points == 1 else 10
    total = 0
    for device, sent in result.acked_per_device.items():
        if int(device.rsplit("-", 1)[1]) % GROUPS < HOT_GROUPS:
            total += (sent + 1) // 40 * per_message  # seq 1..sent; seq % 40 == 39 crosses
    return total


def phase(
    roost: RoostProcess, devices: list[tuple[str, str]], spec: LoadSpec, case: str, args: Any,
    results: Results, label: str,
) -> dict[str, float]:  # fmt: skip
    """One load phase with the case's rules in place; its figures."""
    rules = rule_set(case, spec.points)
    with rules_in_place(roost, rules) as create_s:
        time.sleep(0.5)  # the engine loads the rules it was told about
        before = metrics(roost)
        cpu_before = cpu_seconds(roost.pid)
        result, _ = run_load(spec, devices, args.procs)
        points = result.acked * spec.points
        caught_up = float("nan")
        if rules:
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            while time.monotonic() < deadline:
                now = metrics(roost)
                if now["evaluated"] - before["evaluated"] >= points:
                    caught_up = max(0.0, time.time() - result.end_wall)
                    break
                time.sleep(0.05)
            else:
                results.fail(f"{label}: the rules engine did not evaluate every point in time")
        cpu = cpu_seconds(roost.pid) - cpu_before
        after = metrics(roost)
    out = {
        "msg/s": result.rate,
        "points/s": result.rate * spec.points,
        "cpu us/msg": cpu / max(1, result.acked) * 1e6,
        "catch-up s": caught_up,
        "catch-up reads": after["catch_up_reads"] - before["catch_up_reads"],
        "raised": after["raised"] - before["raised"],
    }
    lat = result.latencies
    print(
        f"  {label}: {result.rate:,.0f} msg/s = {out['points/s']:,.0f} points/s acknowledged "
        f"(sent {result.sent:,}, acked {result.acked:,}; PUBACK p50 "
        f"{percentile(lat, 0.5) * 1000:.1f} ms, p99 {percentile(lat, 0.99) * 1000:.1f} ms; "
        f"server CPU {out['cpu us/msg']:.1f} µs/message)",
        flush=True,
    )
    if rules:
        print(
            f"    rules: {len(rules)} created in {create_s:.1f} s; engine caught up "
            f"{caught_up * 1000:.0f} ms after the last PUBACK, "
            f"{out['catch-up reads']:.0f} catch-up log reads; alarms raised {out['raised']:.0f}",
            flush=True,
        )
    if case == "firing":
        expected = expected_crossings(result, spec.points)
        out["expected raised"] = float(expected)
        if out["raised"] != expected:
            results.fail(f"{label}: {out['raised']:.0f} alarms raised for {expected:,} crossings")
    if result.errors:
        results.fail(f"{label}: load generator errors: {result.last_error}")
    if result.acked != result.sent:
        results.fail(f"{label}: {result.sent - result.acked:,} messages never acknowledged")
    stored = count_stored(roost, devices, spec, result, label, results)
    print(f"    counted {stored:,} points stored of {result.sent * spec.points:,} sent", flush=True)
    return out


@contextlib.contextmanager
def server(args: Any) -> Iterator[RoostProcess]:
    """A fresh ``roost serve`` (a fresh PostgreSQL database with ``--database-url``)."""
    if args.database_url:
        with (
            fresh_postgres(args.database_url) as url,
            RoostProcess(database_url=url, mqtt=True) as roost,
        ):
            yield roost
    else:
        with RoostProcess(mqtt=True) as roost:
            yield roost


def one_server(args: Any, case: str, rnd: int, results: Results) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    label = f"round {rnd + 1}, {CASE_NAMES[case]}"
    with server(args) as roost:
        t = time.monotonic()
        devices, _ = provision(roost, args.devices)
        print(f"  {label}: provisioned in {time.monotonic() - t:.1f} s", flush=True)
        base = TS_BASE_MS
        for points in args.payloads:
            window = args.window if points == 1 else args.window_100
            spec = LoadSpec(
                "127.0.0.1", roost.mqtt_port, duration=args.seconds, window=window, points=points,
                ts_base_ms=base,
            )  # fmt: skip
            base += 10**9
            figures[str(points)] = phase(
                roost, devices, spec, case, args, results, f"{label}, {points} pt/msg"
            )
        errors = roost.unhandled_errors()
        if errors:
            results.fail(f"{label}: server logged errors: {errors[:3]}")
    return figures


# -- part 2: alarm latency ------------------------------------------------------------------------


async def trigger_run(
    roost: RoostProcess, triggers: list[tuple[str, str]], seconds: float
) -> tuple[dict[str, float], dict[str, float], int]:
    """Publish one crossing point per trigger device; (PUBACK times, alarm times, dropped)."""
    import websockets

    from roost.sim.mqtt_client import Stats, open_connection

    stats = Stats()
    conns = await asyncio.gather(
        *(
            open_connection("127.0.0.1", roost.mqtt_port, d, d, token, stats, max_inflight=10)
            for d, token in triggers
        )
    )
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    dropped = [0]

    def on_ack(device_id: str) -> Callable[[], None]:
        def record() -> None:
            acked.setdefault(device_id, time.time())

        return record

    for (device_id, _), conn in zip(triggers, conns, strict=True):
        conn.on_ack = on_ack(device_id)
    ws_url = f"ws://127.0.0.1:{roost.http_port}{V1}/ws/alarms?token={roost.admin_token()}"
    ws = await websockets.connect(ws_url, max_size=None)
    all_seen = asyncio.Event()

    async def reader() -> None:
        async for frame in ws:
            now = time.time()
            doc = orjson.loads(frame)
            if "dropped" in doc:
                dropped[0] += int(doc["dropped"])
                continue
            alarm = doc.get("alarm") or {}
            if doc.get("change") == "raised" and alarm.get("rule_id") == TRIGGER_RULE:
                seen.setdefault(alarm["device_id"], now)
                if len(seen) >= len(triggers):
                    all_seen.set()

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.3)
    interval = seconds / max(1, len(triggers))
    next_at = time.monotonic()
    for k, ((device_id, _), conn) in enumerate(zip(triggers, conns, strict=True)):
        payload = b'{"sensor_id":"t","timestamp":%d,"value":%.1f}' % (
            int(time.time() * 1000) + k,
            TRIGGER_VALUE,
        )
        conn.publish(f"devices/{device_id}/telemetry".encode(), payload, 1)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    for conn in conns:
        await conn.drain(30)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_seen.wait(), MISSED_AFTER_S)
    task.cancel()
    await ws.close()
    for conn in conns:
        conn.close()
    return acked, seen, dropped[0]


def saturation_rate(roost: RoostProcess, devices: list[tuple[str, str]], args: Any) -> float:
    spec = LoadSpec("127.0.0.1", roost.mqtt_port, duration=5, window=args.window, points=1)
    maximum, _ = run_load(spec, devices, args.procs)
    print(f"  maximum here (5 s, with the rules): {maximum.rate:,.0f} msg/s", flush=True)
    return maximum.rate


def latency(args: Any, rate: float, results: Results) -> dict[str, float]:
    with server(args) as roost:
        devices, triggers = provision(roost, args.devices, args.triggers)
        with rules_in_place(roost, rule_set("quiet", 1)):
            time.sleep(0.5)
            if not rate:
                rate = saturation_rate(roost, devices, args) / 2
            trigger_rate = args.triggers / args.latency_seconds
            spec = LoadSpec(
                "127.0.0.1", roost.mqtt_port, duration=args.latency_seconds + 4,
                window=args.window, points=1, rate=max(1.0, rate - trigger_rate),
                ts_base_ms=TS_BASE_MS + 3 * 10**9,
            )  # fmt: skip
            run = LoadRun(spec, devices, args.procs)
            try:
                run.connect()
                run.go(delay=0.1)
                time.sleep(1.5)  # the load reaches its rate
                acked, seen, dropped = asyncio.run(
                    trigger_run(roost, triggers, args.latency_seconds)
                )
                load = run.results(timeout=args.latency_seconds + 300)
            finally:
                run.stop()
            with roost.admin() as api:
                resp = api.get(f"{V1}/alarms", params={"rule_id": TRIGGER_RULE, "limit": 1})
                resp.raise_for_status()
                listed = int(resp.json()["total"])
        errors = roost.unhandled_errors()
        if errors:
            results.fail(f"latency: server logged errors: {errors[:3]}")
    delays = [seen[d] - acked[d] for d in acked if d in seen]
    missed = len([d for d in acked if d not in seen])
    achieved = load.rate + args.triggers / args.latency_seconds
    out = {
        "rate": achieved,
        "target": rate,
        "p50": percentile(delays, 0.5),
        "p95": percentile(delays, 0.95),
        "p99": percentile(delays, 0.99),
        "max": max(delays, default=float("nan")),
        "missed": float(missed),
        "triggers": float(len(triggers)),
        "acked": float(len(acked)),
        "listed": float(listed),
    }
    print(
        f"  alarm latency at {achieved:,.0f} msg/s (target {rate:,.0f}): {len(delays)} of "
        f"{len(triggers)} trigger alarms seen on /ws/alarms; PUBACK → alarm p50 "
        f"{out['p50'] * 1000:.1f} ms, p95 {out['p95'] * 1000:.1f} ms, p99 "
        f"{out['p99'] * 1000:.1f} ms, max {out['max'] * 1000:.1f} ms; missed {missed}; "
        f"{listed} listed by GET /alarms; {dropped} dropped on the stream",
        flush=True,
    )
    if len(acked) != len(triggers):
        results.fail(f"latency: {len(triggers) - len(acked)} trigger points never acknowledged")
    if missed:
        results.fail(f"latency: {missed} alarms not seen on /api/v1/ws/alarms")
    if listed != len(triggers):
        results.fail(f"latency: GET /alarms lists {listed} alarms of {len(triggers)} triggers")
    if load.errors:
        results.fail(f"latency load: {load.last_error}")
    return out


# -- report ---------------------------------------------------------------------------------------


def median(runs: list[dict[str, dict[str, float]]], payload: str, key: str) -> float:
    values = [r[payload][key] for r in runs if payload in r]
    return statistics.median(values) if values else float("nan")


def series(runs: list[dict[str, dict[str, float]]], payload: str, key: str, fmt: str) -> str:
    return " · ".join(format(r[payload][key], fmt) for r in runs if payload in r)


def summarize(
    results: Results, args: Any, runs: dict[str, list[dict[str, dict[str, float]]]],
    lat: dict[str, float] | None,
) -> None:  # fmt: skip
    backend = "PostgreSQL" if args.database_url else "SQLite"
    none = runs.get("none", [])
    for payload in (str(p) for p in args.payloads):
        unit = "msg/s" if payload == "1" else "points/s"
        base = median(none, payload, unit)
        results.figures[f"none {payload}pt {unit}"] = base
        for case in ("quiet", "firing"):
            if not runs.get(case):
                continue
            value = median(runs[case], payload, unit)
            results.figures[f"{case} {payload}pt {unit}"] = value
            ratio = value / base if none else float("nan")
            reads = sum(r[payload]["catch-up reads"] for r in runs[case])
            note = (
                f"{CASE_NAMES[case]}: {series(runs[case], payload, unit, ',.0f')}; "
                f"A: {series(none, payload, unit, ',.0f')}; server CPU µs/message "
                f"{series(runs[case], payload, 'cpu us/msg', '.1f')} (A: "
                f"{series(none, payload, 'cpu us/msg', '.1f')}); engine caught up "
                f"{series(runs[case], payload, 'catch-up s', '.2f')} s after the last PUBACK, "
                f"{reads:.0f} catch-up log reads"
            )
            if case == "firing":
                note += (
                    f"; alarms raised {series(runs[case], payload, 'raised', ',.0f')} for "
                    f"{series(runs[case], payload, 'expected raised', ',.0f')} crossings"
                )
            results.add(
                f"{backend}, {payload} pt/msg, {CASE_NAMES[case]}: {unit}, median of "
                f"{len(runs[case])} ({'B' if case == 'quiet' else 'C'}/A)",
                f"{value:,.0f} ({ratio:.2f}×)" if none else f"{value:,.0f}",
                f"{base:,.0f}" if none else "",
                peer_name="the same, no rules",
                goal="cost ≤ 10 % (≥ 0.90×)" if case == "quiet" and none else "",
                met=ratio >= 0.9 if case == "quiet" and none else None,
                note=note,
            )
    if lat is not None:
        results.figures.update({f"latency {k}": v for k, v in lat.items()})
        results.add(
            f"{backend}, PUBACK → alarm on /api/v1/ws/alarms at {lat['rate']:,.0f} msg/s, "
            "100 rules: p50 / p95 / p99 / max",
            f"{lat['p50'] * 1000:.0f} / {lat['p95'] * 1000:.0f} / {lat['p99'] * 1000:.0f} / "
            f"{lat['max'] * 1000:.0f} ms",
            goal="p99 ≤ 1 s, none missed",
            met=lat["p99"] <= 1.0 and lat["missed"] == 0,
            note=f"{lat['triggers']:.0f} triggers over {args.latency_seconds:.0f} s, "
            f"{lat['missed']:.0f} missed; background target {lat['target']:,.0f} msg/s "
            "(half the maximum)",
        )


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time per phase")
    parser.add_argument("--rounds", type=int, default=2, help="servers per case, interleaved")
    parser.add_argument("--cases", default=",".join(CASES), help="of none,quiet,firing")
    parser.add_argument("--payloads", default="1,100", help="points per message: 1 and/or 100")
    parser.add_argument("--window", type=int, default=20, help="QoS 1 in flight per connection")
    parser.add_argument("--window-100", type=int, default=4, help="the same, 100-point messages")
    parser.add_argument("--procs", type=int, default=1, help="load generator processes")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="latency run: total msg/s (default: half max)"
    )
    parser.add_argument("--triggers", type=int, default=200, help="latency run: trigger devices")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--no-latency", action="store_true", help="skip part 2")
    parser.add_argument("--no-throughput", action="store_true", help="skip part 1")
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="run on PostgreSQL: a server URL in which a fresh database is made per server",
    )
    args = parser.parse_args()
    if args.quick:
        args.devices, args.seconds = min(args.devices, 100), min(args.seconds, 3.0)
        args.rounds, args.triggers = 1, min(args.triggers, 20)
        args.latency_seconds = min(args.latency_seconds, 4.0)
    args.payloads = [int(p) for p in args.payloads.split(",")]
    cases = [c for c in CASES if c in args.cases.split(",")]
    started = time.monotonic()
    results = Results("rules", "Rules on the ingest path: 100 threshold rules, alarm latency")
    print(
        f"rules: {args.devices} devices, {RULES} rules, {args.seconds:.0f} s a phase, "
        f"{args.rounds} round(s) of {', '.join(cases)}; generator and server share "
        f"{multiprocessing.cpu_count()} cores; load average before: {load_average():.2f}",
        flush=True,
    )
    runs: dict[str, list[dict[str, dict[str, float]]]] = {c: [] for c in cases}
    if not args.no_throughput:
        for rnd in range(args.rounds):
            for case in cases:
                runs[case].append(one_server(args, case, rnd, results))
    lat = None
    if not args.no_latency:
        rate = args.rate or (median(runs["none"], "1", "msg/s") / 2 if runs.get("none") else 0.0)
        rate = rate if math.isfinite(rate) else 0.0
        lat = latency(args, rate, results)
    print(
        f"load average after: {load_average():.2f}; took {time.monotonic() - started:.0f} s",
        flush=True,
    )
    summarize(results, args, runs, lat)
    results.write(args.json)
    return results.exit_code()


if __name__ == "__main__":
    sys.exit(main())
