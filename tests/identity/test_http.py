"""Login, tokens, rate limiting, users, tenants and API keys, through the running server.

Failed logins count against the caller's address, and every test of the session shares the
server's limiter: a test that expects a login to fail sends it from an address of its own
(``X-Forwarded-For``, which uvicorn trusts from 127.0.0.1) so it never spends the budget of
127.0.0.1 that every other login of the session comes from.
"""

from __future__ import annotations

import itertools
import secrets
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import Tenant
from tests.support import (
    ADMIN_PASSWORD,
    SECRET_KEY,
    Api,
    RoostServer,
    assert_problem,
    unique,
)

LOGIN = "/api/v1/auth/login"
BAD_LOGIN = "invalid username or password"

# One TLS context shared by every client: httpx would build one per client (~40 ms each, loading
# the CA bundle), and these tests make many short-lived clients.
_TLS = ssl.create_default_context()


def client(url: str, token: str | None = None, **kwargs: Any) -> Api:
    """A client of the API at ``url``, optionally authenticated."""
    return Api(url, token, verify=_TLS, **kwargs)


# Distinct addresses for the whole session (10.x.y.z, starting at a random point).
_addresses = itertools.count(secrets.randbelow(1 << 20) << 2)


def fresh_address() -> str:
    """An address no other login of this session has come from."""
    n = next(_addresses) & 0xFFFFFF
    return f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"


def login(url: str, username: str, password: str, address: str | None = None) -> httpx.Response:
    """POST /auth/login as if from ``address`` (a fresh one unless given)."""
    with client(url) as api:
        return api.post(
            LOGIN,
            json={"username": username, "password": password},
            headers={"X-Forwarded-For": address or fresh_address()},
        )


@contextmanager
def tenant_with_roles(server: RoostServer, admin: Api) -> Iterator[Tenant]:
    """A new tenant with a logged-in admin, operator and viewer (like the ``tenant`` fixture)."""
    tenant_id = unique("t")
    usernames = {role: f"{tenant_id}-{role}" for role in ("admin", "operator", "viewer")}
    passwords = {role: f"pw-{role}-{tenant_id}" for role in usernames}
    resp = admin.post(
        "/api/v1/tenants",
        json={
            "id": tenant_id,
            "name": f"Tenant {tenant_id}",
            "admin": {"username": usernames["admin"], "password": passwords["admin"]},
        },
    )
    assert resp.status_code == 201, resp.text
    anon = client(server.url)
    clients = {"admin": client(server.url, anon.login(usernames["admin"], passwords["admin"]))}
    for role in ("operator", "viewer"):
        resp = clients["admin"].post(
            "/api/v1/users",
            json={"username": usernames[role], "password": passwords[role], "role": role},
        )
        assert resp.status_code == 201, resp.text
        clients[role] = client(server.url, anon.login(usernames[role], passwords[role]))
    try:
        yield Tenant(
            tenant_id,
            clients["admin"],
            clients["operator"],
            clients["viewer"],
            anon,
            passwords,
            usernames,
        )
    finally:
        for api in (*clients.values(), anon):
            api.close()


def token_for(url: str, username: str, password: str) -> str:
    """Log in (from 127.0.0.1, expecting success) and answer the token."""
    with client(url) as anon:
        return anon.login(username, password)


def user_id(api: Api) -> int:
    """The id of the user behind a client."""
    resp = api.get("/api/v1/me")
    assert resp.status_code == 200, resp.text
    uid: int = resp.json()["id"]
    return uid


def names(resp: httpx.Response, field: str = "id") -> list[Any]:
    """One field of every item of a list answer."""
    assert resp.status_code == 200, resp.text
    return [item[field] for item in resp.json()["items"]]


@pytest.fixture(scope="module")
def org(server: RoostServer, admin: Api) -> Iterator[Tenant]:
    """One tenant shared by the API key tests of this module (each makes its own keys)."""
    with tenant_with_roles(server, admin) as tenant:
        yield tenant


# -- login and tokens -----------------------------------------------------------------------------


def test_login_answers_a_token_that_works(server: RoostServer) -> None:
    before = datetime.now(UTC)
    resp = login(server.url, "admin", ADMIN_PASSWORD)
    after = datetime.now(UTC)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"token", "token_type", "expires_at", "user"}
    assert body["token_type"] == "Bearer"
    # The default hour from the moment the server answered (somewhere between before and
    # after; JWT times are whole seconds, hence the second either side).
    expires = datetime.fromisoformat(body["expires_at"])
    hour = timedelta(seconds=3600)
    assert before + hour - timedelta(seconds=1) <= expires <= after + hour + timedelta(seconds=1)
    user = body["user"]
    assert (user["username"], user["tenant_id"], user["role"]) == ("admin", "default", "admin")
    assert user["is_superuser"] is True and user["disabled"] is False
    assert user["last_login_at"] is not None
    assert "password" not in resp.text and "$argon2" not in resp.text
    with client(server.url, body["token"]) as api:
        me = api.get("/api/v1/me")
        assert me.status_code == 200, me.text
        assert me.json()["id"] == user["id"]
        assert me.json()["last_login_at"] == user["last_login_at"]


