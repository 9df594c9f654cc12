"""System health as telemetry: CPU, memory, disk, temperature, uptime, the agent's own memory.

Read from ``/proc`` and ``/sys`` (no psutil: the agent keeps its dependencies few), sampled every
``[health] interval_s`` seconds by a thread that sleeps in between (idle cost ≈ 0) and queued
like any local app's points, so they are forwarded in order when the link is up::

    {"ts": 1765100000000, "values": {"agent_cpu_pct": 3.1, "agent_mem_used_pct": 41.2, ...}}

Sensor ids are slugs (the server refuses ``/`` in a sensor id; its path tree is a separate field):

===========================  ================================================================
``agent_cpu_pct``            CPU busy in the last interval, all cores (from ``/proc/stat``)
``agent_load1``              the one-minute load average
``agent_mem_used_pct``       memory in use: (MemTotal - MemAvailable) / MemTotal
``agent_mem_available_bytes``  MemAvailable (``/proc/meminfo``)
``agent_disk_used_pct``      the data directory's file system, as ``df`` counts it
``agent_disk_free_bytes``    bytes available to the agent there
``agent_temp_c``             the hottest thermal zone (``/sys/class/thermal``); absent: none
``agent_uptime_s``           seconds since boot (``/proc/uptime``)
``agent_rss_bytes``          the agent's resident memory (``/proc/self/statm``)
``agent_queue_points``       points waiting in the agent's queue (the link down: it grows)
===========================  ================================================================

A value the system cannot give (no thermal zone, not Linux) is left out, never sent as 0.

The agent also reports its own status as the device's named state ``agent`` (reported section,
``devices/{id}/state/name/agent/reported``), which the server's Agents page and metrics read::

    {"version": "0.15.0", "python": "3.11.2",
     "queue": {"points": 12, "bytes": 3400, "dropped": 0, "refused": 0},
     "forwarded_points": 5120, "connected_since": 1765100000000, "started_at": 1765099990000}

(times in epoch milliseconds; ``refused``: points the server refused). It is sent on every
connect; then checked every ``[health] interval_s`` and sent when something an operator acts on
changed (the version, the start, the connection, dropped or refused points, whether a backlog
waits: see :func:`significant`); and with its exact counters at least every ``[health]
status_refresh_s`` (10 minutes), also when ``interval_s`` is 0, which only turns the system
metrics off. Counters alone do not trigger a report: each report is a row of the device's state
history, and a busy device's counters change at every look.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from roost_agent.agent import Agent

log = logging.getLogger(__name__)

PROC = Path("/proc")
THERMAL = Path("/sys/class/thermal")
#: Values are rounded to this many decimals: more is noise, and it keeps each point small.
DECIMALS = 2
#: A sensor's prefix: every health sensor of a device sorts together in the console.
PREFIX = "agent_"
#: The named state the agent reports its status in (the server's agents room reads it).
STATE_NAME = "agent"
#: The default of ``[health] status_refresh_s``: an unchanged status is sent again after this
#: long, so the server's "last report" tells an agent that runs quietly from one that is gone
#: without filling the state history.
STATUS_REFRESH_S = 600.0
#: The shortest sleep of the thread: a burst of wake-ups (reconnects) does not spin it.
MIN_WAIT_S = 0.05
#: After a report failed, the next try waits this long (the failure is logged once per try).
RETRY_S = 5.0

#: (busy, total) jiffies of all CPUs since boot.
CpuTimes = tuple[int, int]


def cpu_times(proc: Path = PROC) -> CpuTimes | None:
    """(busy, total) jiffies from the ``cpu`` line of ``/proc/stat``; None where unreadable."""
    try:
        with open(proc / "stat") as handle:
            first = handle.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    fields = [int(x) for x in first[1:9]]
    total = sum(fields)
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return total - idle, total


def cpu_percent(before: CpuTimes, after: CpuTimes) -> float | None:
    """CPU busy between two readings, in percent of all cores; None without elapsed time."""
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * busy / total))


def memory(proc: Path = PROC) -> dict[str, float]:
    """Used percent and available bytes from ``/proc/meminfo``."""
    info: dict[str, int] = {}
    try:
        with open(proc / "meminfo") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    info[name] = int(parts[0]) * 1024  # kB
    except OSError:
        return {}
    total, available = info.get("MemTotal"), info.get("MemAvailable")
    if not total or available is None:
        return {}
    return {
        "mem_used_pct": 100.0 * (total - available) / total,
        "mem_available_bytes": float(available),
    }


def disk(path: Path) -> dict[str, float]:
    """Used percent (as ``df`` computes it: used / (used + available)) and free bytes."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return {}
    used = (stat.f_blocks - stat.f_bfree) * stat.f_frsize
    available = stat.f_bavail * stat.f_frsize
    if used + available <= 0:
        return {}
    return {"disk_used_pct": 100.0 * used / (used + available), "disk_free_bytes": float(available)}


def temperature(thermal: Path = THERMAL) -> float | None:
    """The hottest thermal zone in °C, or None when the system has none."""
    hottest: float | None = None
    try:
        zones = sorted(thermal.glob("thermal_zone*/temp"))
    except OSError:
        return None
    for zone in zones:
        try:
            value = int(zone.read_text().strip()) / 1000.0  # millidegrees
        except (OSError, ValueError):
            continue
        if hottest is None or value > hottest:
            hottest = value
    return hottest


