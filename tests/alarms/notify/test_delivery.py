"""Notifications through the real doors: notices enqueued in a transaction of Roost's database,
messages received by a real SMTP server and a real webhook receiver, state read over HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.alarms.notify.conftest import (
    SECRET,
    Platform,
    Receiver,
    SmtpServer,
    eventually,
    notice,
)

FAST = {"group_wait_s": 0.3, "group_interval_s": 0.5}


async def test_200_notices_of_one_site_and_type_make_one_email(
    platform: Platform, smtp: SmtpServer
) -> None:
    smtp.start()
    channel = await platform.channel(
        name="ops-mail", kind="email", config={"to": ["ops@example.test"]}, group_wait_s=1.0
    )
    await platform.enqueue([notice(i, channel) for i in range(1, 201)])

    async def delivered() -> list[dict[str, Any]]:
        return await platform.log(status="delivered")

    [entry] = await eventually(delivered)
    assert entry["firing"] == 200 and sorted(entry["alarm_ids"]) == list(range(1, 201))
    assert entry["attempts"] == 1 and entry["last_error"] is None
    await asyncio.sleep(1.0)  # nothing else follows
    assert len(smtp.messages) == 1
    recipients, message = smtp.messages[0]
    assert recipients == ["ops@example.test"]
    assert message["Subject"] == "[FIRING:200] offline at site site-1"
    body = message.get_payload()
    assert isinstance(body, str)
    for i in range(1, 201):
        assert f"dev-{i:04d}: dev-{i:04d} is offline" in body
    assert len(await platform.log()) == 1


async def test_a_webhook_answering_500_is_retried_with_backoff_then_failed(
    platform: Platform, receiver: Receiver
) -> None:
    receiver.answers = [500]
    channel = await platform.channel(
        name="hook",
        kind="webhook",
        config={"url": receiver.url, "secret": SECRET},
        max_attempts=3,
        **FAST,
    )
    await platform.enqueue([notice(1, channel)])

    async def failed() -> list[dict[str, Any]]:
        return await platform.log(status="failed", channel_id=channel)

    [entry] = await eventually(failed)
    assert entry["attempts"] == 3
    assert entry["last_error"] == "HTTP 500: receiver says no"
    assert [a["error"] for a in entry["attempt_log"]] == ["HTTP 500: receiver says no"] * 3
    assert entry["next_attempt_at"] is None
    assert len(receiver.hits) == 3 and all(hit.signed for hit in receiver.hits)
    gaps = [b.at - a.at for a, b in zip(receiver.hits, receiver.hits[1:], strict=False)]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, gaps  # 1 s, then 2 s
    body = receiver.hits[0].body
    assert body["status"] == "firing" and body["alerts"][0]["device_id"] == "dev-0001"
    assert "x-roost-timestamp" in receiver.hits[0].headers


async def test_a_4xx_fails_at_once_and_a_2xx_delivers_a_signed_body(
    platform: Platform, receiver: Receiver
) -> None:
    receiver.answers = [404, 200]
    channel = await platform.channel(
        name="hook",
        kind="webhook",
        config={"url": receiver.url, "secret": SECRET, "headers": {"X-Team": "ops"}},
        **FAST,
    )
    await platform.enqueue([notice(1, channel, site_id="a")])
    await eventually(lambda: platform.log(status="failed"))
    [failed] = await platform.log(status="failed")
    assert failed["attempts"] == 1 and failed["last_error"].startswith("HTTP 404")
    await platform.enqueue([notice(2, channel, site_id="b")])
    [ok] = await eventually(lambda: platform.log(status="delivered"))
    assert ok["alarm_ids"] == [2]
    hit = receiver.hits[-1]
    assert hit.signed and hit.headers["x-team"] == "ops"
    assert hit.body["group_labels"] == {"site_id": "b", "type": "offline"}
    assert hit.body["notification_id"] == ok["id"]


async def test_an_unreachable_smtp_server_is_retried_and_nothing_is_lost(
    platform: Platform, smtp: SmtpServer
) -> None:
    channel = await platform.channel(
        name="ops-mail", kind="email", config={"to": ["ops@example.test"]}, **FAST
    )
    await platform.enqueue([notice(7, channel)])

    async def retrying() -> list[dict[str, Any]]:
        items = await platform.log(status="queued")
        return [i for i in items if i["attempts"] >= 2]

    [entry] = await eventually(retrying)
    assert entry["last_error"] and "connect" in entry["last_error"].lower()
    assert entry["next_attempt_at"] is not None
    assert all(a["error"] for a in entry["attempt_log"])
    smtp.start()
    [done] = await eventually(lambda: platform.log(status="delivered"), within=30)
    assert done["id"] == entry["id"] and done["attempts"] >= 3
    assert done["attempt_log"][-1]["error"] is None
    assert len(smtp.messages) == 1
    assert "dev-0007" in str(smtp.messages[0][1].get_payload())


async def test_a_restart_neither_resends_nor_loses(platform: Platform, receiver: Receiver) -> None:
    fast = await platform.channel(
        name="fast",
        kind="webhook",
        config={"url": receiver.url, "secret": SECRET},
        **FAST,
    )
    slow = await platform.channel(
        name="slow", kind="webhook", config={"url": receiver.url, "secret": SECRET},
        group_wait_s=1.5,
    )  # fmt: skip
    # Delivered before the restart: must not go again.
    await platform.enqueue([notice(1, fast, site_id="delivered")])
    await eventually(lambda: platform.log(status="delivered"))
    # Queued and failing (the receiver is down) when the process stops.
    receiver.answers = [200, 503]
    await platform.enqueue([notice(2, fast, site_id="queued")])
    await eventually(lambda: platform.log(status="queued"))
    # Decided but still waiting for its group when the process stops.
    await platform.enqueue([notice(3, slow, site_id="waiting")])
    await platform.stop()

    receiver.answers = [200]
    receiver.hits.clear()
    await platform.start()

    async def all_delivered() -> bool:
        return len(await platform.log(status="delivered")) == 3

    await eventually(all_delivered)
    await asyncio.sleep(1.0)
    sites = sorted(hit.body["group_labels"]["site_id"] for hit in receiver.hits)
    assert sites == ["queued", "waiting"]  # each once; the delivered one not again
    assert len(await platform.log()) == 3


async def test_a_silence_keeps_alerts_out_of_messages(
    platform: Platform, receiver: Receiver
) -> None:
    channel = await platform.channel(
        name="hook", kind="webhook", config={"url": receiver.url, "secret": SECRET}, **FAST
    )
    for matchers in ({"site_id": "quiet"}, {"device_id": "dev-0003"}):
        resp = await platform.api.post(
            "/api/v1/silences",
            json={"matchers": matchers, "ends_at": "2099-01-01T00:00:00Z", "comment": "works"},
        )
        assert resp.status_code == 201, resp.text
        assert resp.json()["state"] == "active"
    await platform.enqueue(
        [
            notice(1, channel, site_id="quiet"),
            notice(2, channel, site_id="quiet"),
            notice(3, channel, site_id="loud"),
            notice(4, channel, site_id="loud"),
        ]
    )
    [entry] = await eventually(lambda: platform.log(status="delivered"))
    await asyncio.sleep(1.0)
    assert entry["alarm_ids"] == [4]
    assert len(receiver.hits) == 1
    assert [a["device_id"] for a in receiver.hits[0].body["alerts"]] == ["dev-0004"]
    assert len(await platform.log()) == 1


async def test_changes_of_a_group_follow_group_interval_and_resolutions_go_once(
    platform: Platform, receiver: Receiver
) -> None:
    channel = await platform.channel(
        name="hook", kind="webhook", config={"url": receiver.url, "secret": SECRET}, **FAST
    )

    async def delivered(n: int) -> bool:
        return len(await platform.log(status="delivered")) == n

    await platform.enqueue([notice(1, channel), notice(2, channel)])
    await eventually(lambda: delivered(1))
    await platform.enqueue([notice(3, channel)])
    await eventually(lambda: delivered(2))
    assert receiver.hits[1].body["firing"] == 3
    assert receiver.hits[1].at - receiver.hits[0].at >= 0.45  # group_interval
    await platform.enqueue([notice(1, channel, status="resolved")])
    await eventually(lambda: delivered(3))
    third = receiver.hits[2].body
    assert (third["firing"], third["resolved"]) == (2, 1)
    assert [a["alarm_id"] for a in third["alerts"] if a["status"] == "resolved"] == [1]
    # Unchanged firing alerts are not sent again before repeat_interval (4 h by default).
    await asyncio.sleep(1.5)
    assert len(receiver.hits) == 3