def test_wrong_password_and_unknown_user_get_the_same_answer(server: RoostServer) -> None:
    wrong = login(server.url, "admin", "not-the-password")
    unknown = login(server.url, unique("nobody"), "not-the-password")
    first = assert_problem(wrong, 401)
    second = assert_problem(unknown, 401)
    assert first == second
    assert first["detail"] == BAD_LOGIN
    assert wrong.headers["www-authenticate"] == unknown.headers["www-authenticate"] == "Bearer"


def test_login_body_is_validated(server: RoostServer) -> None:
    with client(server.url) as api:
        body = assert_problem(api.post(LOGIN, json={"username": "admin"}), 422, "password")
        assert body["errors"][0]["field"] == "password"
        assert_problem(
            api.post(LOGIN, content=b"{not json", headers={"content-type": "application/json"}),
            400,
            "not valid JSON",
        )


def _forge(user: int, key: str = SECRET_KEY, **overrides: Any) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": "roost",
        "aud": "roost:user",
        "sub": str(user),
        "tid": "default",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": secrets.token_urlsafe(8),
        "sev": 0,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="HS256")


def _unsigned(user: int) -> str:
    token = _forge(user)
    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    return f"{header}.{token.split('.')[1]}."


_PAST = datetime.now(UTC) - timedelta(hours=1)
BAD_CREDENTIALS = {
    # name: (Authorization header for the superuser's id, phrase of the answer's detail)
    "expired": (
        lambda uid: (
            "Bearer " + _forge(uid, exp=int(_PAST.timestamp()), iat=int(_PAST.timestamp()) - 60)
        ),
        "expired",
    ),
    "other-key": (
        lambda uid: "Bearer " + _forge(uid, key="some-other-key-of-32-bytes-or-more"),
        "signature",
    ),
    "wrong-audience": (lambda uid: "Bearer " + _forge(uid, aud="roost:device"), "audience"),
    "unsigned": (lambda uid: "Bearer " + _unsigned(uid), "invalid token"),
    "other-tenant": (lambda uid: "Bearer " + _forge(uid, tid="elsewhere"), "no longer valid"),
    "unknown-user": (lambda uid: "Bearer " + _forge(987654), "no longer valid"),
    # The superuser is in session epoch 0: a token of another epoch is from an ended session.
    "other-session-epoch": (lambda uid: "Bearer " + _forge(uid, sev=7), "logged out"),
    "no-session-epoch": (lambda uid: "Bearer " + _forge(uid, sev=None), "invalid token"),
    "garbage": (lambda uid: "Bearer not-a-token", "invalid token"),
    "malformed-api-key": (lambda uid: "Bearer roost_nosecret", "malformed API key"),
    "unknown-api-key": (lambda uid: "Bearer roost_000000000000_" + "x" * 43, "invalid API key"),
    "missing": (lambda uid: None, "Authorization: Bearer"),
    "empty-bearer": (lambda uid: "Bearer", "Authorization: Bearer"),
    "basic": (lambda uid: "Basic YWRtaW46YWRtaW4tdGVzdC1wYXNzd29yZA==", "Authorization: Bearer"),
}


@pytest.mark.parametrize("case", sorted(BAD_CREDENTIALS))
def test_bad_credentials_are_refused(server: RoostServer, admin: Api, case: str) -> None:
    uid = user_id(admin)
    # A token forged with the real key and valid claims is accepted: the refusals below are
    # each due to the one thing that differs.
    with client(server.url, _forge(uid)) as genuine:
        assert genuine.get("/api/v1/me").json()["username"] == "admin"
    make_header, phrase = BAD_CREDENTIALS[case]
    header = make_header(uid)
    with client(server.url) as api:
        resp = api.get("/api/v1/devices", headers={"Authorization": header} if header else {})
    assert_problem(resp, 401, phrase)
    assert resp.headers["www-authenticate"] == "Bearer"


# -- a server of its own: 1-second tokens, 3 failed logins ----------------------------------------

