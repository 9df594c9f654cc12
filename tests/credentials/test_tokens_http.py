"""Device tokens through the running server: issue (shown once), list, revoke, roles, tenancy.

The device doors that take these tokens (HTTP ingest, WebSocket, MQTT) have their own tests;
here a token issued over HTTP is also checked by a ``DeviceAuthenticator`` of a Roost built in
this process on the server's store, as another process of the same deployment would.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from roost.config import load_settings
from roost.core.device_identity import DeviceIdentity
from roost.errors import PermissionDenied, RoostError
from roost.runtime import Roost
from tests.conftest import Tenant
from tests.support import SECRET_KEY, Api, RoostServer, assert_problem, unique

TOKEN_FIELDS = {"id", "token", "name", "created_at", "expires_at", "device_id"}
LISTED_FIELDS = {
    "id",
    "device_id",
    "name",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
}


def tokens_path(device_id: str, token_id: str | None = None) -> str:
    path = f"/api/v1/devices/{device_id}/tokens"
    return f"{path}/{token_id}" if token_id else path


def new_device(api: Api) -> str:
    device_id = unique("dev")
    resp = api.post("/api/v1/devices", json={"id": device_id})
    assert resp.status_code == 201, resp.text
    return device_id


def issue(api: Api, device_id: str, **body: Any) -> dict[str, Any]:
    resp = api.post(tokens_path(device_id), json=body)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, SECRET_KEY, algorithms=["HS256"], audience="roost:device", issuer="roost"
    )
    return claims


def listed(api: Api, device_id: str) -> list[dict[str, Any]]:
    resp = api.get(tokens_path(device_id))
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def audit_text(api: Api, device_id: str) -> str:
    resp = api.get("/api/v1/audit", params={"device_id": device_id, "limit": 1000})
    assert resp.status_code == 200, resp.text
    return resp.text


# -- issue and list --------------------------------------------------------------------------------


def test_an_operator_issues_a_token_that_is_shown_once(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    created = issue(tenant.operator, device_id, name="field unit")
    assert set(created) == TOKEN_FIELDS
    assert (created["name"], created["device_id"], created["expires_at"]) == (
        "field unit",
        device_id,
        None,
    )
    claims = claims_of(created["token"])
    assert (claims["sub"], claims["tid"], claims["jti"]) == (device_id, tenant.id, created["id"])
    assert "exp" not in claims
    created_at = datetime.fromisoformat(created["created_at"])
    assert abs(claims["iat"] - created_at.timestamp()) < 1

    items = listed(tenant.viewer, device_id)
    assert [item["id"] for item in items] == [created["id"]]
    assert set(items[0]) == LISTED_FIELDS
    assert items[0]["revoked_at"] is None and items[0]["last_used_at"] is None
    secret_part = created["token"].split(".")[2]
    for text in (
        tenant.viewer.get(tokens_path(device_id)).text,
        audit_text(tenant.operator, device_id),
        tenant.viewer.get(f"/api/v1/devices/{device_id}/history").text,
    ):
        assert created["token"] not in text and secret_part not in text
    entries = tenant.operator.get(
        "/api/v1/audit", params={"entity_type": "device_token", "entity_id": created["id"]}
    ).json()["items"]
    assert [(e["action"], e["device_id"]) for e in entries] == [("create", device_id)]


def test_a_token_may_expire(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    wanted = datetime.now(UTC) + timedelta(days=7, microseconds=250_000)
    created = issue(tenant.operator, device_id, expires_at=wanted.isoformat())
    expires = datetime.fromisoformat(created["expires_at"])
    assert expires == wanted.replace(microsecond=0)
    assert claims_of(created["token"])["exp"] == int(expires.timestamp())


def test_a_body_is_optional(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    resp = tenant.operator.post(tokens_path(device_id))
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == ""


@pytest.mark.parametrize(
    ("body", "status", "phrase"),
    [
        ({"expires_at": "2001-01-01T00:00:00Z"}, 422, "future"),
        ({"expires_at": "2099-01-01T00:00:00"}, 422, "timezone"),
        ({"expires_at": "tomorrow"}, 422, "expires_at"),
        ({"name": "x" * 201}, 422, "name"),
        ({"name": "nul\x00"}, 422, "NUL"),
        ({"role": "admin"}, 422, "role"),
    ],
)
def test_bad_bodies_are_refused(
    tenant: Tenant, body: dict[str, Any], status: int, phrase: str
) -> None:
    device_id = new_device(tenant.operator)
    assert_problem(tenant.operator.post(tokens_path(device_id), json=body), status, phrase)
    assert listed(tenant.viewer, device_id) == []


def test_the_list_pages_and_sorts(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    ids = [issue(tenant.operator, device_id, name=f"t{n}")["id"] for n in range(3)]
    resp = tenant.viewer.get(tokens_path(device_id), params={"limit": 2, "sort": "-created_at"})
    body = resp.json()
    assert (body["total"], body["limit"], body["offset"]) == (3, 2, 0)
    assert [item["id"] for item in body["items"]] == ids[::-1][:2]
    assert_problem(tenant.viewer.get(tokens_path(device_id), params={"sort": "token"}), 422)


# -- who may ---------------------------------------------------------------------------------------


def test_a_viewer_may_list_but_not_issue_or_revoke(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    token_id = issue(tenant.operator, device_id)["id"]
    assert_problem(tenant.viewer.post(tokens_path(device_id), json={}), 403)
    assert_problem(tenant.viewer.delete(tokens_path(device_id, token_id)), 403)
    assert len(listed(tenant.viewer, device_id)) == 1
    assert listed(tenant.viewer, device_id)[0]["revoked_at"] is None
    assert issue(tenant.admin, device_id)["device_id"] == device_id
    for resp in (
        tenant.anonymous.get(tokens_path(device_id)),
        tenant.anonymous.post(tokens_path(device_id), json={}),
        tenant.anonymous.delete(tokens_path(device_id, token_id)),
    ):
        assert_problem(resp, 401)


def test_another_tenants_device_and_tokens_do_not_exist(tenant: Tenant, admin: Api) -> None:
    device_id = new_device(tenant.operator)
    token_id = issue(tenant.operator, device_id)["id"]
    # The superuser, acting in its own tenant, does not see this tenant's devices.
    assert_problem(admin.post(tokens_path(device_id), json={}), 404)
    assert_problem(admin.get(tokens_path(device_id)), 404)
    assert_problem(admin.delete(tokens_path(device_id, token_id)), 404)
    # A token id under another device of the same tenant does not exist either.
    other = new_device(tenant.operator)
    assert_problem(tenant.operator.delete(tokens_path(other, token_id)), 404)
    assert_problem(tenant.operator.delete(tokens_path(device_id, "no-such-token")), 404)
    assert_problem(tenant.viewer.get(tokens_path("no-such-device")), 404)
    assert listed(tenant.viewer, device_id)[0]["revoked_at"] is None


# -- revoke ----------------------------------------------------------------------------------------


def test_revoking_is_recorded_and_repeatable(tenant: Tenant) -> None:
    device_id = new_device(tenant.operator)
    created = issue(tenant.operator, device_id)
    kept = issue(tenant.operator, device_id)
    resp = tenant.operator.delete(tokens_path(device_id, created["id"]))
    assert resp.status_code == 204, resp.text
    states = {item["id"]: item["revoked_at"] for item in listed(tenant.viewer, device_id)}
    assert states[created["id"]] is not None and states[kept["id"]] is None
    assert tenant.operator.delete(tokens_path(device_id, created["id"])).status_code == 204
    assert listed(tenant.viewer, device_id)[0]["revoked_at"] == states[created["id"]]
    entries = tenant.operator.get(
        "/api/v1/audit", params={"entity_type": "device_token", "entity_id": created["id"]}
    ).json()["items"]
    assert [e["action"] for e in entries] == ["revoke", "create"]
    assert entries[0]["after"]["revoked_at"] is not None
    assert created["token"] not in audit_text(tenant.operator, device_id)


# -- the token works for the devices' doors --------------------------------------------------------


async def _authenticate_locally(server: RoostServer, tokens: list[str]) -> list[Any]:
    """Authenticate each token with a Roost of this process on the server's store.

    Answers the identity, or the error, per token; closing the Roost writes the usage times.
    """
    settings = load_settings(
        {},
        data_dir=server.data_dir,
        database_url=server.database_url or None,
        secret_key=SECRET_KEY,
    )
    roost = Roost.build(settings)
    await roost.start()
    results: list[DeviceIdentity | RoostError] = []
    try:
        for token in tokens:
            try:
                results.append(await roost.device_auth.authenticate_token(token))
            except RoostError as exc:
                results.append(exc)
    finally:
        await roost.close()
    return results


def test_a_token_issued_over_http_authenticates_its_device(
    server: RoostServer, tenant: Tenant
) -> None:
    device_id = new_device(tenant.operator)
    good = issue(tenant.operator, device_id)
    revoked = issue(tenant.operator, device_id)
    assert tenant.operator.delete(tokens_path(device_id, revoked["id"])).status_code == 204

    identity, refusal = asyncio.run(
        _authenticate_locally(server, [good["token"], revoked["token"]])
    )
    assert isinstance(identity, DeviceIdentity)
    assert (identity.tenant_id, identity.device_id, identity.credential_id) == (
        tenant.id,
        device_id,
        good["id"],
    )
    assert isinstance(refusal, PermissionDenied) and refusal.status == 403
    # The use was recorded (written when the local Roost closed).
    used = {item["id"]: item["last_used_at"] for item in listed(tenant.viewer, device_id)}
    assert used[good["id"]] is not None and used[revoked["id"]] is None

    # Deleting the device takes its tokens along.
    assert tenant.operator.delete(f"/api/v1/devices/{device_id}").status_code == 204
    (after_delete,) = asyncio.run(_authenticate_locally(server, [good["token"]]))
    assert isinstance(after_delete, PermissionDenied)
    assert_problem(tenant.viewer.get(tokens_path(device_id)), 404)


def test_device_token_routes_are_documented(server: RoostServer) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert set(paths["/api/v1/devices/{device_id}/tokens"]) == {"get", "post"}
    assert set(paths["/api/v1/devices/{device_id}/tokens/{token_id}"]) == {"delete"}
