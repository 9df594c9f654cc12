"""Signing in and out of the console, CSRF on cookie-authenticated changes, tenant switch."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.console.conftest import Console
from tests.support import ADMIN_PASSWORD, Api, RoostServer, assert_problem, run_coroutine


def test_pages_send_a_signed_out_browser_to_sign_in(console: Console) -> None:
    console.goto("/devices?site=berlin")
    assert console.page.url.startswith(console.server.url + "/login?next=")
    console.page.get_by_label("Username").fill("admin")
    console.page.get_by_label("Password").fill(ADMIN_PASSWORD)
    console.page.get_by_role("button", name="Sign in").click()
    console.page.wait_for_url("**/devices?site=berlin")
    assert console.foreign_requests() == []


def test_a_wrong_password_is_told_on_the_sign_in_page(console: Console) -> None:
    console.goto("/login")
    console.page.get_by_label("Username").fill("admin")
    console.page.get_by_label("Password").fill("not-the-password")
    console.page.get_by_role("button", name="Sign in").click()
    alert = console.page.get_by_role("alert")
    assert "invalid username or password" in alert.inner_text()
    cookies = {c["name"] for c in console.context.cookies()}
    assert "roost_session" not in cookies


def test_session_cookie_is_http_only_and_strict(console: Console) -> None:
    console.sign_in()
    (cookie,) = [c for c in console.context.cookies() if c["name"] == "roost_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert console.page.evaluate("document.cookie") == ""


def test_sign_out_ends_the_session(console: Console) -> None:
    console.sign_in()
    (cookie,) = [c for c in console.context.cookies() if c["name"] == "roost_session"]
    console.page.get_by_role("button", name="Sign out").click()
    console.page.wait_for_url("**/login")
    console.goto("/")
    assert "/login" in console.page.url
    # The token the cookie held no longer works anywhere, even replayed by another client.
    with Api(console.server.url, cookie["value"]) as api:
        assert_problem(api.get("/api/v1/devices"), 401)


def test_the_api_takes_the_cookie_but_a_change_needs_the_csrf_token(
    console_server: RoostServer,
) -> None:
    with httpx.Client(base_url=console_server.url) as client:
        resp = client.post(
            "/login",
            data={"username": "admin", "password": ADMIN_PASSWORD, "next": "/"},
            follow_redirects=False,
        )
        assert resp.status_code == 303, resp.text
        assert client.get("/api/v1/devices").status_code == 200
        refused = client.post("/api/v1/sites", json={"id": "csrf-site", "name": "x"})
        assert_problem(refused, 403, "X-CSRF-Token")
        wrong = client.post(
            "/api/v1/sites", json={"id": "csrf-site", "name": "x"}, headers={"X-CSRF-Token": "0"}
        )
        assert_problem(wrong, 403, "X-CSRF-Token")
        page = client.get("/").text
        token = page.split('name="csrf-token" content="')[1].split('"')[0]
        made = client.post(
            "/api/v1/sites", json={"id": "csrf-site", "name": "x"}, headers={"X-CSRF-Token": token}
        )
        assert made.status_code == 201, made.text


def test_next_never_leaves_the_server(console_server: RoostServer) -> None:
    with httpx.Client(base_url=console_server.url) as client:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            resp = client.post(
                "/login",
                data={"username": "admin", "password": ADMIN_PASSWORD, "next": target},
                follow_redirects=False,
            )
            assert resp.status_code == 303
            assert resp.headers["location"] == "/", target


def _signed_in_cookie(server: RoostServer) -> str:
    with httpx.Client(base_url=server.url) as client:
        resp = client.post(
            "/login",
            data={"username": "admin", "password": ADMIN_PASSWORD, "next": "/"},
            follow_redirects=False,
        )
        assert resp.status_code == 303, resp.text
        return resp.cookies["roost_session"]


def test_the_live_stream_takes_the_cookie_only_from_our_own_pages(
    console_server: RoostServer,
) -> None:
    cookie = _signed_in_cookie(console_server)
    url = console_server.url.replace("http://", "ws://") + "/api/v1/ws/stream"
    host = console_server.url.removeprefix("http://")

    async def attempt(origin: str) -> bool:
        try:
            async with websockets.connect(
                url, additional_headers={"Cookie": f"roost_session={cookie}"}, origin=origin
            ) as ws:
                await ws.ping()
                return True
        except InvalidStatus as exc:
            assert exc.response.status_code == 401, exc.response.status_code
            return False

    assert run_coroutine(attempt(f"http://{host}")) is True
    # A page of another site cannot ride on the browser's cookie (cross-site WebSocket hijacking).
    assert run_coroutine(attempt("http://evil.example")) is False


def test_a_used_session_is_renewed_and_an_idle_one_ends(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Login tokens live 6 s here: a page in the second half of a token's life renews it. The
    # waits are the point (time must pass); each is measured from the token's own expiry.
    ttl = 6
    server = RoostServer(
        tmp_path_factory.mktemp("short-session"), env_overrides={"ROOST_TOKEN_TTL_S": str(ttl)}
    )
    with server.running():
        context = browser.new_context()
        try:
            tab = Console(server, context, context.new_page())
            tab.sign_in()
            first = _cookie(tab)
            _sleep_until(_expiry(first) - ttl / 2 + 0.3)
            tab.goto("/devices")
            renewed = _cookie(tab)
            assert renewed != first
            assert _expiry(renewed) > _expiry(first)
            _sleep_until(_expiry(first) + 0.3)  # the first token has expired, not the new one
            tab.goto("/inventory/sites")
            assert "/login" not in tab.page.url
            with Api(server.url, first) as api:
                assert_problem(api.get("/api/v1/devices"), 401, "expired")
            # A change made from the page (its CSRF token names the session, not the token).
            made = tab.page.evaluate(
                "Roost.api('POST', '/api/v1/sites', {id: 'renewed-site', name: 'R'})"
            )
            assert made["id"] == "renewed-site"
            _sleep_until(_expiry(_cookie(tab)) + 0.3)  # idle past the newest token's life
            tab.goto("/devices")
            assert "/login" in tab.page.url
        finally:
            context.close()


def _expiry(token: str) -> float:
    """When a login token expires (epoch seconds), read from its claims."""
    exp: float = jwt.decode(token, options={"verify_signature": False})["exp"]
    return exp


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def _cookie(tab: Console) -> str:
    (cookie,) = [c for c in tab.context.cookies() if c["name"] == "roost_session"]
    value: str = cookie["value"]
    return value