TOKEN_TTL_S = 1
MAX_FAILURES = 3
ADDRESS_BUDGET = 4 * MAX_FAILURES
SECOND_USER, SECOND_PASSWORD = "second-user", "second-password"


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostServer]:
    """A server (SQLite: neither setting touches the store) with short tokens and a low limit."""
    srv = RoostServer(
        tmp_path_factory.mktemp("roost-strict"),
        env_overrides={
            "ROOST_TOKEN_TTL_S": str(TOKEN_TTL_S),
            "ROOST_LOGIN_MAX_FAILURES": str(MAX_FAILURES),
        },
    )
    srv.start()
    try:
        # The token is checked when the request arrives, well within its second.
        with client(srv.url) as anon, client(srv.url, anon.login("admin", ADMIN_PASSWORD)) as root:
            resp = root.post(
                "/api/v1/users",
                json={"username": SECOND_USER, "password": SECOND_PASSWORD, "role": "viewer"},
            )
            assert resp.status_code == 201, resp.text
        yield srv
    finally:
        srv.stop()
    assert not srv.unhandled_errors()


def test_a_short_lived_token_expires(strict: RoostServer) -> None:
    """A real 1-second token: accepted at once, refused as expired once its time is up."""
    resp = login(strict.url, "admin", ADMIN_PASSWORD)
    assert resp.status_code == 200, resp.text
    expires_at = datetime.fromisoformat(resp.json()["expires_at"])
    with client(strict.url, resp.json()["token"]) as api:
        assert api.get("/api/v1/me").status_code == 200
        remaining = (expires_at - datetime.now(UTC)).total_seconds()
        assert 0 < remaining <= TOKEN_TTL_S + 1
        time.sleep(remaining + 0.1)
        assert_problem(api.get("/api/v1/me"), 401, "token expired")


def assert_rate_limited(resp: httpx.Response) -> int:
    assert_problem(resp, 429, "too many failed logins")
    retry_after = int(resp.headers["retry-after"])
    assert 1 <= retry_after <= 300  # within the default window
    return retry_after


def test_failures_lock_the_username_at_that_address_only(strict: RoostServer) -> None:
    url, here = strict.url, fresh_address()
    for _ in range(MAX_FAILURES):
        assert_problem(login(url, "admin", "wrong-password", here), 401, BAD_LOGIN)
    # Now even the right password is refused from here, with a time to come back.
    assert_rate_limited(login(url, "admin", ADMIN_PASSWORD, here))
    # Another username from the same address still gets in: the address budget is 4x.
    assert login(url, SECOND_USER, SECOND_PASSWORD, here).status_code == 200
    # The same username from another address (X-Forwarded-For) or from the proxy itself.
    assert login(url, "admin", ADMIN_PASSWORD, fresh_address()).status_code == 200
    with client(url) as direct:
        assert (
            direct.post(LOGIN, json={"username": "admin", "password": ADMIN_PASSWORD}).status_code
            == 200
        )
    assert_rate_limited(login(url, "admin", ADMIN_PASSWORD, here))


def test_a_success_resets_the_pair_counter(strict: RoostServer) -> None:
    url, here = strict.url, fresh_address()
    for _ in range(2):
        for _ in range(MAX_FAILURES - 1):
            assert_problem(login(url, SECOND_USER, "wrong-password", here), 401)
        # Without the reset, the second round would make 4 failures and refuse this login.
        assert login(url, SECOND_USER, SECOND_PASSWORD, here).status_code == 200


def test_the_address_budget_spans_usernames(strict: RoostServer) -> None:
    url, here = strict.url, fresh_address()
    prefix = unique("spray")
    with ThreadPoolExecutor(4) as pool:  # one failure per username: no pair is limited
        sprayed = list(
            pool.map(
                lambda n: login(url, f"{prefix}-{n}", "guess", here), range(ADDRESS_BUDGET - 1)
            )
        )
    for resp in sprayed:
        assert_problem(resp, 401, BAD_LOGIN)
    # One failure short of the budget a real user still gets in, and a success costs nothing.
    assert login(url, SECOND_USER, SECOND_PASSWORD, here).status_code == 200
    assert_problem(login(url, f"{prefix}-last", "guess", here), 401, BAD_LOGIN)
    assert_rate_limited(login(url, SECOND_USER, SECOND_PASSWORD, here))
    assert_rate_limited(login(url, "admin", ADMIN_PASSWORD, here))
    assert login(url, SECOND_USER, SECOND_PASSWORD, fresh_address()).status_code == 200


def test_concurrent_guesses_cannot_exceed_the_budget(strict: RoostServer) -> None:
    url, here = strict.url, fresh_address()
    attempts = 8
    with ThreadPoolExecutor(attempts) as pool:
        statuses = sorted(
            pool.map(
                lambda _: login(url, "admin", "wrong-password", here).status_code, range(attempts)
            )
        )
    assert statuses == [401] * MAX_FAILURES + [429] * (attempts - MAX_FAILURES)


