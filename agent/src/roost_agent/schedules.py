"""Offline autonomy: the device's command schedules, mirrored here and fired while it is offline.

"Switch the alarm light on three hours before each match" must happen when the network is down.
The agent mirrors the device's schedules (``GET /api/v1/device/command-schedules``, on every
connect and every :data:`REFRESH_S` while online; cached in ``data_dir/schedules.json`` so a
restart offline keeps them) and computes their fires with the server's rules (a five-field cron
in an IANA zone plus ``offset_s``, or once at ``schedule_at``; cronsim, as the server).

Who fires: while the link is up the server does, as usual: its command arrives and the
dispatcher runs it. A fire that comes due while the link is down runs here, through the same
handler or hook the command would (``ROOST_SCHEDULE_ID``, ``ROOST_FIRE_AT`` and
``ROOST_OFFLINE=1`` in a hook's environment). The link can look up while the server is in fact
gone (a keepalive not yet missed): a fire whose command has not come :data:`GRACE_S` after it
was due makes the agent ask the server for the schedules; if the server cannot be reached the
fire runs here, else the server is in charge (its mirror, refreshed, says whether it fired).

Each fire is kept in ``data_dir/schedule-runs.json`` by (schedule id, due time): a local run's
status and result, or that the server's command for it arrived. The server fires every schedule
for an offline device too (a fire missed while the server itself was down happens once when it
is back, with the time it was due), and its command carries ``schedule_id`` and ``fire_at``: the
dispatcher asks :meth:`Schedules.answer_for`, which answers a fire that ran here with that run
(SUCCEEDED/FAILED, the result, ``status_details.ran_offline_at``), so nothing runs twice. Every
local run is also queued as an event ``schedule_fired_offline`` (store-and-forward), so fires the
server never sends a command for (a cron fire passed while the server was down) are reported too.

Missed fires follow the server: a fire that passed while the agent was not running (and the link
was down) happens once when it starts, then the rhythm resumes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from roost_agent.credentials import authorize
from roost_agent.handlers import HandlerError

if TYPE_CHECKING:
    from roost_agent.agent import Agent

log = logging.getLogger(__name__)

UTC = timezone.utc
API_PATH = "/api/v1/device/command-schedules"
#: The mirror is read again this often while online (and on every connect): an edit made while
#: the device was online reaches it within minutes even without a reconnect.
REFRESH_S = 300.0
#: A fire due while the link looks up waits this long for the server's command before the agent
#: checks whether the server is there at all (commands reach a connected device in well under
#: a second; a dead connection can look alive for up to 1.5 keepalives).
GRACE_S = 30.0
#: After a failed refresh while online, the next try waits this long (not one per loop pass).
RETRY_S = 30.0
#: The firing loop looks again at least this often (clock changes, a refreshed mirror).
IDLE_WAKE_S = 60.0
#: While a fire waits for the server's command it checks the link this often.
WAITING_POLL_S = 1.0
#: Fires remembered: a device away for days with a schedule every few minutes still finds the
#: run of each command the server queued meanwhile.
MAX_RUNS = 2000
HTTP_TIMEOUT_S = 10.0
#: A local run's result is kept like a command's (the server refuses results over 64 KiB).
MAX_RESULT_BYTES = 64 * 1024
#: The event queued for every local run (fires the server sends no command for are reported).
EVENT = "schedule_fired_offline"

_FRACTION = re.compile(r"\.(\d+)")


# -- time --------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (``Z`` or an offset) as an aware datetime; None when it is not one."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python 3.9's fromisoformat takes only 3 or 6 fraction digits.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def iso(at: datetime) -> str:
    """``at`` in UTC as RFC 3339 with a ``Z``."""
    text = at.astimezone(UTC).isoformat()
    return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text


def fire_key(schedule_id: str, at: datetime) -> str:
    """One fire of one schedule: its id and due time (to the millisecond)."""
    return f"{schedule_id}@{round(at.timestamp() * 1000)}"


def next_fire(cron: str, zone: str, offset_s: int, after: datetime) -> datetime | None:
    """The first fire strictly after ``after``: an event of ``cron`` in ``zone`` plus
    ``offset_s`` (elapsed seconds), in UTC; None when none is left (or the rule is unusable).

    The server's rule (roost.commands.cron.next_fire), so both sides agree on every due time.
    """
    shift = timedelta(seconds=offset_s)
    try:
        tz = ZoneInfo(zone)
        event = next(CronSim(cron, (after - shift).astimezone(tz)))
    except (ZoneInfoNotFoundError, ValueError, CronSimError) as exc:
        log.warning("cannot compute fires of %r in %s: %s", cron, zone, exc)
        return None
    except StopIteration:
        return None
    return event.astimezone(UTC) + shift


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- files -------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): starting without it", path, exc)
        return None


def _write_json(path: Path, value: Any) -> None:
    """Replace ``path`` atomically and durably (fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as file:
        json.dump(value, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


# -- the mirror and the firing loop ------------------------------------------------------------


class Schedules:
    """The mirrored schedules, the local fires and their records (see the module docstring)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.config = agent.config
        self.link = agent.link
        self.handlers = agent.handlers
        data_dir = Path(self.config.data_dir)
        self.mirror_path = data_dir / "schedules.json"
        self.runs_path = data_dir / "schedule-runs.json"
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._items: list[dict[str, Any]] = []
        self._fetched_at: str | None = None
        self.grace_s = GRACE_S
        self._next_refresh = 0.0  # monotonic time the loop refreshes the mirror next
        self._refreshing = False
        self._waiting: dict[str, float] = {}  # fire key -> monotonic time it started waiting
        self._runs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._latest: dict[str, datetime] = {}  # schedule id -> its latest fire handled here
        self._load()

    # -- state on disk -----------------------------------------------------------------------

    def _load(self) -> None:
        mirror = _read_json(self.mirror_path)
        if isinstance(mirror, dict) and isinstance(mirror.get("items"), list):
            self._items = [i for i in mirror["items"] if _usable(i)]
            self._fetched_at = mirror.get("fetched_at")
        runs = _read_json(self.runs_path)
        interrupted = 0
        for record in runs if isinstance(runs, list) else []:
            if not isinstance(record, dict) or not isinstance(record.get("key"), str):
                continue
            if record.get("state") == "running":
                # The agent stopped while this fire ran: like a command, it is not run again.
                interrupted += 1
                record.update(
                    state="done",
                    status="FAILED",
                    result="the agent stopped while this fire ran offline; it was not run again",
                    ran_at=record.get("started_at"),
                )
            self._remember(record)
        if interrupted:
            self._save_runs()
        if self._items:
            log.info(
                "%d command schedules from the mirror of %s", len(self._items), self._fetched_at
            )

    def _remember(self, record: dict[str, Any]) -> None:
        """Keep a fire's record (under the lock)."""
        self._runs[record["key"]] = record
        at = parse_time(record.get("fire_at"))
        schedule_id = record.get("schedule_id")
        if at is not None and isinstance(schedule_id, str):
            latest = self._latest.get(schedule_id)
            self._latest[schedule_id] = at if latest is None else max(latest, at)

    def _save_runs(self) -> None:
        """Write the fire records (under the lock)."""
        while len(self._runs) > MAX_RUNS:
            self._runs.popitem(last=False)
        _write_json(self.runs_path, list(self._runs.values()))

    # -- the mirror --------------------------------------------------------------------------

    def items(self) -> list[dict[str, Any]]:
        """The mirrored schedules (copies)."""
        with self._cond:
            return [dict(i) for i in self._items]

    def runs(self) -> list[dict[str, Any]]:
        """The fire records, oldest first (copies)."""
        with self._cond:
            return [dict(r) for r in self._runs.values()]

    def refresh(self) -> bool:
        """Read the device's schedules from the server; False (logged) when it cannot be reached."""
        try:
            body = self._get(API_PATH)
        except (OSError, ValueError, ssl.SSLError) as exc:
            self._next_refresh = time.monotonic() + RETRY_S
            if isinstance(exc, urllib.error.HTTPError):
                # The server answered (an older one without the route, a revoked token):
                # asking again soon would not help.
                self._next_refresh = time.monotonic() + REFRESH_S
                log.warning("reading the command schedules: HTTP %s %s", exc.code, exc.reason)
            else:
                log.info("reading the command schedules failed: %s", exc)
            return False
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            log.warning("the server's command schedules are not a list: %.200r", body)
            return False
        usable = [i for i in items if _usable(i)]
        fetched_at = iso(utcnow())
        with self._cond:
            changed = usable != self._items
            self._items = usable
            self._fetched_at = fetched_at
            self._next_refresh = time.monotonic() + REFRESH_S
            _write_json(self.mirror_path, {"fetched_at": fetched_at, "items": usable})
            self._cond.notify_all()
        if changed:
            log.info("mirrored %d command schedules", len(usable))
        return True

    def _get(self, path: str) -> Any:
        url = self.config.api_url.rstrip("/") + path
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        authorize(request, self.config)  # the current credential (rotation switches it)
        context = None
        if url.startswith("https:"):
            context = ssl.create_default_context(cadata=self.config.ca_certificate or None)
            if self.config.client_cert is not None and self.config.client_key is not None:
                context.load_cert_chain(str(self.config.client_cert), str(self.config.client_key))
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S, context=context) as resp:
            return json.loads(resp.read())

    def _refresh_in_background(self) -> None:
        with self._cond:
            if self._refreshing:
                return
            self._refreshing = True

        def run() -> None:
            try:
                self.refresh()
            finally:
                with self._cond:
                    self._refreshing = False

        self.agent.submit(run)

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        """Refresh on every connect, and start the firing loop."""
        self.link.on_connect(self._refresh_in_background)
        self._thread = threading.Thread(target=self._loop, name="schedules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait_s = self._pass()
            except Exception:  # the loop must outlive any one bad schedule
                log.exception("the schedule pass failed")
                wait_s = IDLE_WAKE_S
            online = self.link.connected.is_set()
            if online and time.monotonic() >= self._next_refresh:
                self._next_refresh = time.monotonic() + RETRY_S  # refresh() sets the real one
                self._refresh_in_background()
            with self._cond:
                if not self._stop.is_set():
                    self._cond.wait(max(0.05, min(wait_s, IDLE_WAKE_S)))

    def _pass(self) -> float:
        """Fire what is due; answer how long until something may be due."""
        now = utcnow()
        wait_s = IDLE_WAKE_S
        waiting, self._waiting = self._waiting, {}
        reachable: bool | None = None  # asked at most once a pass
        for item in self.items():
            with self._cond:
                at = self._due(item)
            if at is None:
                continue
            if at > now:
                wait_s = min(wait_s, (at - now).total_seconds())
                continue
            key = fire_key(item["id"], at)
            if not self.link.connected.is_set():
                self._fire(item, at)
                continue
            # Online: the server's command should be on its way (it is then in the records,
            # and _due has moved on).
            since = waiting.get(key, time.monotonic())
            if time.monotonic() - since < self.grace_s:
                self._waiting[key] = since
                wait_s = min(wait_s, WAITING_POLL_S)
                continue
            if reachable is None:
                reachable = self.refresh()
            if reachable:
                # The server is there: it fires (its refreshed next_fire_at tells whether it
                # did); look again after another grace period.
                self._waiting[key] = time.monotonic()
                wait_s = min(wait_s, WAITING_POLL_S)
            else:
                log.warning("schedule %s: the server cannot be reached; firing here", item["id"])
                self._fire(item, at)
        return wait_s

    def _due(self, item: dict[str, Any]) -> datetime | None:
        """The fire of ``item`` to handle next (maybe past: a missed one); under the lock.

        The mirror's ``next_fire_at`` (which a snooze moved), then past every fire already
        handled here, the way the server moves on: to the first fire after the later of the
        fire's due time and when it was handled (a missed fire happens once).
        """
        at = parse_time(item.get("next_fire_at"))
        latest = self._latest.get(item["id"])
        if at is not None and latest is not None and latest > at and item.get("cron"):
            at = latest  # the mirror predates fires handled here since (old ones forgotten)
        while at is not None:
            record = self._runs.get(fire_key(item["id"], at))
            if record is None:
                return at
            if item.get("cron") is None:
                return None
            handled = parse_time(record.get("started_at")) or at
            at = next_fire(item["cron"], item["timezone"], item["offset_s"], max(at, handled))
        return None

    def _fire(self, item: dict[str, Any], at: datetime) -> None:
        """Claim the fire and run it on a worker (nothing when it is already claimed)."""
        key = fire_key(item["id"], at)
        with self._cond:
            if key in self._runs:
                return
            self._remember(
                {
                    "key": key,
                    "schedule_id": item["id"],
                    "name": item["name"],
                    "fire_at": iso(at),
                    "state": "running",
                    "started_at": iso(utcnow()),
                }
            )
            self._save_runs()
        log.info("schedule %s (%s) due %s fires here, offline", item["id"], item["name"], iso(at))
        self.agent.submit(self._run, key, item, at)

    def _run(self, key: str, item: dict[str, Any], at: datetime) -> None:
        env = {
            "ROOST_COMMAND_NAME": item["name"],
            "ROOST_SCHEDULE_ID": item["id"],
            "ROOST_FIRE_AT": iso(at),
            "ROOST_OFFLINE": "1",
        }
        params = item.get("params") or {}
        try:
            result = self.handlers.run_command(item["name"], params, env)
            if len(json.dumps(result)) > MAX_RESULT_BYTES:
                raise HandlerError(f"the result is over {MAX_RESULT_BYTES} bytes of JSON")
            status = "SUCCEEDED"
        except HandlerError as exc:
            log.warning("schedule %s (%s) failed offline: %s", item["id"], item["name"], exc.reason)
            status, result = "FAILED", exc.reason
        except (TypeError, ValueError) as exc:  # json.dumps: not JSON-able
            status, result = "FAILED", f"the result is not JSON: {exc}"
        except Exception as exc:  # a bug in a handler must still end the record
            log.exception("schedule %s (%s) failed offline", item["id"], item["name"])
            status, result = "FAILED", f"{type(exc).__name__}: {exc}"
        ran_at = utcnow()
        with self._cond:
            record = self._runs.get(key, {"key": key})
            record.update(state="done", status=status, result=result, ran_at=iso(ran_at))
            self._runs[key] = record
            self._save_runs()
            self._cond.notify_all()
        log.info("schedule %s (%s) ran offline: %s", item["id"], item["name"], status)
        self._report(item, at, status, ran_at)

    def _report(self, item: dict[str, Any], at: datetime, status: str, ran_at: datetime) -> None:
        """Queue the run as an event (forwarded when the server is back)."""
        event = {
            "event": EVENT,
            "schedule_id": item["id"],
            "command": item["name"],
            "fire_at": iso(at),
            "status": status,
            "ts": iso(ran_at),
        }
        try:
            self.agent.enqueue("events", [event])
        except Exception as exc:  # the record stays: the command's answer still reports it
            log.warning("could not queue the event of schedule %s: %s", item["id"], exc)

    # -- the server's command of a fire ------------------------------------------------------

    def answer_for(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """The answer to a command the server sent for a fire that ran here, or None: run it.

        ``command`` is the message (``schedule_id`` and ``fire_at`` when a schedule created it).
        A fire not run here is marked as the server's, so it will not fire here as well; one
        still running here is waited for. The answer is ``{"status", "result",
        "status_details": {"ran_offline_at", "fire_at"}}``, to publish as the response.
        """
        schedule_id = command.get("schedule_id")
        at = parse_time(command.get("fire_at"))
        if not isinstance(schedule_id, str) or at is None:
            return None
        key = fire_key(schedule_id, at)
        deadline = time.monotonic() + self.handlers.command_timeout_s + 30
        with self._cond:
            record = self._runs.get(key)
            if record is None:
                self._remember(
                    {
                        "key": key,
                        "schedule_id": schedule_id,
                        "name": command.get("name"),
                        "fire_at": iso(at),
                        "state": "server",
                        "command_id": command.get("id"),
                        "started_at": iso(utcnow()),
                    }
                )
                self._save_runs()
                self._cond.notify_all()
                return None
            while record.get("state") == "running" and time.monotonic() < deadline:
                self._cond.wait(max(0.05, deadline - time.monotonic()))
                record = self._runs.get(key) or {}
            if record.get("state") == "server":
                return None  # the server's fire: run (the dispatcher dedupes command ids)
            if record.get("state") != "done":
                return {
                    "status": "FAILED",
                    "result": "this fire is still running offline; it was not run again",
                }
            record["command_id"] = command.get("id")
            self._save_runs()
        log.info("command %s is schedule %s's fire %s: answering with the offline run",
                 command.get("id"), schedule_id, iso(at))  # fmt: skip
        return {
            "status": record["status"],
            "result": record.get("result"),
            "status_details": {"ran_offline_at": record.get("ran_at"), "fire_at": iso(at)},
        }


def _usable(item: Any) -> bool:
    """Whether a mirrored schedule has what firing needs."""
    if not isinstance(item, dict):
        return False
    if not isinstance(item.get("id"), str) or not isinstance(item.get("name"), str):
        return False
    if item.get("cron") is not None:
        if not isinstance(item.get("cron"), str) or not isinstance(item.get("timezone"), str):
            return False
        if not isinstance(item.get("offset_s"), int):
            return False
    return parse_time(item.get("next_fire_at")) is not None


def register_schedules(agent: Agent) -> Schedules:
    """Mirror the device's schedules and fire them while offline; sets ``agent.schedules``.

    Call after the dispatcher is attached (it asks ``agent.schedules.answer_for``); stop it with
    ``agent.schedules.stop()`` before the workers stop.
    """
    schedules = Schedules(agent)
    setattr(agent, "schedules", schedules)  # noqa: B010 - H1's Agent declares it Optional
    schedules.start()
    return schedules
