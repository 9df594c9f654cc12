"""The presence service over a real Roost (SQLite, in-process bus): changes announced on the bus
exactly once, kept in history, and the sweeper's timer computed from the stored last-seen time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from roost.config import load_settings
from roost.core.access import local_admin
from roost.core.device_identity import DeviceIdentity
from roost.presence.service import PRESENCE_SUBJECT
from roost.runtime import Roost
from roost.store.queries import PageRequest


class Clock:
    """A wall clock the test moves (the presence service reads time only through it)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def roost(tmp_path: Path) -> AsyncIterator[tuple[Roost, Clock]]:
    settings = load_settings({}, data_dir=tmp_path, admin_password="admin-password-for-tests")
    clock = Clock()
    running = Roost.build(settings, clock=clock)
    await running.start(serve=False)
    try:
        yield running, clock
    finally:
        await running.close()


async def test_changes_are_announced_once_and_kept_in_history(
    roost: tuple[Roost, Clock],
) -> None:
    running, clock = roost
    actor = local_admin()
    device = await running.devices.create(actor, {"id": "lamp", "heartbeat_interval_s": 10})
    identity = await _identity(running, "lamp")
    notices: list[dict[str, object]] = []

    async def on_notice(subject: str, data: bytes) -> None:
        notices.append(orjson.loads(data))

    sub = await running.bus.subscribe(PRESENCE_SUBJECT, on_notice)
    presence = running.presence
    assert device["status"] == "never_seen"

    heard = clock.now
    presence.activity(identity.device_pk, int(heard.timestamp() * 1e9))
    await presence.sweep()
    await presence.sweep()  # nothing new: no second announcement
    clock.now = heard + timedelta(seconds=29)
    await presence.sweep()  # within 3 x 10 s
    clock.now = heard + timedelta(seconds=31)
    await presence.sweep()
    await presence.sweep()
    await _settle(lambda: len(notices) >= 2)
    await sub.stop()

    assert [(n["status"], n["previous"], n["reason"]) for n in notices] == [
        ("online", "never_seen", "message"),
        ("offline", "online", "missed heartbeats"),
    ]
    assert notices[1]["at"] == (heard + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    page = await presence.history(actor, "lamp", PageRequest(limit=10, offset=0))
    assert [(i["status"], i["at"]) for i in page.items] == [
        ("offline", heard + timedelta(seconds=30)),
        ("online", heard),
    ]
    now = await presence.get(actor, "lamp")
    assert now["status"] == "offline" and now["last_seen_at"] == heard


async def test_an_older_time_saved_late_never_moves_last_seen_backwards(
    roost: tuple[Roost, Clock],
) -> None:
    running, clock = roost
    await running.devices.create(local_admin(), {"id": "pump"})
    identity = await _identity(running, "pump")
    newer = clock.now
    running.presence.activity(identity.device_pk, int(newer.timestamp() * 1e9))
    await running.presence.sweep()
    running.presence.activity(identity.device_pk, int((newer.timestamp() - 50) * 1e9))
    await running.presence.sweep()
    assert (await running.presence.get(local_admin(), "pump"))["last_seen_at"] == newer


async def _identity(running: Roost, device_id: str) -> DeviceIdentity:
    record, token = await running.credentials.issue_token(local_admin(), device_id)
    return await running.device_auth.authenticate_token(token)


async def _settle(condition: Callable[[], bool], seconds: float = 5) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)


async def test_a_chatty_device_is_saved_only_when_needed_and_never_goes_offline_while_heard(
    roost: tuple[Roost, Clock],
) -> None:
    running, clock = roost
    actor = local_admin()
    await running.devices.create(actor, {"id": "chatty", "heartbeat_interval_s": 10})
    identity = await _identity(running, "chatty")
    presence = running.presence
    start = clock.now
    stored: list[datetime] = []
    for second in range(0, 61):
        clock.now = start + timedelta(seconds=second)
        presence.activity(identity.device_pk, int(clock.now.timestamp() * 1e9))
        await presence.sweep()
        row = await running.devices.get(actor, "chatty")
        assert row["status"] == "online", f"offline at {second} s although heard every second"
        if not stored or stored[-1] != row["last_seen_at"]:
            stored.append(row["last_seen_at"])
    # Written when first heard, then only as the stored offline time (30 s on) came within the
    # refresh margin: 3 writes in a minute, not 61.
    assert [(t - start).total_seconds() for t in stored] == [0, 28, 56]
    # Silent from 60 s on: offline exactly 3 intervals after it was last heard.
    for second in range(61, 95):
        clock.now = start + timedelta(seconds=second)
        await presence.sweep()
    now = await presence.get(actor, "chatty")
    assert now["status"] == "offline"
    assert now["since"] == start + timedelta(seconds=90)
    assert now["last_seen_at"] == start + timedelta(seconds=60)


async def test_recently_offline_lists_devices_lost_since_a_time_newest_first(
    roost: tuple[Roost, Clock],
) -> None:
    running, clock = roost
    actor = local_admin()
    start = clock.now
    for name in ("early", "late", "stays", "silent"):
        await running.devices.create(actor, {"id": name, "heartbeat_interval_s": 10})
    identities = {name: await _identity(running, name) for name in ("early", "late", "stays")}
    presence = running.presence
    for name, at in (("early", 0), ("late", 100), ("stays", 100)):
        clock.now = start + timedelta(seconds=at)
        presence.activity(identities[name].device_pk, int(clock.now.timestamp() * 1e9))
        await presence.sweep()
    clock.now = start + timedelta(seconds=200)  # "stays" is heard again: online
    presence.activity(identities["stays"].device_pk, int(clock.now.timestamp() * 1e9))
    await presence.sweep()

    page = await presence.recently_offline(actor, start, PageRequest(limit=10))
    assert [(d["device_id"], d["offline_since"]) for d in page.items] == [
        ("late", start + timedelta(seconds=130)),
        ("early", start + timedelta(seconds=30)),
    ]
    assert page.total == 2
    later = await presence.recently_offline(
        actor, start + timedelta(seconds=60), PageRequest(limit=10)
    )
    assert [d["device_id"] for d in later.items] == ["late"]
    other = await presence.recently_offline(local_admin("elsewhere"), start, PageRequest(limit=10))
    assert other.total == 0