# -- users ----------------------------------------------------------------------------------------


def test_users_are_listed_paged_filtered_created_changed_and_deleted(org: Tenant) -> None:
    # Other tests add users to this tenant; the three role users are the ones named after it.
    api, users, mine = org.admin, "/api/v1/users", {"q": org.id, "sort": "username"}
    first = api.get(users, params={**mine, "limit": 2}).json()
    assert (first["total"], first["limit"], first["offset"]) == (3, 2, 0)
    assert [u["username"] for u in first["items"]] == [
        org.usernames["admin"],
        org.usernames["operator"],
    ]
    rest = api.get(users, params={**mine, "limit": 2, "offset": 2}).json()
    assert [u["username"] for u in rest["items"]] == [org.usernames["viewer"]]
    assert rest["total"] == 3
    desc = names(api.get(users, params={**mine, "sort": "-username"}), "username")
    assert desc == sorted(org.usernames.values(), reverse=True)
    viewers = names(api.get(users, params={**mine, "role": "viewer"}), "username")
    assert viewers == [org.usernames["viewer"]]
    found = names(api.get(users, params={"q": f"{org.id}-operat"}), "username")
    assert found == [org.usernames["operator"]]
    assert_problem(api.get(users, params={"role": "root"}), 422, "role")

    username = f"{org.id}-zz-new"
    resp = api.post(
        users, json={"username": username, "password": "long-enough", "role": "operator"}
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert (created["username"], created["role"], created["tenant_id"]) == (
        username,
        "operator",
        org.id,
    )
    assert created["is_superuser"] is False and created["disabled"] is False
    assert "password" not in resp.text
    uid = created["id"]
    assert api.get(f"{users}/{uid}").json() == created
    assert names(api.get(users, params=mine), "username")[-1] == username
    assert api.get(users, params=mine).json()["total"] == 4

    resp = api.patch(f"{users}/{uid}", json={"role": "viewer", "disabled": True})
    assert resp.status_code == 200, resp.text
    stored = api.get(f"{users}/{uid}").json()
    assert (stored["role"], stored["disabled"]) == ("viewer", True)
    changed_at, created_at = (datetime.fromisoformat(r["updated_at"]) for r in (stored, created))
    assert changed_at > created_at
    assert_problem(api.patch(f"{users}/{uid}", json={"role": "owner"}), 422, "role")
    assert_problem(api.patch(f"{users}/{uid}", json={"password": "short"}), 422, "password")
    assert_problem(api.patch(f"{users}/{uid}", json={"username": "rename"}), 422, "username")
    assert api.get(f"{users}/{uid}").json()["role"] == "viewer"

    assert api.delete(f"{users}/{uid}").status_code == 204
    assert_problem(api.get(f"{users}/{uid}"), 404)
    assert_problem(api.delete(f"{users}/{uid}"), 404)
    assert_problem(api.patch(f"{users}/{uid}", json={"role": "admin"}), 404)
    assert api.get(users, params=mine).json()["total"] == 3


def test_bad_new_users_are_refused(org: Tenant) -> None:
    tenant, api, users = org, org.admin, "/api/v1/users"
    total = api.get(users).json()["total"]
    for body, status, phrase in [
        (
            {"username": tenant.usernames["viewer"], "password": "long-enough", "role": "viewer"},
            409,
            "taken",
        ),
        # Usernames are global: the superuser's name is taken in every tenant.
        ({"username": "admin", "password": "long-enough", "role": "viewer"}, 409, "taken"),
        ({"username": unique("u"), "password": "short", "role": "viewer"}, 422, "password"),
        ({"username": unique("u"), "password": "long-enough", "role": "root"}, 422, "role"),
        ({"username": unique("u"), "password": "long-enough"}, 422, "role"),
        ({"username": "has space", "password": "long-enough", "role": "viewer"}, 422, "username"),
        (
            {"username": unique("u"), "password": "long-enough", "role": "viewer", "admin": True},
            422,
            "admin",
        ),
        # Only the superuser may name a tenant other than the caller's.
        (
            {
                "username": unique("u"),
                "password": "long-enough",
                "role": "viewer",
                "tenant": "default",
            },
            403,
            "superuser",
        ),
    ]:
        assert_problem(api.post(users, json=body), status, phrase)
    assert api.get(users).json()["total"] == total  # nothing was created


def test_a_disabled_user_is_locked_out_at_once(org: Tenant, server: RoostServer) -> None:
    api, viewer, password = org.viewer, org.usernames["viewer"], org.passwords["viewer"]
    path = f"/api/v1/users/{user_id(api)}"
    assert api.get("/api/v1/devices").status_code == 200
    try:
        assert org.admin.patch(path, json={"disabled": True}).status_code == 200
        assert org.admin.get(path).json()["disabled"] is True
        assert_problem(api.get("/api/v1/devices"), 401, "disabled")
        # The right password gets the same answer as a wrong one.
        right = assert_problem(login(server.url, viewer, password), 401)
        wrong = assert_problem(login(server.url, viewer, "wrong-password"), 401)
        assert right == wrong
    finally:
        assert org.admin.patch(path, json={"disabled": False}).status_code == 200
    assert login(server.url, viewer, password).status_code == 200
    assert api.get("/api/v1/devices").status_code == 200


# -- tenants --------------------------------------------------------------------------------------


def test_tenant_lifecycle(server: RoostServer, admin: Api) -> None:
    tid, boss, password = unique("t"), unique("boss"), "boss-password"
    resp = admin.post(
        "/api/v1/tenants",
        json={
            "id": tid,
            "name": "Acme",
            "description": "a customer",
            "admin": {"username": boss, "password": password},
        },
    )
    assert resp.status_code == 201, resp.text
    assert {k: resp.json()[k] for k in ("id", "name", "description")} == {
        "id": tid,
        "name": "Acme",
        "description": "a customer",
    }
    assert admin.get(f"/api/v1/tenants/{tid}").json()["name"] == "Acme"
    listing = admin.get("/api/v1/tenants", params={"q": tid}).json()
    assert (listing["total"], [t["id"] for t in listing["items"]]) == (1, [tid])
    assert "default" in names(admin.get("/api/v1/tenants", params={"limit": 200}))

    assert_problem(admin.post("/api/v1/tenants", json={"id": tid, "name": "Again"}), 409, "exists")
    for bad in ("Upper", "-dash", "under_score", "a" * 65, "dot.ted"):
        assert_problem(admin.post("/api/v1/tenants", json={"id": bad, "name": "x"}), 422)
    # A refused first admin leaves no tenant behind.
    other = unique("t")
    assert_problem(
        admin.post(
            "/api/v1/tenants",
            json={
                "id": other,
                "name": "x",
                "admin": {"username": unique("u"), "password": "short"},
            },
        ),
        422,
    )
    assert_problem(
        admin.post(
            "/api/v1/tenants",
            json={"id": other, "name": "x", "admin": {"username": boss, "password": "long-enough"}},
        ),
        409,
        "taken",
    )
    assert_problem(admin.get(f"/api/v1/tenants/{other}"), 404)

    resp = admin.patch(f"/api/v1/tenants/{tid}", json={"name": "Acme Corp"})
    assert resp.status_code == 200, resp.text
    assert admin.get(f"/api/v1/tenants/{tid}").json()["name"] == "Acme Corp"
    assert_problem(admin.patch(f"/api/v1/tenants/{unique('t')}", json={"name": "x"}), 404)

    # The first admin works in the new tenant, then goes with it.
    with client(server.url, token_for(server.url, boss, password)) as tadmin:
        assert tadmin.get("/api/v1/me").json()["tenant_id"] == tid
        assert tadmin.post("/api/v1/devices", json={"id": "d1"}).status_code == 201
        assert admin.delete(f"/api/v1/tenants/{tid}").status_code == 204
        assert_problem(tadmin.get("/api/v1/devices"), 401)
    assert_problem(admin.get(f"/api/v1/tenants/{tid}"), 404)
    assert admin.get("/api/v1/tenants", params={"q": tid}).json()["total"] == 0
    assert_problem(admin.delete(f"/api/v1/tenants/{tid}"), 404)
    assert_problem(login(server.url, boss, password), 401, BAD_LOGIN)

    assert_problem(admin.delete("/api/v1/tenants/default"), 409, "default tenant")
    assert admin.get("/api/v1/tenants/default").status_code == 200


def test_audit_of_user_and_tenant_changes_holds_no_password(
    org: Tenant, admin: Api, server: RoostServer
) -> None:
    member, passwords = unique("member"), ["member-first-pw", "member-second-pw"]
    resp = org.admin.post(
        "/api/v1/users", json={"username": member, "password": passwords[0], "role": "viewer"}
    )
    assert resp.status_code == 201, resp.text
    uid = resp.json()["id"]
    for change in ({"password": passwords[1]}, {"role": "operator"}):
        assert org.admin.patch(f"/api/v1/users/{uid}", json=change).status_code == 200
    # An admin's reset takes: the new password logs in.
    assert login(server.url, member, passwords[1]).status_code == 200
    assert org.admin.delete(f"/api/v1/users/{uid}").status_code == 204

    boss = org.usernames["admin"]
    members = org.admin.get(
        "/api/v1/audit", params={"entity_type": "user", "entity_id": member, "sort": "id"}
    )
    assert [(e["actor"], e["action"]) for e in members.json()["items"]] == [
        (boss, "create"),
        (boss, "update"),
        (boss, "update"),
        (boss, "delete"),
    ]
    created, password_change, role_change, deleted = members.json()["items"]
    assert created["after"]["role"] == "viewer" and created["before"] is None
    assert password_change["after"]["password_changed"] is True
    assert "password_changed" not in password_change["before"]
    assert role_change["before"]["role"] == "viewer" and role_change["after"]["role"] == "operator"
    assert deleted["before"]["username"] == member and deleted["after"] is None
    # The tenant's first admin, made with the tenant, and the tenant itself (platform log).
    first = org.admin.get("/api/v1/audit", params={"entity_type": "user", "entity_id": boss})
    assert [(e["actor"], e["action"]) for e in first.json()["items"]] == [("admin", "create")]
    tenant_log = admin.get("/api/v1/audit", params={"entity_type": "tenant", "entity_id": org.id})
    assert names(tenant_log, "action") == ["create"]
    for text in (members.text, first.text, tenant_log.text):
        assert "password_hash" not in text and "$argon2" not in text
        assert not any(pw in text for pw in [*passwords, *org.passwords.values()])


# -- API keys -------------------------------------------------------------------------------------


def create_key(api: Api, **body: Any) -> dict[str, Any]:
    """Create an API key; answers the creation body (with the key)."""
    resp = api.post("/api/v1/api-keys", json={"name": unique("key"), **body})
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


def key_row(api: Api, key_id: str) -> dict[str, Any] | None:
    """The key as a client's list shows it, or None when the list does not show it."""
    resp = api.get("/api/v1/api-keys", params={"limit": 500})
    assert resp.status_code == 200, resp.text
    rows = [row for row in resp.json()["items"] if row["id"] == key_id]
    return rows[0] if rows else None


def test_an_api_key_is_shown_once_and_works_as_a_bearer(org: Tenant, server: RoostServer) -> None:
    name = unique("ci")
    resp = org.operator.post("/api/v1/api-keys", json={"name": name})
    assert resp.status_code == 201, resp.text
    created = resp.json()
    key = created["key"]
    assert key.startswith(f"roost_{created['id']}_") and len(key) > 40
    assert (created["name"], created["role"]) == (name, "operator")
    assert created["user_id"] == user_id(org.operator)
    assert created["username"] == org.usernames["operator"]
    assert created["expires_at"] is None and created["revoked_at"] is None

    listing = org.operator.get("/api/v1/api-keys")
    secret = key.removeprefix(f"roost_{created['id']}_")
    assert key not in listing.text and secret not in listing.text
    row = key_row(org.operator, created["id"])
    assert row is not None and "key" not in row and row["last_used_at"] is None
    assert row["username"] == org.usernames["operator"]

    with client(server.url, key) as api:
        assert api.get("/api/v1/me").json()["username"] == org.usernames["operator"]
        device = unique("dev")
        assert api.post("/api/v1/devices", json={"id": device}).status_code == 201
    assert org.viewer.get(f"/api/v1/devices/{device}").status_code == 200
    row = key_row(org.operator, created["id"])
    assert row is not None and row["last_used_at"] is not None
    # A key with a valid shape but a wrong secret is refused.
    with client(server.url, key[:-4] + "AAAA") as forged:
        assert_problem(forged.get("/api/v1/me"), 401, "invalid API key")


def test_a_revoked_key_is_refused_at_once(org: Tenant, server: RoostServer) -> None:
    created = create_key(org.viewer)
    with client(server.url, created["key"]) as api:
        assert api.get("/api/v1/devices").status_code == 200
        assert org.viewer.delete(f"/api/v1/api-keys/{created['id']}").status_code == 204
        assert_problem(api.get("/api/v1/devices"), 401, "revoked")
    row = key_row(org.viewer, created["id"])
    assert row is not None and row["revoked_at"] is not None
    assert org.viewer.delete(f"/api/v1/api-keys/{created['id']}").status_code == 204  # idempotent
    assert key_row(org.viewer, created["id"]) == row
    assert_problem(org.viewer.delete("/api/v1/api-keys/000000000000"), 404)


def test_a_key_never_has_more_than_its_creators_role(org: Tenant, server: RoostServer) -> None:
    refused = unique("refused")
    assert_problem(
        org.viewer.post("/api/v1/api-keys", json={"name": refused, "role": "operator"}),
        403,
        "viewer",
    )
    assert_problem(
        org.operator.post("/api/v1/api-keys", json={"name": refused, "role": "admin"}),
        403,
        "operator",
    )
    assert refused not in org.admin.get("/api/v1/api-keys", params={"limit": 500}).text

    weaker = create_key(org.operator, role="viewer")
    assert weaker["role"] == "viewer"
    with client(server.url, weaker["key"]) as api:
        assert api.get("/api/v1/devices").status_code == 200
        assert_problem(api.post("/api/v1/devices", json={"id": unique("dev")}), 403, "operator")
        assert_problem(api.get("/api/v1/audit"), 403)
        # A key cannot mint a key stronger than itself either.
        assert_problem(
            api.post("/api/v1/api-keys", json={"name": refused, "role": "operator"}), 403
        )

    admin_key = create_key(org.admin, role="admin")
    with client(server.url, admin_key["key"]) as api:
        assert api.get("/api/v1/users").status_code == 200
        assert_problem(api.get("/api/v1/tenants"), 403, "superuser")


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ({"expires_at": "2020-01-01T00:00:00Z"}, "future"),
        ({"expires_at": "2020-01-01T00:00:00"}, "expires_at"),  # no zone: ambiguous, refused
        ({"expires_at": "2099-01-01T00:00:00"}, "expires_at"),
        ({"expires_at": "soon"}, "expires_at"),
        ({"role": "root"}, "role"),
        ({"name": "   "}, "name"),
        ({"name": ""}, "name"),
        ({"secret": "mine"}, "secret"),
    ],
    ids=[
        "expired",
        "naive-past",
        "naive-future",
        "not-a-time",
        "bad-role",
        "blank-name",
        "empty-name",
        "unknown-field",
    ],
)
def test_bad_api_key_requests_are_refused(org: Tenant, body: dict[str, Any], phrase: str) -> None:
    body = {"name": unique("bad"), **body}
    name = body["name"]
    assert_problem(org.operator.post("/api/v1/api-keys", json=body), 422, phrase)
    if name.strip():
        assert name not in org.operator.get("/api/v1/api-keys", params={"limit": 500}).text


