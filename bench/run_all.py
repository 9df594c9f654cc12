"""Run every benchmark of bench/ in sequence, each beside its peer, and write BENCHMARKS.md.

    .venv/bin/python bench/run_all.py [--quick] [--only http_ingest,mqtt_ingest,...] [--no-write]

Each benchmark is a script of its own (``--help`` tells what it measures and how); this runs
them one after another as subprocesses with ``--json``, passes the figures one needs from
another (the latency run goes at half of the maximum MQTT rate just measured, Roost's and the DIY
stack's), and rewrites the part of BENCHMARKS.md between the ``figures`` markers: the machine,
the exact commands, the load average around each run, and a table per benchmark. What is outside
the markers (the analysis) is kept. Exits non-zero when a benchmark's correctness check failed
(lost messages, missing points) or a script crashed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.support import load_average, machine

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
ORDER = ["http_ingest", "mqtt_ingest", "mqtt_connections", "ingest_latency", "queries"]
BEGIN = "<!-- figures:begin (written by bench/run_all.py; edit outside these markers) -->"
END = "<!-- figures:end -->"


def run_one(name: str, extra: list[str], out_dir: Path) -> dict[str, Any]:
    json_path = out_dir / f"{name}.json"
    argv = [sys.executable, str(BENCH / f"{name}.py"), "--json", str(json_path), *extra]
    shown = " ".join([".venv/bin/python", f"bench/{name}.py", *extra])
    print(f"\n=== {shown}   (load average {load_average():.2f})", flush=True)
    load_before = load_average()
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT)
    seconds = time.monotonic() - started
    result: dict[str, Any] = {"benchmark": name, "rows": [], "notes": [], "failures": []}
    if json_path.exists():
        result = json.loads(json_path.read_text())
    if done.returncode != 0 and not result.get("failures"):
        result.setdefault("failures", []).append(f"{name}.py exited with {done.returncode}")
    result.update(
        command=shown,
        seconds=seconds,
        load_before=load_before,
        load_after=load_average(),
        returncode=done.returncode,
    )
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        "| case | Roost | peer | goal |",
        "|---|---|---|---|",
    ]
    for row in result.get("rows", []):
        peer = f"{row['peer']} ({row['peer_name']})" if row.get("peer") else ""
        goal = ""
        if row.get("goal"):
            goal = f"{row['goal']}: **{'met' if row.get('met') else 'not met'}**"
        lines.append(f"| {row['case']} | {row['roost']} | {peer} | {goal} |")
    notes = [row for row in result.get("rows", []) if row.get("note")]
    text = "\n".join(lines)
    if notes:
        text += "\n\n" + "\n".join(f"- {row['case']}: {row['note']}" for row in notes)
    for note in result.get("notes", []):
        text += f"\n- {note}"
    if result.get("failures"):
        text += "\n\n**Correctness checks failed:**\n" + "\n".join(
            f"- {failure}" for failure in result["failures"]
        )
    return text


def render(results: list[dict[str, Any]], info: dict[str, str], command: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        BEGIN,
        "",
        f"Figures of `{command}`, {when}.",
        "",
        "Machine: "
        + f"{info['nproc']} cores ({info['cpu']}), {info['ram']} RAM, Linux {info['kernel']}; "
        + f"Python {info['python']}, SQLite {info['sqlite']}, PostgreSQL {info['postgresql']}, "
        + f"{info['influxdb']}, {info['mosquitto']}, {info['nats-server']}. Every server and "
        + "load generator of a run shares these cores (loopback only).",
        "",
    ]
    for result in results:
        parts += [
            f"### {result.get('title', result['benchmark'])}",
            "",
            f"`{result['command']}` — {result['seconds']:.0f} s, load average "
            f"{result['load_before']:.2f} before, {result['load_after']:.2f} after.",
            "",
            table(result),
            "",
        ]
    parts.append(END)
    return "\n".join(parts)


def write(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Figures\n\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke mode for every benchmark")
    parser.add_argument("--only", default=",".join(ORDER), help="comma list, in this order")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true", help="print, do not touch the file")
    parser.add_argument("--profile", metavar="DIR", help="py-spy the Roost servers into DIR")
    args = parser.parse_args()
    chosen = [name for name in ORDER if name in args.only.split(",")]
    common = ["--quick"] if args.quick else []
    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        out_dir = Path(tmp)
        figures: dict[str, float] = {}
        for name in chosen:
            extra = list(common)
            if args.profile and name in {"http_ingest", "mqtt_ingest", "queries"}:
                extra += ["--profile", args.profile]
            if name == "ingest_latency":
                roost_max = figures.get("sqlite 1pt msg/s")
                diy_max = figures.get("diy 1pt msg/s")
                if roost_max:
                    extra += ["--rate", f"{roost_max / 2:.0f}"]
                if diy_max:
                    extra += ["--diy-rate", f"{diy_max / 2:.0f}"]
            result = run_one(name, extra, out_dir)
            figures.update(result.get("figures", {}))
            results.append(result)
    command = " ".join([".venv/bin/python", "bench/run_all.py", *sys.argv[1:]])
    block = render(results, info, command)
    if args.no_write:
        print(block)
    else:
        write(Path(args.output), block)
        print(f"\nwrote {args.output}")
    failed = [r["benchmark"] for r in results if r.get("failures") or r.get("returncode")]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
