"""The notification routes over HTTP: channel CRUD and validation, test messages, silences."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.alarms.notify.conftest import SECRET, Platform, Receiver, SmtpServer

CHANNELS = "/api/v1/notification-channels"


def problem(resp: httpx.Response, text: str) -> dict[str, Any]:
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert text.lower() in resp.text.lower(), body
    return body


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"name": "x", "kind": "pager", "config": {}}, "kind"),
        ({"name": "x", "kind": "webhook", "config": {"url": "ftp://host/x"}}, "config.url"),
        ({"name": "x", "kind": "slack", "config": {"url": "not a url"}}, "config.url"),
        ({"name": "x", "kind": "email", "config": {"to": ["ops@", "a@b.c"]}}, "config.to[0]"),
        ({"name": "x", "kind": "email", "config": {"to": []}}, "config.to"),
        ({"name": "x", "kind": "email", "config": {"to": ["a@b.c"], "cc": 1}}, "config.cc"),
        (
            {"name": "x", "kind": "webhook",
             "config": {"url": "http://h/", "headers": {"X-Roost-Signature": "forged"}}},
            "X-Roost-",
        ),
        ({"name": "x", "kind": "email", "config": {"to": ["a@b.c"]}, "group_by": ["zone"]},
         "group_by"),
    ],
)  # fmt: skip
async def test_bad_channels_are_refused(
    platform: Platform, body: dict[str, Any], text: str
) -> None:
    problem(await platform.api.post(CHANNELS, json=body), text)


async def test_a_template_that_does_not_compile_is_refused_naming_it_and_its_line(
    platform: Platform,
) -> None:
    template = "Alerts:\n{% for a in alerts %}\n- {{ a.device_id }\n{% endfor %}"
    resp = await platform.api.post(
        CHANNELS,
        json={
            "name": "mail",
            "kind": "email",
            "config": {"to": ["ops@example.test"], "body_template": template},
        },
    )
    body = problem(resp, "config.body_template")
    assert "line 3" in body["detail"]
    assert body["errors"][0]["line"] == 3


async def test_channel_crud_keeps_the_secret_out_of_answers(
    platform: Platform, receiver: Receiver
) -> None:
    created = await platform.api.post(
        CHANNELS,
        json={"name": "hook", "kind": "webhook", "config": {"url": receiver.url, "secret": SECRET}},
    )
    assert created.status_code == 201, created.text
    channel = created.json()
    assert channel["secret_set"] is True and "secret" not in channel["config"]
    assert SECRET not in created.text
    assert (channel["group_by"], channel["group_wait_s"]) == (["site_id", "type"], 30.0)
    got = await platform.api.get(f"{CHANNELS}/{channel['id']}")
    assert got.json() == channel and SECRET not in got.text
    dup = await platform.api.post(
        CHANNELS, json={"name": "hook", "kind": "slack", "config": {"url": receiver.url}}
    )
    assert dup.status_code == 409
    patched = await platform.api.patch(
        f"{CHANNELS}/{channel['id']}",
        json={"config": {"url": receiver.url, "timeout_s": 5}, "group_wait_s": 1},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["secret_set"] is True  # a config without "secret" keeps it
    assert patched.json()["config"]["timeout_s"] == 5
    assert await platform.roost.notifications.channel_exists("default", channel["id"])  # type: ignore[union-attr]
    listed = await platform.api.get(CHANNELS, params={"kind": "webhook"})
    assert [c["id"] for c in listed.json()["items"]] == [channel["id"]]
    assert (await platform.api.delete(f"{CHANNELS}/{channel['id']}")).status_code == 204
    assert (await platform.api.get(f"{CHANNELS}/{channel['id']}")).status_code == 404
    assert not await platform.roost.notifications.channel_exists("default", channel["id"])  # type: ignore[union-attr]


async def test_the_test_route_sends_now_and_answers_the_outcome(
    platform: Platform, receiver: Receiver, smtp: SmtpServer
) -> None:
    hook = await platform.channel(
        name="hook", kind="webhook", config={"url": receiver.url, "secret": SECRET}
    )
    resp = await platform.api.post(f"{CHANNELS}/{hook}/test")
    assert resp.status_code == 200, resp.text
    assert resp.json()["delivered"] is True and resp.json()["error"] is None
    assert len(receiver.hits) == 1 and receiver.hits[0].signed
    assert receiver.hits[0].body["alerts"][0]["type"] == "test"

    mail = await platform.channel(name="mail", kind="email", config={"to": ["ops@example.test"]})
    down = (await platform.api.post(f"{CHANNELS}/{mail}/test")).json()
    assert down["delivered"] is False and down["error"]
    logged = (await platform.api.get(f"/api/v1/notifications/{down['notification_id']}")).json()
    assert logged["status"] == "failed" and logged["last_error"] == down["error"]
    smtp.start()
    up = (await platform.api.post(f"{CHANNELS}/{mail}/test")).json()
    assert up["delivered"] is True, up
    assert len(smtp.messages) == 1 and "Test message" in str(smtp.messages[0][1].get_payload())


async def test_silences_crud_states_and_validation(platform: Platform) -> None:
    api = platform.api
    problem(
        await api.post(
            "/api/v1/silences",
            json={
                "matchers": {"site_id": "s"},
                "starts_at": "2030-01-02T00:00:00Z",
                "ends_at": "2030-01-01T00:00:00Z",
            },
        ),
        "ends_at must be after starts_at",
    )
    problem(
        await api.post(
            "/api/v1/silences", json={"matchers": {}, "ends_at": "2030-01-01T00:00:00Z"}
        ),
        "matcher",
    )
    made = {}
    for state, starts, ends in (
        ("active", None, "2099-01-01T00:00:00Z"),
        ("pending", "2098-01-01T00:00:00Z", "2099-01-01T00:00:00Z"),
        ("expired", "2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"),
    ):
        body: dict[str, Any] = {
            "matchers": {"type": "offline", "severity": "major"},
            "ends_at": ends,
        }
        if starts:
            body["starts_at"] = starts
        resp = await api.post("/api/v1/silences", json=body)
        assert resp.status_code == 201, resp.text
        assert resp.json()["state"] == state and resp.json()["created_by"] == "admin"
        made[state] = resp.json()["id"]
    for state, silence_id in made.items():
        listed = (await api.get("/api/v1/silences", params={"state": state})).json()
        assert [s["id"] for s in listed["items"]] == [silence_id]
    ended = await api.patch(
        f"/api/v1/silences/{made['active']}", json={"ends_at": "2021-01-01T00:00:00Z"}
    )
    problem(ended, "ends_at must be after starts_at")  # it started now, after 2021
    assert (await api.delete(f"/api/v1/silences/{made['active']}")).status_code == 204
    assert (await api.get(f"/api/v1/silences/{made['active']}")).status_code == 404