def test_a_key_may_expire_later(org: Tenant, server: RoostServer) -> None:
    later = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    created = create_key(org.operator, expires_at=later.isoformat())
    assert datetime.fromisoformat(created["expires_at"]) == later
    with client(server.url, created["key"]) as api:
        assert api.get("/api/v1/devices").status_code == 200


def test_operators_see_their_own_keys_and_admins_all(org: Tenant, server: RoostServer) -> None:
    keys = {role: create_key(getattr(org, role)) for role in ("operator", "viewer", "admin")}
    op_id = user_id(org.operator)
    mine = org.operator.get("/api/v1/api-keys", params={"limit": 500}).json()["items"]
    assert {row["user_id"] for row in mine} == {op_id}
    assert keys["operator"]["id"] in {row["id"] for row in mine}
    every = org.admin.get("/api/v1/api-keys", params={"limit": 500}).json()["items"]
    assert {key["id"] for key in keys.values()} <= {row["id"] for row in every}

    # Someone else's key is not there for a non-admin, and stays valid.
    assert_problem(org.viewer.delete(f"/api/v1/api-keys/{keys['operator']['id']}"), 404)
    assert_problem(org.operator.delete(f"/api/v1/api-keys/{keys['admin']['id']}"), 404)
    with client(server.url, keys["operator"]["key"]) as api:
        assert api.get("/api/v1/devices").status_code == 200
    # A tenant admin may revoke anyone's key in the tenant.
    assert org.admin.delete(f"/api/v1/api-keys/{keys['viewer']['id']}").status_code == 204
    with client(server.url, keys["viewer"]["key"]) as api:
        assert_problem(api.get("/api/v1/devices"), 401, "revoked")


