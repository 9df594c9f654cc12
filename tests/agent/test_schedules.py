"""Offline autonomy: the agent mirrors the device's command schedules and fires them while the
server is away; the result reaches the server's command of that fire when it is back, once.

The first test runs the issue's case through real doors: a real ``roost serve`` is stopped, the
``roost-agent`` subprocess fires a schedule's hook, is itself restarted offline (its mirror on
disk), fires a second one, and once the server is back each fire's command is SUCCEEDED with the
agent's result while each hook ran exactly once. The others reach inside an in-process
:class:`Schedules` with a small stand-in for the agent (its link's ``connected`` flag decides
"offline"), against a real server.
"""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from roost_agent.config import Config, load_config
from roost_agent.handlers import Handlers
from roost_agent.schedules import Schedules, fire_key, iso, next_fire, parse_time

from roost.commands.cron import next_fire as server_next_fire
from roost.commands.cron import parse_timezone
from tests.agent.support import AgentProcess, write_config
from tests.support import (
    Api,
    RoostServer,
    admin_client,
    eventually,
    free_port,
    make_device,
)


def ts(value: str) -> datetime:
    at = parse_time(value)
    assert at is not None, value
    return at


def write_hook(hooks: Path, name: str, marks: Path) -> None:
    """A command hook that appends a line (time, offline flag, fire) to ``marks``."""
    path = hooks / "commands" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$(date +%s.%N) {name} offline=${{ROOST_OFFLINE:-0}} fire=${{ROOST_FIRE_AT:-}}"'
        f" >> '{marks}'\n"
        f'echo \'{{"light": "on", "by": "{name}"}}\'\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def schedule(api: Api, device_id: str, **body: Any) -> dict[str, Any]:
    resp = api.post(f"/api/v1/devices/{device_id}/command-schedules", json=body)
    assert resp.status_code == 201, resp.text
    record: dict[str, Any] = resp.json()
    return record


def commands_of(api: Api, device_id: str, schedule_id: str) -> list[dict[str, Any]]:
    resp = api.get(f"/api/v1/devices/{device_id}/commands", params={"limit": 100})
    assert resp.status_code == 200, resp.text
    return [c for c in resp.json()["items"] if c["schedule_id"] == schedule_id]


# -- through the real doors --------------------------------------------------------------------


def test_a_schedule_fires_while_the_server_is_down_and_its_result_arrives_after(
    tmp_path: Path,
) -> None:
    server = RoostServer(tmp_path / "server", mqtt_port=free_port())
    server.start()
    agent: AgentProcess | None = None
    try:
        with admin_client(server) as api:
            device = make_device(api)
            hooks, marks = tmp_path / "hooks", tmp_path / "marks.txt"
            write_hook(hooks, "alarm_light_on", marks)
            write_hook(hooks, "alarm_light_off", marks)
            # One fire before the agent restarts offline, one after (from its mirror on disk).
            now = datetime.now(UTC)
            first = schedule(
                api, device.id, name="alarm_light_on", params={"level": 2},
                schedule_at=iso(now + timedelta(seconds=22)),
            )  # fmt: skip
            second = schedule(
                api, device.id, name="alarm_light_off", schedule_at=iso(now + timedelta(seconds=34))
            )
            local_port = free_port()
            config = write_config(
                tmp_path / "agent.toml", server, device.id, device.token,
                local_port=local_port, sections={"hooks": {"dir": str(hooks)}},
            )  # fmt: skip
            data_dir = load_config(config).data_dir
            agent = AgentProcess(config, local_port).start()

            def mirrored() -> bool:
                path = data_dir / "schedules.json"
                items = json.loads(path.read_text())["items"] if path.exists() else []
                return {i["id"] for i in items} == {first["id"], second["id"]}

            eventually(mirrored, timeout=20)
            server.stop()
            assert datetime.now(UTC) < ts(first["schedule_at"]), "too slow to test: try again"

            # The first fires with the server down: the hook runs, offline.
            eventually(lambda: len(lines(marks)) == 1, timeout=40)
            assert "alarm_light_on offline=1" in lines(marks)[0], agent.log()
            assert f"fire={iso(ts(first['schedule_at']))}" in lines(marks)[0]

            # The agent restarts while the server is still down: the second fires from the
            # mirror it kept on disk.
            agent.stop()
            agent.start()
            eventually(lambda: len(lines(marks)) == 2, timeout=40)
            assert "alarm_light_off offline=1" in lines(marks)[1], agent.log()

            # The server comes back, fires what it missed (once each), and the agent answers
            # each command with the run it made offline.
            server.start()
            finished: list[dict[str, Any]] = []
            for made in (first, second):

                def succeeded(made: dict[str, Any] = made) -> dict[str, Any] | None:
                    found = commands_of(api, device.id, made["id"])
                    return found[0] if found and found[0]["status"] == "SUCCEEDED" else None

                finished.append(eventually(succeeded, timeout=90))
                assert len(commands_of(api, device.id, made["id"])) == 1
            # Each hook ran exactly once: the commands were answered, not run again.
            assert len(lines(marks)) == 2, lines(marks)
            for made, done in zip((first, second), finished, strict=True):
                assert done["result"] == {"light": "on", "by": made["name"]}
                assert ts(done["schedule_at"]) == ts(made["schedule_at"])
                details = done["status_details"]
                assert details is not None, done
                assert ts(details["fire_at"]) == ts(made["schedule_at"])
                assert ts(details["ran_offline_at"]) < ts(done["created_at"])

            # The runs were reported as events too (store-and-forward).
            def reported() -> list[dict[str, Any]]:
                resp = api.get(
                    f"/api/v1/devices/{device.id}/events",
                    params={"type": "schedule_fired_offline"},
                )
                assert resp.status_code == 200, resp.text
                items: list[dict[str, Any]] = resp.json()["items"]
                return items if len(items) == 2 else []

            events = eventually(reported, timeout=30)
            text = json.dumps(events)
            assert first["id"] in text and second["id"] in text and "SUCCEEDED" in text
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