def uptime(proc: Path = PROC) -> float | None:
    """Seconds since boot."""
    try:
        return float((proc / "uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def own_rss(proc: Path = PROC) -> float | None:
    """This process's resident memory in bytes."""
    try:
        pages = int((proc / "self" / "statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return float(pages * os.sysconf("SC_PAGE_SIZE"))


def snapshot(data_dir: Path, cpu_pct: float | None = None) -> dict[str, float]:
    """Every reading the system gives now, keyed without the sensor prefix."""
    values: dict[str, float | None] = {"cpu_pct": cpu_pct}
    try:
        values["load1"] = os.getloadavg()[0]
    except (OSError, AttributeError):
        pass
    values.update(memory())
    values.update(disk(data_dir))
    values["temp_c"] = temperature()
    values["uptime_s"] = uptime()
    values["rss_bytes"] = own_rss()
    return {name: value for name, value in values.items() if value is not None}


def significant(status: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What of a status report is worth a report of its own when it changes."""
    if status is None:
        return None
    queue = status.get("queue") or {}
    return (
        status.get("version"),
        status.get("python"),
        status.get("started_at"),
        status.get("connected_since"),
        queue.get("dropped"),
        queue.get("refused"),
        bool(queue.get("points")),
    )


def _millis(moment: float | None) -> int | None:
    return None if moment is None else int(moment * 1000)


class Health:
    """Samples the system every ``config.health_interval_s`` and queues it as telemetry, and
    reports the agent's status as the named state ``agent`` (module docstring)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.interval_s = float(agent.config.health_interval_s)
        self.refresh_s = float(agent.config.status_refresh_s)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu: CpuTimes | None = None
        self._started_at: float | None = None
        self._connected_since: float | None = None
        self._connect_seen = False  # a connect since the last report: send it whatever it holds
        self._reported: dict[str, Any] | None = None
        self._reported_at = float("-inf")
        agent.link.on_connect(self._on_connect)

    def start(self) -> None:
        """Start the thread: system samples (unless the interval is 0) and status reports."""
        if self._thread is not None:
            return
        self._started_at = time.time()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="roost-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (returns once the thread has ended)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def sample(self) -> dict[str, Any]:
        """One telemetry item of the current readings (CPU: since the previous sample)."""
        now = cpu_times()
        cpu_pct = cpu_percent(self._cpu, now) if self._cpu and now else None
        self._cpu = now
        values = snapshot(self.agent.config.data_dir, cpu_pct)
        try:
            values["queue_points"] = float(self.agent.outbox.stats()["queued_points"])
        except Exception:  # the queue's count is a nicety; the readings go out without it
            pass
        return {
            "ts": int(time.time() * 1000),
            "values": {PREFIX + name: round(value, DECIMALS) for name, value in values.items()},
        }

    def status(self) -> dict[str, Any]:
        """The agent's status as it reports it in the state ``agent`` (from Agent.status())."""
        current = self.agent.status()
        queue = current.get("queue") or {}
        forwarded = current.get("forwarded") or {}
        connected = current.get("connected")
        return {
            "version": current.get("version"),
            "python": platform.python_version(),
            "queue": {
                "points": queue.get("queued_points"),
                "bytes": queue.get("queued_bytes"),
                "dropped": queue.get("dropped_points"),
                "refused": forwarded.get("refused_points"),
            },
            "forwarded_points": forwarded.get("sent_points"),
            "connected_since": _millis(self._connected_since) if connected else None,
            "started_at": _millis(self._started_at),
        }

    def report_status(self, *, force: bool = False) -> bool:
        """Publish the status when connected and it changed (or is due); whether it was sent."""
        link = self.agent.link
        if not link.connected.is_set():
            return False
        if self._connected_since is None:  # connected before our hook was registered
            self._connected_since = time.time()
        status = self.status()
        due = time.monotonic() - self._reported_at >= self.refresh_s
        if not force and not due and significant(status) == significant(self._reported):
            return False
        link.publish(link.topic(f"state/name/{STATE_NAME}/reported"), json.dumps(status).encode())
        self._reported, self._reported_at = status, time.monotonic()
        return True

    def _on_connect(self) -> None:
        # paho's network thread: note the time and wake the health thread, nothing more.
        self._connected_since = time.time()
        self._connect_seen = True
        self._wake.set()

    def _run(self) -> None:
        # The first sample goes out at once (without CPU: that needs two readings).
        next_sample = time.monotonic()
        while not self._stopping.is_set():
            self._wake.clear()
            if self.interval_s > 0 and time.monotonic() >= next_sample:
                try:
                    self.agent.enqueue("telemetry", [self.sample()])
                except Exception as exc:  # a full queue under "refuse", a closing store
                    log.warning("health sample not queued: %s", exc)
                next_sample = time.monotonic() + self.interval_s
            force, self._connect_seen = self._connect_seen, False
            floor = MIN_WAIT_S
            try:
                self.report_status(force=force)
            except Exception as exc:  # the link closing under us: try again a little later
                log.warning("agent status not reported: %s", exc)
                self._connect_seen, floor = True, RETRY_S
            now = time.monotonic()
            if self.agent.link.connected.is_set():
                wait = self._reported_at + self.refresh_s - now
            else:
                wait = self.refresh_s  # the next connect wakes the thread
            if self.interval_s > 0:
                wait = min(wait, next_sample - now)
            self._wake.wait(max(floor, wait))