def test_a_keys_rights_follow_its_user(org: Tenant, server: RoostServer) -> None:
    username, password = unique("bot-owner"), "bot-owner-password"
    resp = org.admin.post(
        "/api/v1/users", json={"username": username, "password": password, "role": "operator"}
    )
    assert resp.status_code == 201, resp.text
    uid = resp.json()["id"]
    with client(server.url, token_for(server.url, username, password)) as owner:
        key = create_key(owner)
    with client(server.url, key["key"]) as api:
        assert api.post("/api/v1/devices", json={"id": unique("dev")}).status_code == 201
        # Demoted: the key keeps its stored role but acts as a viewer.
        assert org.admin.patch(f"/api/v1/users/{uid}", json={"role": "viewer"}).status_code == 200
        assert_problem(api.post("/api/v1/devices", json={"id": unique("dev")}), 403, "viewer")
        assert api.get("/api/v1/devices").status_code == 200
        # Disabled: refused.
        assert org.admin.patch(f"/api/v1/users/{uid}", json={"disabled": True}).status_code == 200
        assert_problem(api.get("/api/v1/devices"), 401, "disabled")
        # Deleted: the key goes with the user.
        assert org.admin.delete(f"/api/v1/users/{uid}").status_code == 204
        assert_problem(api.get("/api/v1/devices"), 401, "invalid API key")
    assert key_row(org.admin, key["id"]) is None


