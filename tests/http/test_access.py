"""Who may do what: every role's allowed and refused actions, and tenant isolation.

The role table is from ``roost.core.access``: a viewer reads the inventory; an operator also
changes it and reads the audit log; an admin also manages the tenant's users and API keys; only
the superuser manages tenants and acts in another tenant (header ``X-Roost-Tenant``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.identity.test_http import client, create_key, login, names, token_for, user_id
from tests.support import Api, RoostServer, assert_problem, unique

V1 = "/api/v1"
ROLES = ("anonymous", "viewer", "operator", "admin", "superuser")
RANK = {role: n for n, role in enumerate(ROLES)}


@dataclass
class World:
    """A tenant with a client per role; ``superuser`` acts in it through X-Roost-Tenant."""

    id: str
    clients: dict[str, Api]
    ids: dict[str, int]  # user id per role (anonymous: the viewer's)
    usernames: dict[str, str]
    root: Api  # the superuser in its own tenant
    bystander: Api  # one more user of the tenant, whose records others act on
    bystander_id: int
    password: str  # every user's of the tenant

    @property
    def admin(self) -> Api:
        return self.clients["admin"]


@pytest.fixture(scope="module")
def world(server: RoostServer, admin: Api) -> Iterator[World]:
    tid = unique("w")
    usernames = {role: f"{tid}-{role}" for role in ("admin", "operator", "viewer", "bystander")}
    password = f"pw-{tid}"
    resp = admin.post(
        f"{V1}/tenants",
        json={
            "id": tid,
            "name": "World",
            "admin": {"username": usernames["admin"], "password": password},
        },
    )
    assert resp.status_code == 201, resp.text
    clients = {"admin": client(server.url, token_for(server.url, usernames["admin"], password))}
    for role in ("operator", "viewer", "bystander"):
        resp = clients["admin"].post(
            f"{V1}/users",
            json={
                "username": usernames[role],
                "password": password,
                "role": "viewer" if role == "bystander" else role,
            },
        )
        assert resp.status_code == 201, resp.text
        clients[role] = client(server.url, token_for(server.url, usernames[role], password))
    bystander = clients.pop("bystander")
    clients["anonymous"] = client(server.url)
    clients["superuser"] = client(
        server.url, headers={"Authorization": admin.headers["authorization"], "X-Roost-Tenant": tid}
    )
    ids = {role: user_id(clients[role]) for role in ("admin", "operator", "viewer")}
    ids["superuser"], ids["anonymous"] = user_id(admin), ids["viewer"]
    seed = clients["admin"]
    for path, body in [
        ("sites", {"id": "site-seed", "name": "Seed site"}),
        ("devices", {"id": "dev-seed", "name": "Seed device", "site_id": "site-seed"}),
        ("devices/dev-seed/sensors", {"id": "temp", "type": "double", "unit": "C"}),
        ("devices/dev-seed/components", {"id": "board", "name": "Main board"}),
        ("groups", {"id": "grp-seed", "name": "Seed group"}),
        ("groups/grp-seed/devices", {"device_ids": ["dev-seed"]}),
    ]:
        resp = seed.post(f"{V1}/{path}", json=body)
        assert resp.status_code in (200, 201), resp.text
    w = World(tid, clients, ids, usernames, admin, bystander, user_id(bystander), password)
    yield w
    for api in (*clients.values(), bystander):
        api.close()


@pytest.fixture(scope="module")
def other(server: RoostServer, admin: Api) -> Iterator[Api]:
    """The admin of a second tenant."""
    tid, username, password = unique("b"), unique("b-admin"), "b-admin-password"
    resp = admin.post(
        f"{V1}/tenants",
        json={"id": tid, "name": "Other", "admin": {"username": username, "password": password}},
    )
    assert resp.status_code == 201, resp.text
    with client(server.url, token_for(server.url, username, password)) as api:
        yield api


# -- the role table -------------------------------------------------------------------------------


@dataclass
class Target:
    """One request, and how to tell afterwards whether it took effect."""

    path: str
    body: dict[str, Any] | None = None
    applied: Callable[[], bool] | None = None


@dataclass(frozen=True)
class Case:
    method: str
    needs: str  # the least role allowed
    ok: int
    target: Callable[[World, str], Target]
    refused: int = 403  # what a signed-in role below ``needs`` gets
    # What the superuser acting inside this tenant (X-Roost-Tenant) gets, when its rank is not
    # the whole story: its API keys belong to its own tenant.
    superuser: int | None = None


def _status(api: Api, path: str) -> int:
    return api.get(path).status_code


def _field(api: Api, path: str, name: str) -> Any:
    resp = api.get(path)
    assert resp.status_code == 200, resp.text
    return resp.json()[name]


def read(path: str) -> Callable[[World, str], Target]:
    return lambda w, role: Target(path.format(w=w))


def create(path: str, prefix: str, **body: Any) -> Callable[[World, str], Target]:
    def target(w: World, role: str) -> Target:
        new = unique(prefix)
        return Target(
            f"{V1}/{path}",
            {"id": new, **body},
            lambda: _status(w.admin, f"{V1}/{path}/{new}") == 200,
        )

    return target


def patch(path: str, name: str) -> Callable[[World, str], Target]:
    def target(w: World, role: str) -> Target:
        value = unique("v")
        return Target(path, {name: value}, lambda: _field(w.admin, path, name) == value)

    return target


def delete_fresh(collection: str, **body: Any) -> Callable[[World, str], Target]:
    def target(w: World, role: str) -> Target:
        new = unique("gone")
        assert w.admin.post(f"{V1}/{collection}", json={"id": new, **body}).status_code == 201
        path = f"{V1}/{collection}/{new}"
        return Target(path, None, lambda: _status(w.admin, path) == 404)

    return target


def add_group_member(w: World, role: str) -> Target:
    device = unique("member")
    assert w.admin.post(f"{V1}/devices", json={"id": device}).status_code == 201
    return Target(
        f"{V1}/groups/grp-seed/devices",
        {"device_ids": [device]},
        lambda: device in names(w.admin.get(f"{V1}/groups/grp-seed/devices")),
    )


def own_record(w: World, role: str) -> Target:
    return Target(f"{V1}/users/{w.ids[role]}")


def create_user(w: World, role: str) -> Target:
    username = unique("new-user")
    body = {"username": username, "password": "long-enough", "role": "viewer"}
    return Target(
        f"{V1}/users", body, lambda: names(w.admin.get(f"{V1}/users", params={"q": username})) != []
    )


def change_bystanders_role(w: World, role: str) -> Target:
    path = f"{V1}/users/{w.bystander_id}"
    assert w.admin.patch(path, json={"role": "viewer"}).status_code == 200
    return Target(path, {"role": "operator"}, lambda: _field(w.admin, path, "role") == "operator")


def delete_user(w: World, role: str) -> Target:
    if RANK[role] < RANK["admin"]:
        # Spare a password hash: whoever may not delete users tries on the bystander.
        path = f"{V1}/users/{w.bystander_id}"
    else:
        resp = w.admin.post(
            f"{V1}/users",
            json={"username": unique("doomed"), "password": "long-enough", "role": "viewer"},
        )
        assert resp.status_code == 201, resp.text
        path = f"{V1}/users/{resp.json()['id']}"
    return Target(path, None, lambda: _status(w.admin, path) == 404)


def _key_ids(w: World) -> dict[str, dict[str, Any]]:
    resp = w.admin.get(f"{V1}/api-keys", params={"limit": 1000})
    assert resp.status_code == 200, resp.text
    return {row["id"]: row for row in resp.json()["items"]}


def create_api_key(w: World, role: str) -> Target:
    name = unique("key")
    return Target(
        f"{V1}/api-keys",
        {"name": name},
        lambda: name in {row["name"] for row in _key_ids(w).values()},
    )


def revoke_key_of(owner: str | None) -> Callable[[World, str], Target]:
    """Revoke a key of ``owner`` (None: the caller's own key; the viewer's for anonymous)."""

    def target(w: World, role: str) -> Target:
        if owner is None and role == "superuser":
            # The superuser's own keys live in its own tenant, not in the one it acts in.
            kid = create_key(w.root)["id"]

            def revoked() -> bool:
                keys = w.root.get(f"{V1}/api-keys", params={"limit": 1000}).json()["items"]
                return next(k for k in keys if k["id"] == kid)["revoked_at"] is not None

            return Target(f"{V1}/api-keys/{kid}", None, revoked)
        if owner == "bystander":
            client = w.bystander
        else:
            client = w.clients[owner or ("viewer" if role == "anonymous" else role)]
        kid = create_key(client)["id"]
        return Target(
            f"{V1}/api-keys/{kid}", None, lambda: _key_ids(w)[kid]["revoked_at"] is not None
        )

    return target


def create_tenant(w: World, role: str) -> Target:
    tid = unique("t")
    return Target(
        f"{V1}/tenants",
        {"id": tid, "name": "New"},
        lambda: _status(w.root, f"{V1}/tenants/{tid}") == 200,
    )


def rename_own_tenant(w: World, role: str) -> Target:
    path, name = f"{V1}/tenants/{w.id}", unique("World")
    return Target(path, {"name": name}, lambda: _field(w.root, path, "name") == name)


def delete_tenant(w: World, role: str) -> Target:
    tid = unique("t")
    assert w.root.post(f"{V1}/tenants", json={"id": tid, "name": "Doomed"}).status_code == 201
    path = f"{V1}/tenants/{tid}"
    return Target(path, None, lambda: _status(w.root, path) == 404)


CASES: dict[str, Case] = {
    # inventory reads
    "list devices": Case("GET", "viewer", 200, read(f"{V1}/devices")),
    "get device": Case("GET", "viewer", 200, read(f"{V1}/devices/dev-seed")),
    "device history": Case("GET", "viewer", 200, read(f"{V1}/devices/dev-seed/history")),
    "list sensors": Case("GET", "viewer", 200, read(f"{V1}/devices/dev-seed/sensors")),
    "get sensor": Case("GET", "viewer", 200, read(f"{V1}/devices/dev-seed/sensors/temp")),
    "list components": Case("GET", "viewer", 200, read(f"{V1}/devices/dev-seed/components")),
    "get component": Case("GET", "viewer", 200, read(f"{V1}/devices/dev-seed/components/board")),
    "list sites": Case("GET", "viewer", 200, read(f"{V1}/sites")),
    "get site": Case("GET", "viewer", 200, read(f"{V1}/sites/site-seed")),
    "list groups": Case("GET", "viewer", 200, read(f"{V1}/groups")),
    "group members": Case("GET", "viewer", 200, read(f"{V1}/groups/grp-seed/devices")),
    "list models": Case("GET", "viewer", 200, read(f"{V1}/device-models")),
    "list firmware": Case("GET", "viewer", 200, read(f"{V1}/firmware")),
    "list manufacturers": Case("GET", "viewer", 200, read(f"{V1}/manufacturers")),
    # inventory writes
    "create device": Case("POST", "operator", 201, create("devices", "dev", name="New")),
    "rename device": Case("PATCH", "operator", 200, patch(f"{V1}/devices/dev-seed", "name")),
    "delete device": Case("DELETE", "operator", 204, delete_fresh("devices")),
    "create sensor": Case(
        "POST", "operator", 201, create("devices/dev-seed/sensors", "s", type="double")
    ),
    "change sensor": Case(
        "PATCH", "operator", 200, patch(f"{V1}/devices/dev-seed/sensors/temp", "name")
    ),
    "delete sensor": Case(
        "DELETE", "operator", 204, delete_fresh("devices/dev-seed/sensors", type="long")
    ),
    "create component": Case(
        "POST", "operator", 201, create("devices/dev-seed/components", "c", name="Part")
    ),
    "create site": Case("POST", "operator", 201, create("sites", "site", name="New")),
    "rename site": Case("PATCH", "operator", 200, patch(f"{V1}/sites/site-seed", "name")),
    "delete site": Case("DELETE", "operator", 204, delete_fresh("sites", name="Doomed")),
    "create group": Case("POST", "operator", 201, create("groups", "grp", name="New")),
    "add group member": Case("POST", "operator", 200, add_group_member),
    # audit
    "read audit": Case("GET", "operator", 200, read(f"{V1}/audit")),
    # users
    "own user record": Case("GET", "viewer", 200, own_record),
    "whoami": Case("GET", "viewer", 200, read(f"{V1}/me")),
    "list users": Case("GET", "admin", 200, read(f"{V1}/users")),
    "get another user": Case(
        "GET", "admin", 200, lambda w, role: Target(f"{V1}/users/{w.bystander_id}")
    ),
    "create user": Case("POST", "admin", 201, create_user),
    "change a user's role": Case("PATCH", "admin", 200, change_bystanders_role),
    "delete user": Case("DELETE", "admin", 204, delete_user),
    # API keys
    "list api keys": Case("GET", "viewer", 200, read(f"{V1}/api-keys")),
    "create api key": Case("POST", "viewer", 201, create_api_key, superuser=403),
    "revoke own api key": Case("DELETE", "viewer", 204, revoke_key_of(None), superuser=404),
    # someone else's key does not exist for a non-admin
    "revoke another's api key": Case(
        "DELETE", "admin", 204, revoke_key_of("bystander"), refused=404
    ),
    # tenants
    "get own tenant": Case("GET", "viewer", 200, read(f"{V1}/tenants/{{w.id}}")),
    "get another tenant": Case("GET", "superuser", 200, read(f"{V1}/tenants/default"), refused=404),
    "list tenants": Case("GET", "superuser", 200, read(f"{V1}/tenants")),
    "create tenant": Case("POST", "superuser", 201, create_tenant),
    "rename own tenant": Case("PATCH", "superuser", 200, rename_own_tenant),
    "delete tenant": Case("DELETE", "superuser", 204, delete_tenant),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(CASES))
def test_role_may_or_may_not(world: World, action: str, role: str) -> None:
    case = CASES[action]
    target = case.target(world, role)
    resp = world.clients[role].request(case.method, target.path, json=target.body)
    if role == "anonymous":
        assert_problem(resp, 401)
        allowed = False
    elif role == "superuser" and case.superuser is not None:
        assert_problem(resp, case.superuser)
        allowed = False
    elif RANK[role] >= RANK[case.needs]:
        assert resp.status_code == case.ok, resp.text
        allowed = True
    else:
        assert_problem(resp, case.refused)
        allowed = False
    if target.applied is not None:
        assert target.applied() is allowed


# -- users and the superuser ----------------------------------------------------------------------


def test_users_change_their_own_password_but_not_their_own_role(
    world: World, server: RoostServer
) -> None:
    me, uid = world.clients["viewer"], world.ids["viewer"]
    username, old, new = world.usernames["viewer"], world.password, "new-password"
    path = f"{V1}/users/{uid}"
    for change in ({"role": "admin"}, {"disabled": True}, {"password": new, "role": "admin"}):
        assert_problem(me.patch(path, json=change), 403, "admin")
    record = me.get(path).json()
    assert (record["role"], record["disabled"]) == ("viewer", False)
    # Nor anyone else's password.
    assert_problem(
        me.patch(f"{V1}/users/{world.ids['operator']}", json={"password": "hijacked-password"}), 403
    )
    assert_problem(me.patch(path, json={"password": "short"}), 422, "password")
    assert me.patch(path, json={"password": new}).status_code == 200
    # Sessions opened with the old password end; the new password is the one that logs in.
    assert_problem(me.get(f"{V1}/me"), 401, "password changed")
    assert_problem(login(server.url, username, old), 401)
    fresh = login(server.url, username, new)
    assert fresh.status_code == 200
    # The module's other tests go on with the viewer's new session.
    me.headers["Authorization"] = f"Bearer {fresh.json()['token']}"
    assert me.get(f"{V1}/me").json()["id"] == uid


def test_nobody_can_demote_disable_or_delete_the_superuser(
    server: RoostServer, admin: Api, world: World
) -> None:
    sid = user_id(admin)
    path = f"{V1}/users/{sid}"
    before = admin.get(path).json()
    assert (before["role"], before["disabled"], before["is_superuser"]) == ("admin", False, True)
    # Not the superuser itself...
    for change in ({"role": "operator"}, {"role": "viewer"}, {"disabled": True}):
        assert_problem(admin.patch(path, json=change), 409, "superuser")
    assert_problem(admin.delete(path), 409, "superuser")
    # ...nor an admin of the default tenant, who may not take over its password either...
    username, password = unique("default-admin"), "default-admin-password"
    resp = admin.post(
        f"{V1}/users", json={"username": username, "password": password, "role": "admin"}
    )
    assert resp.status_code == 201, resp.text
    try:
        with client(server.url, token_for(server.url, username, password)) as deputy:
            assert deputy.get(path).json()["is_superuser"] is True
            for change in ({"role": "viewer"}, {"disabled": True}):
                assert_problem(deputy.patch(path, json=change), 409, "superuser")
            assert_problem(deputy.delete(path), 409, "superuser")
            assert_problem(
                deputy.patch(path, json={"password": "hijacked-password"}), 403, "superuser"
            )
        # ...and for another tenant's admin the superuser does not exist.
        assert_problem(world.admin.patch(path, json={"role": "viewer"}), 404)
        assert_problem(world.admin.delete(path), 404)
    finally:
        assert admin.delete(f"{V1}/users/{resp.json()['id']}").status_code == 204
    # Nothing changed, the password included (it would have moved updated_at).
    assert admin.get(path).json() == before


# -- tenant isolation -----------------------------------------------------------------------------

A_RECORDS = [
    "devices/dev-seed",
    "devices/dev-seed/sensors/temp",
    "devices/dev-seed/components/board",
    "sites/site-seed",
    "groups/grp-seed",
]


def test_another_tenants_records_answer_404(world: World, other: Api) -> None:
    key = create_key(world.clients["operator"])
    user = f"users/{world.ids['viewer']}"
    for path in [
        *A_RECORDS,
        user,
        "devices/dev-seed/sensors",
        "devices/dev-seed/components",
        "devices/dev-seed/history",
        "groups/grp-seed/devices",
        f"tenants/{world.id}",
    ]:
        assert_problem(other.get(f"{V1}/{path}"), 404)
    before = {path: world.admin.get(f"{V1}/{path}").json() for path in [*A_RECORDS, user]}
    for path in A_RECORDS:
        assert_problem(other.patch(f"{V1}/{path}", json={"name": "taken over"}), 404)
    assert_problem(other.patch(f"{V1}/{user}", json={"role": "admin"}), 404)
    assert_problem(other.patch(f"{V1}/{user}", json={"password": "hijacked-password"}), 404)
    assert_problem(
        other.post(f"{V1}/devices/dev-seed/sensors", json={"id": "spy", "type": "long"}), 404
    )
    assert_problem(
        other.post(f"{V1}/groups/grp-seed/devices", json={"device_ids": ["dev-seed"]}), 404
    )
    for path in [*reversed(A_RECORDS), user, f"api-keys/{key['id']}"]:
        assert_problem(other.delete(f"{V1}/{path}"), 404)
    after = {path: world.admin.get(f"{V1}/{path}").json() for path in [*A_RECORDS, user]}
    assert after == before
    assert _key_ids(world)[key["id"]]["revoked_at"] is None


def test_lists_never_show_another_tenants_records(world: World, other: Api) -> None:
    key = create_key(world.clients["viewer"])
    own = unique("b-dev")
    assert other.post(f"{V1}/devices", json={"id": own}).status_code == 201
    listed = names(other.get(f"{V1}/devices", params={"limit": 1000}))
    assert own in listed and "dev-seed" not in listed
    assert names(other.get(f"{V1}/devices", params={"q": "dev-seed"})) == []
    assert "site-seed" not in names(other.get(f"{V1}/sites", params={"limit": 1000}))
    assert "grp-seed" not in names(other.get(f"{V1}/groups", params={"limit": 1000}))
    assert not set(names(other.get(f"{V1}/users"), "username")) & set(world.usernames.values())
    assert key["id"] not in names(other.get(f"{V1}/api-keys", params={"limit": 1000}))
    # The audit log: A's entries exist, and B sees none of them under any filter.
    assert world.admin.get(f"{V1}/audit", params={"device_id": "dev-seed"}).json()["total"] > 0
    for params in (
        {"entity_id": "dev-seed"},
        {"device_id": "dev-seed"},
        {"actor": world.usernames["admin"]},
        {"entity_type": "api_key"},
        {"entity_id": world.usernames["operator"]},
    ):
        assert other.get(f"{V1}/audit", params=params).json()["total"] == 0, params
    mine = other.get(f"{V1}/audit", params={"limit": 1000}).json()["items"]
    seen = {(e["entity_type"], e["entity_id"]) for e in mine}
    assert ("device", own) in seen
    theirs = {
        "dev-seed",
        "site-seed",
        "grp-seed",
        "grp-seed/dev-seed",
        "temp",
        "board",
        key["id"],
        world.id,
        *world.usernames.values(),
    }
    assert not {entity_id for _, entity_id in seen} & theirs
    assert not {e["actor"] for e in mine} & set(world.usernames.values())


def test_references_across_tenants_are_refused(world: World, other: Api) -> None:
    device = unique("b-dev")
    body = assert_problem(
        other.post(f"{V1}/devices", json={"id": device, "site_id": "site-seed"}),
        422,
        "unknown reference",
    )
    assert body["errors"] == [{"field": "site_id", "message": "no site 'site-seed'"}]
    assert_problem(other.get(f"{V1}/devices/{device}"), 404)

    assert other.post(f"{V1}/devices", json={"id": device}).status_code == 201
    assert_problem(
        other.patch(f"{V1}/devices/{device}", json={"site_id": "site-seed"}),
        422,
        "unknown reference",
    )
    assert other.get(f"{V1}/devices/{device}").json()["site_id"] is None

    group = unique("b-grp")
    assert other.post(f"{V1}/groups", json={"id": group, "name": "B's"}).status_code == 201
    assert_problem(
        other.post(f"{V1}/groups/{group}/devices", json={"device_ids": ["dev-seed"]}),
        422,
        "unknown devices",
    )
    assert names(other.get(f"{V1}/groups/{group}/devices")) == []
    body = assert_problem(
        other.post(f"{V1}/devices", json={"id": device + "x", "group_ids": ["grp-seed"]}), 422
    )
    assert body["errors"][0]["field"] == "group_ids"
    assert_problem(other.get(f"{V1}/devices/{device}x"), 404)
    assert world.admin.get(f"{V1}/devices/dev-seed").json()["groups"] == ["grp-seed"]


def test_the_same_ids_live_independently_in_each_tenant(world: World, other: Api) -> None:
    site, device = unique("twin-site"), unique("twin-dev")
    for api, owner in ((world.admin, "A"), (other, "B")):
        assert (
            api.post(f"{V1}/sites", json={"id": site, "name": f"{owner} site"}).status_code == 201
        )
        assert (
            api.post(
                f"{V1}/devices", json={"id": device, "name": f"{owner} device", "site_id": site}
            ).status_code
            == 201
        )
        assert (
            api.post(
                f"{V1}/devices/{device}/sensors",
                json={"id": "temp", "type": "double", "unit": owner},
            ).status_code
            == 201
        )
    for api, owner in ((world.admin, "A"), (other, "B")):
        assert api.get(f"{V1}/devices/{device}").json()["name"] == f"{owner} device"
        assert api.get(f"{V1}/sites/{site}").json()["name"] == f"{owner} site"
        assert api.get(f"{V1}/devices/{device}/sensors/temp").json()["unit"] == owner
    assert other.patch(f"{V1}/devices/{device}", json={"name": "B renamed"}).status_code == 200
    assert other.delete(f"{V1}/devices/{device}").status_code == 204
    assert other.delete(f"{V1}/sites/{site}").status_code == 204
    assert world.admin.get(f"{V1}/devices/{device}").json()["name"] == "A device"
    assert world.admin.get(f"{V1}/sites/{site}").status_code == 200
    assert_problem(other.get(f"{V1}/devices/{device}"), 404)


def test_only_the_superuser_acts_in_another_tenant(
    world: World, other: Api, admin: Api, server: RoostServer
) -> None:
    inside = {"X-Roost-Tenant": world.id}
    assert_problem(admin.get(f"{V1}/devices/dev-seed"), 404)  # not in its own tenant
    assert admin.get(f"{V1}/devices/dev-seed", headers=inside).json()["name"]
    assert world.usernames["viewer"] in names(admin.get(f"{V1}/users", headers=inside), "username")
    # Its own record stays reachable while it acts elsewhere.
    assert admin.get(f"{V1}/me", headers=inside).json()["username"] == "admin"
    assert_problem(
        admin.get(f"{V1}/devices", headers={"X-Roost-Tenant": unique("nowhere")}), 404, "no tenant"
    )

    # Anyone else sending the header is refused, even with an admin API key.
    assert_problem(other.get(f"{V1}/devices/dev-seed", headers=inside), 403, "superuser")
    assert_problem(other.post(f"{V1}/devices", json={"id": "intruder"}, headers=inside), 403)
    assert_problem(world.admin.get(f"{V1}/devices", headers={"X-Roost-Tenant": "default"}), 403)
    with client(server.url, create_key(other)["key"]) as key:
        assert_problem(key.get(f"{V1}/devices", headers=inside), 403, "superuser")
    assert_problem(world.admin.get(f"{V1}/devices/intruder"), 404)
    # Naming one's own tenant changes nothing.
    own = {"X-Roost-Tenant": world.id}
    assert world.clients["viewer"].get(f"{V1}/devices/dev-seed", headers=own).status_code == 200


def test_tenant_changes_stay_out_of_tenant_logs_and_die_with_the_tenant(
    world: World, admin: Api
) -> None:
    # Creating a tenant while acting in A is not A's business.
    created = unique("t")
    resp = admin.post(
        f"{V1}/tenants", json={"id": created, "name": "C"}, headers={"X-Roost-Tenant": world.id}
    )
    assert resp.status_code == 201, resp.text
    assert world.admin.get(f"{V1}/audit", params={"entity_id": created}).json()["total"] == 0
    platform = admin.get(f"{V1}/audit", params={"entity_type": "tenant", "entity_id": created})
    assert names(platform, "action") == ["create"]

    # A deleted tenant's log is not handed to a new tenant that takes its id.
    inside = {"X-Roost-Tenant": created}
    assert (
        admin.post(
            f"{V1}/devices", json={"id": "secret-dev", "name": "old owner's"}, headers=inside
        ).status_code
        == 201
    )
    assert admin.get(f"{V1}/audit", headers=inside).json()["total"] == 1
    assert admin.delete(f"{V1}/tenants/{created}", headers=inside).status_code == 204
    assert_problem(admin.get(f"{V1}/tenants/{created}"), 404)
    assert admin.post(f"{V1}/tenants", json={"id": created, "name": "New owner"}).status_code == 201
    assert admin.get(f"{V1}/audit", headers=inside).json()["total"] == 0
    assert_problem(admin.get(f"{V1}/devices/secret-dev", headers=inside), 404)
    platform = admin.get(
        f"{V1}/audit", params={"entity_type": "tenant", "entity_id": created, "sort": "id"}
    )
    assert names(platform, "action") == ["create", "delete", "create"]
