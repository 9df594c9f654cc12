"""The agent: one process that owns the device's link to Roost and everything built on it.

:class:`Agent` wires the parts together (each lives in its own module):

* the outbox (:mod:`roost_agent.store`) and the forwarder (:mod:`roost_agent.forwarder`):
  store-and-forward of telemetry and events, exactly once end to end;
* the MQTT link (:mod:`roost_agent.link`), reconnecting with backoff;
* the local API and the edge metadata service (:mod:`roost_agent.localapi`,
  :mod:`roost_agent.metadata`);
* the handlers and their dispatcher (:mod:`roost_agent.handlers`, :mod:`roost_agent.dispatch`):
  commands, desired state, jobs;
* OTA installs of the software-delivery jobs (:mod:`roost_agent.ota`);
* the device's command schedules, mirrored and fired offline (:mod:`roost_agent.schedules`);
* system health as telemetry, and the ``diagnostics`` command (:mod:`roost_agent.health`,
  :mod:`roost_agent.diagnostics`).

Used from Python (handlers registered with decorators before :meth:`Agent.run`)::

    agent = Agent(load_config(Path("/etc/roost-agent.toml")))

    @agent.handlers.command("reboot")
    def reboot(params: dict) -> dict: ...

    agent.run()   # until SIGTERM / SIGINT
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from roost_agent import __version__
from roost_agent.config import Config
from roost_agent.credentials import Rotation, register_rotation
from roost_agent.diagnostics import register_diagnostics
from roost_agent.dispatch import Dispatcher
from roost_agent.forwarder import Forwarder
from roost_agent.handlers import Handlers
from roost_agent.health import Health
from roost_agent.link import Link
from roost_agent.localapi import LocalApi
from roost_agent.metadata import Metadata
from roost_agent.ota import register_ota
from roost_agent.schedules import Schedules, register_schedules
from roost_agent.store import Outbox

logger = logging.getLogger(__name__)

# Threads that run handler work (commands, deltas, jobs, metadata reads): enough that a long
# job does not hold back a command, few enough for a Raspberry Pi Zero.
WORKERS = 4


class Agent:
    """The device agent: start it, stop it, or :meth:`run` it until a signal."""

    def __init__(self, config: Config) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(config.queue_path, config.queue_max_bytes, config.queue_when_full)
        self.link = Link(config)
        self.handlers = Handlers(config)
        self.metadata = Metadata(config)
        self.forwarder = Forwarder(self.outbox, self.link, config.batch_points)
        self.dispatcher = Dispatcher(self)
        self.local_api = LocalApi(self)
        self.health = Health(self)
        register_diagnostics(self)
        register_ota(self)  # sets self.ota
        self.rotation: Rotation = register_rotation(self)  # roost.rotate_credentials
        self.schedules: Schedules | None = None  # made by start(): its thread starts at once
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._started_at: float | None = None

    # -- what the parts use ----------------------------------------------------------------------

    def enqueue(self, kind: str, items: list[dict[str, Any]]) -> int:
        """Queue telemetry or events durably (raises QueueFull); the number of points queued."""
        return self.outbox.put(kind, items)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on a worker thread; an exception is logged, never lost silently."""
        pool = self._pool
        if pool is None:
            logger.debug("not running: %s dropped", getattr(fn, "__name__", fn))
            return

        def call() -> None:
            try:
                fn(*args)
            except Exception:
                logger.exception("%s failed", getattr(fn, "__qualname__", fn))

        try:
            pool.submit(call)
        except RuntimeError:  # shutting down
            logger.debug("stopping: %s dropped", getattr(fn, "__name__", fn))

    def status(self) -> dict[str, Any]:
        """What the local API's /v1/status and ``roost-agent`` report."""
        started = self._started_at
        return {
            "device_id": self.config.device_id,
            "version": __version__,
            "connected": self.link.connected.is_set(),
            "server": self.link.where,
            "uptime_s": None if started is None else round(time.monotonic() - started, 1),
            "queue": self.outbox.stats(),
            "forwarded": self.forwarder.stats(),
        }

    # -- life --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every part in the background (the local API is listening when this returns)."""
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="roost-worker")
        self._started_at = time.monotonic()
        self.dispatcher.attach()
        self.schedules = register_schedules(self)
        self.link.on_connect(lambda: self.submit(self.metadata.refresh))
        self.forwarder.start()
        self.link.start()
        self.local_api.start()
        self.health.start()
        stats = self.outbox.stats()
        logger.info(
            "roost-agent %s for %s: %d points queued, server %s",
            __version__,
            self.config.device_id,
            stats["queued_points"],
            self.link.where,
        )

    def stop(self) -> None:
        """Stop every part; what is queued stays on disk for the next start."""
        self._stop.set()
        parts: list[tuple[str, Any]] = [("health", self.health)]
        if self.schedules is not None:
            parts.append(("schedules", self.schedules))
        for name, part in (
            *parts,
            ("local API", self.local_api),
            ("forwarder", self.forwarder),
            ("link", self.link),
        ):
            _stop_part(name, part)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self.outbox.close()
        logger.info("roost-agent stopped")

    def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, stop (a second signal exits at once)."""

        def on_signal(signum: int, frame: Any) -> None:
            if self._stop.is_set():
                logger.warning("second %s: exiting now", signal.Signals(signum).name)
                os._exit(1)
            logger.info("%s: stopping", signal.Signals(signum).name)
            self._stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self._stop.wait(3600):
                pass
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _stop_part(name: str, part: Any) -> None:
    """Stop one part; a failure is logged and the others still stop."""
    try:
        part.stop()
    except Exception:
        logger.exception("stopping the %s failed", name)