def test_audit_names_keys_and_their_use(org: Tenant, server: RoostServer) -> None:
    created = create_key(org.operator)
    kid, operator = created["id"], org.usernames["operator"]
    with client(server.url, created["key"]) as api:
        device = unique("dev")
        assert api.post("/api/v1/devices", json={"id": device}).status_code == 201
    assert org.admin.delete(f"/api/v1/api-keys/{kid}").status_code == 204

    resp = org.operator.get(
        "/api/v1/audit", params={"entity_type": "api_key", "entity_id": kid, "sort": "id"}
    )
    entries = resp.json()["items"]
    assert [(e["action"], e["actor"]) for e in entries] == [
        ("create", operator),
        ("revoke", org.usernames["admin"]),
    ]
    assert entries[0]["after"]["role"] == "operator"
    assert entries[1]["before"]["revoked_at"] is None and entries[1]["after"]["revoked_at"]
    assert created["key"] not in resp.text and "secret_hash" not in resp.text

    by_key = f"{operator}/apikey:{kid}"
    resp = org.operator.get("/api/v1/audit", params={"actor": by_key})
    assert [(e["action"], e["entity_type"], e["entity_id"]) for e in resp.json()["items"]] == [
        ("create", "device", device)
    ]


# -- sessions, key minting and the last admin -------------------------------------------------