# -- inside the mirror -------------------------------------------------------------------------


@dataclass
class StandInLink:
    """What :class:`Schedules` uses of the link: ``connected`` and ``on_connect``."""

    connected: threading.Event = field(default_factory=threading.Event)
    callbacks: list[Callable[[], None]] = field(default_factory=list)

    def on_connect(self, fn: Callable[[], None]) -> None:
        self.callbacks.append(fn)


@dataclass
class StandInAgent:
    """What :class:`Schedules` uses of the agent; workers are plain threads."""

    config: Config
    link: StandInLink = field(default_factory=StandInLink)
    events: list[dict[str, Any]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.handlers = Handlers(self.config)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        thread = threading.Thread(target=fn, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def enqueue(self, kind: str, items: list[dict[str, Any]]) -> int:
        assert kind == "events"
        self.events.extend(items)
        return len(items)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[RoostServer, Api]]:
    server = RoostServer(tmp_path / "server", mqtt_port=free_port())
    server.start()
    api = admin_client(server)
    try:
        yield server, api
    finally:
        api.close()
        server.stop()


def test_the_mirror_fires_offline_answers_the_servers_command_and_survives_a_restart(
    tmp_path: Path, live: tuple[RoostServer, Api]
) -> None:
    server, api = live
    device = make_device(api)
    hooks, marks = tmp_path / "hooks", tmp_path / "marks.txt"
    write_hook(hooks, "touch", marks)
    config = load_config(
        write_config(
            tmp_path / "agent.toml",
            server,
            device.id,
            device.token,
            sections={"hooks": {"dir": str(hooks)}},
        )  # fmt: skip
    )
    at = datetime.now(UTC) + timedelta(seconds=3)
    once = schedule(api, device.id, name="touch", params={"n": 1}, schedule_at=iso(at))
    tick = schedule(api, device.id, name="touch", cron="*/5 * * * *", timezone="Europe/Berlin")
    stand_in = StandInAgent(config)
    schedules = Schedules(stand_in)  # type: ignore[arg-type]
    assert schedules.refresh()
    assert [i["id"] for i in schedules.items()] == [once["id"], tick["id"]]

    # Online, the server's command of a fire claims it: it will not fire here as well, and the
    # next fire follows the server's rule.
    due = ts(tick["next_fire_at"])
    message = {"id": "cmd-1", "name": "touch", "schedule_id": tick["id"], "fire_at": iso(due)}
    assert schedules.answer_for(message) is None
    assert schedules.answer_for({"id": "cmd-2", "name": "touch"}) is None  # not a schedule's
    following = server_next_fire("*/5 * * * *", parse_timezone("Europe/Berlin"), 0, due)
    assert following is not None
    with schedules._cond:
        assert schedules._due(schedules.items()[1]) == following

    # Offline (the link is down), the one-off fires here when it is due, and only once.
    schedules.start()
    try:
        eventually(lambda: len(lines(marks)) == 1, timeout=20)
        record = eventually(
            lambda: [r for r in schedules.runs() if r.get("state") == "done"], timeout=20
        )[0]
    finally:
        schedules.stop()
    assert "touch offline=1" in lines(marks)[0] and f"fire={iso(at)}" in lines(marks)[0]
    assert record["key"] == fire_key(once["id"], at)
    assert record["status"] == "SUCCEEDED" and record["result"] == {"light": "on", "by": "touch"}
    assert [(e["event"], e["schedule_id"], e["status"]) for e in stand_in.events] == [
        ("schedule_fired_offline", once["id"], "SUCCEEDED")
    ]

    # Restarted while the server is down: the mirror and the runs come from disk.
    server.stop()
    again = Schedules(StandInAgent(config))  # type: ignore[arg-type]
    assert not again.refresh()
    assert [i["id"] for i in again.items()] == [once["id"], tick["id"]]
    with again._cond:
        assert again._due(again.items()[0]) is None  # the one-off is done
    # The server's command of the fire that ran offline gets that run as its answer.
    answer = again.answer_for(
        {"id": "cmd-3", "name": "touch", "schedule_id": once["id"], "fire_at": iso(at)}
    )
    assert answer is not None
    assert answer["status"] == "SUCCEEDED"
    assert answer["result"] == {"light": "on", "by": "touch"}
    assert ts(answer["status_details"]["ran_offline_at"]) >= at
    assert ts(answer["status_details"]["fire_at"]) == at
    assert len(lines(marks)) == 1


def test_online_the_server_fires_and_a_link_that_only_looks_up_fires_here_after_a_grace(
    tmp_path: Path, live: tuple[RoostServer, Api]
) -> None:
    server, api = live
    device = make_device(api)
    hooks, marks = tmp_path / "hooks", tmp_path / "marks.txt"
    write_hook(hooks, "touch", marks)
    config = load_config(
        write_config(
            tmp_path / "agent.toml",
            server,
            device.id,
            device.token,
            sections={"hooks": {"dir": str(hooks)}},
        )  # fmt: skip
    )
    now = datetime.now(UTC)
    online_at, stale_at = now + timedelta(seconds=2), now + timedelta(seconds=12)
    by_server = schedule(api, device.id, name="touch", schedule_at=iso(online_at))
    schedule(api, device.id, name="touch", params={"n": 2}, schedule_at=iso(stale_at))
    stand_in = StandInAgent(config)
    stand_in.link.connected.set()  # the link looks up throughout
    schedules = Schedules(stand_in)  # type: ignore[arg-type]
    schedules.grace_s = 1.0
    assert schedules.refresh()
    schedules.start()
    try:
        # The first is due while the server is there: it fires it (this stand-in receives no
        # MQTT), and after the grace the agent's look at the server shows it moved on.
        eventually(lambda: by_server["id"] not in [i["id"] for i in schedules.items()], 20)
        assert lines(marks) == [] and schedules.runs() == []
        assert [c["status"] for c in commands_of(api, device.id, by_server["id"])] == ["QUEUED"]
        # The second is due once the server has gone without the link noticing: after the grace
        # the agent cannot reach the server and fires it here.
        server.stop()
        assert datetime.now(UTC) < stale_at, "too slow to test: try again"
        eventually(lambda: len(lines(marks)) == 1, timeout=30)
    finally:
        schedules.stop()
    assert f"fire={iso(stale_at)}" in lines(marks)[0]
    assert [r["fire_at"] for r in schedules.runs()] == [iso(stale_at)]


# -- the maths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "zone", "offset_s", "start"),
    [
        ("0 18 * * 1-5", "Europe/Berlin", -10800, "2026-03-26T12:00:00Z"),  # spring change
        ("30 2 * * *", "Europe/Berlin", 0, "2026-03-27T00:00:00Z"),  # a skipped local time
        ("30 2 * * *", "Europe/Berlin", 0, "2026-10-23T00:00:00Z"),  # a repeated local time
        ("*/7 * * * *", "America/New_York", 90, "2026-11-01T04:00:00Z"),
        ("0 0 29 2 *", "UTC", 0, "2026-01-01T00:00:00Z"),
    ],
)
def test_the_agent_computes_the_servers_fires(
    cron: str, zone: str, offset_s: int, start: str
) -> None:
    after = ts(start)
    ours, theirs = after, after
    for _ in range(12):
        ours_next = next_fire(cron, zone, offset_s, ours)
        theirs_next = server_next_fire(cron, parse_timezone(zone), offset_s, theirs)
        assert ours_next == theirs_next
        assert ours_next is not None
        ours = theirs = ours_next


def test_timestamps_in_the_servers_forms_parse() -> None:
    at = datetime(2026, 12, 7, 16, 0, 0, 500000, tzinfo=UTC)
    for text in (
        "2026-12-07T16:00:00.500000Z",
        "2026-12-07T16:00:00.5Z",
        "2026-12-07T17:00:00.5+01:00",
    ):
        assert parse_time(text) == at
    assert parse_time("2026-12-07T16:00:00") is None  # no zone: not a time to act on
    assert parse_time("soon") is None and parse_time(None) is None
    assert iso(at) == "2026-12-07T16:00:00.500000Z"
    assert fire_key("sch-1", at) == fire_key("sch-1", ts(iso(at)))