def test_logout_ends_every_session_of_the_user(tenant: Tenant, server: RoostServer) -> None:
    username, password = tenant.usernames["operator"], tenant.passwords["operator"]
    with client(server.url, token_for(server.url, username, password)) as second:
        assert second.get("/api/v1/me").status_code == 200
        assert tenant.operator.post("/api/v1/auth/logout").status_code == 204
        for session in (tenant.operator, second):
            assert_problem(session.get("/api/v1/me"), 401, "logged out")
    # Logging in again opens a working session; other users were not affected.
    with client(server.url, token_for(server.url, username, password)) as again:
        assert again.get("/api/v1/me").json()["username"] == username
    assert tenant.viewer.get("/api/v1/me").status_code == 200


def test_an_api_key_cannot_create_keys(tenant: Tenant, server: RoostServer) -> None:
    key = create_key(tenant.admin, name="automation")["key"]
    with client(server.url, key) as automation:
        assert automation.get("/api/v1/devices").status_code == 200
        assert_problem(automation.post("/api/v1/api-keys", json={"name": "child"}), 403, "password")
        # A well-formed request this credential may not make: 403 (schemathesis: not 422).
        assert_problem(automation.post("/api/v1/auth/logout"), 403, "revoke")
    listed = tenant.admin.get("/api/v1/api-keys").json()["items"]
    assert [k["name"] for k in listed] == ["automation"]


def test_the_superuser_makes_keys_only_in_its_own_tenant(tenant: Tenant, admin: Api) -> None:
    inside = {"X-Roost-Tenant": tenant.id}
    resp = admin.post("/api/v1/api-keys", json={"name": "misplaced"}, headers=inside)
    assert_problem(resp, 403, "X-Roost-Tenant")
    assert tenant.admin.get("/api/v1/api-keys").json()["total"] == 0
    own = create_key(admin, name=unique("superuser-key"))
    assert admin.delete(f"/api/v1/api-keys/{own['id']}").status_code == 204


def test_a_tenant_keeps_an_enabled_admin(tenant: Tenant) -> None:
    me = user_id(tenant.admin)
    path = f"/api/v1/users/{me}"
    for change in ({"role": "operator"}, {"disabled": True}):
        assert_problem(tenant.admin.patch(path, json=change), 409, "last admin")
    assert_problem(tenant.admin.delete(path), 409, "last admin")
    assert tenant.admin.get(path).json()["role"] == "admin"
    # With a second admin, the first may step down.
    operator_id = user_id(tenant.operator)
    resp = tenant.admin.patch(f"/api/v1/users/{operator_id}", json={"role": "admin"})
    assert resp.status_code == 200, resp.text
    resp = tenant.admin.patch(path, json={"role": "viewer"})
    assert resp.status_code == 200, resp.text
    assert tenant.operator.get(path).json()["role"] == "viewer"
