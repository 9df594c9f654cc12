"""Device keys and SAS tokens, enrollment groups and attestation bootstrap, through the running
server on each backend: a device goes from nothing to publishing telemetry, and every bad
credential is refused with nothing stored."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.exceptions import InvalidStatus

from roost.credentials.keys import sas
from tests.conftest import Tenant
from tests.support import Api, RoostServer, assert_problem, unique

V1 = "/api/v1"
HOUR = 3600


def created(api: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post(f"{V1}{path}", json=body)
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


def new_device(tenant: Tenant) -> str:
    return str(created(tenant.operator, "/devices", {"id": unique("dev")})["id"])


def device_sas(tenant_id: str, device_id: str, key: str, *, expiry: int | None = None,
               key_name: str | None = None) -> str:  # fmt: skip
    expiry = int(time.time()) + HOUR if expiry is None else expiry
    resource = sas.device_resource(tenant_id, device_id)
    return sas.sign(base64.b64decode(key), resource, expiry, key_name=key_name)


def publish(server: RoostServer, authorization: str, value: float) -> httpx.Response:
    return httpx.post(
        f"{server.url}{V1}/telemetry",
        content=orjson.dumps({"sensor_id": "t", "value": value}),
        headers={"Authorization": authorization, "Content-Type": "application/json"},
    )


def stored(api: Api, device_id: str) -> list[Any]:
    resp = api.get(f"{V1}/devices/{device_id}/telemetry", params={"sensor": "t", "order": "asc"})
    if resp.status_code == 404:  # the sensor was never made: nothing stored
        return []
    assert resp.status_code == 200, resp.text
    return [item["value"] for item in resp.json()["items"]]


# -- device keys and SAS tokens on HTTP and WebSocket --------------------------------------


def test_device_keys_are_shown_once_and_sign_sas_tokens_for_http(
    server: RoostServer, tenant: Tenant
) -> None:
    device_id = new_device(tenant)
    key = created(tenant.operator, f"/devices/{device_id}/keys", {"name": "factory"})
    assert key["id"].startswith("key_") and key["device_id"] == device_id
    assert len(base64.b64decode(key["key"])) == 32
    listed = tenant.viewer.get(f"{V1}/devices/{device_id}/keys").json()
    assert listed["total"] == 1 and "key" not in listed["items"][0]
    assert listed["items"][0]["name"] == "factory" and listed["items"][0]["revoked_at"] is None

    # With the key named (skn) and without: the device's keys are tried.
    assert publish(server, device_sas(tenant.id, device_id, key["key"]), 1.0).status_code == 200
    named = device_sas(tenant.id, device_id, key["key"], key_name=key["id"])
    assert publish(server, named, 2.0).status_code == 200
    assert stored(tenant.viewer, device_id) == [1.0, 2.0]


def test_bad_sas_tokens_are_refused_with_nothing_stored(
    server: RoostServer, tenant: Tenant
) -> None:
    device_id = new_device(tenant)
    other_id = new_device(tenant)
    key = created(tenant.operator, f"/devices/{device_id}/keys", {})["key"]
    other_key = created(tenant.operator, f"/devices/{other_id}/keys", {})["key"]
    valid = device_sas(tenant.id, device_id, key)
    refusals = {
        "expired": device_sas(tenant.id, device_id, key, expiry=int(time.time()) - 1),
        "forged": device_sas(tenant.id, device_id, sas.new_key()),
        "another device's key": device_sas(tenant.id, device_id, other_key),
        "another tenant": device_sas(unique("t"), device_id, key),
        "tampered expiry": valid.replace("&se=", "&se=9"),
        "malformed": "SharedAccessSignature sr=x&sig=abc",
        "unknown key name": device_sas(tenant.id, device_id, key, key_name="key_nope"),
    }
    for label, token in refusals.items():
        resp = publish(server, token, 9.0)
        assert resp.status_code == 401, (label, resp.text)
    assert stored(tenant.viewer, device_id) == []


def test_revoking_a_key_refuses_its_tokens_at_once(server: RoostServer, tenant: Tenant) -> None:
    device_id = new_device(tenant)
    first = created(tenant.operator, f"/devices/{device_id}/keys", {})
    second = created(tenant.operator, f"/devices/{device_id}/keys", {})
    token = device_sas(tenant.id, device_id, first["key"])
    assert publish(server, token, 1.0).status_code == 200
    assert tenant.viewer.delete(f"{V1}/devices/{device_id}/keys/{first['id']}").status_code == 403
    resp = tenant.operator.delete(f"{V1}/devices/{device_id}/keys/{first['id']}")
    assert resp.status_code == 204, resp.text
    assert_problem(publish(server, token, 2.0), 403, "revoked")
    named = device_sas(tenant.id, device_id, first["key"], key_name=first["id"])
    assert_problem(publish(server, named, 3.0), 403, "revoked")
    # The device's other key still works; the revoked one is listed as such.
    assert publish(server, device_sas(tenant.id, device_id, second["key"]), 4.0).status_code == 200
    assert stored(tenant.viewer, device_id) == [1.0, 4.0]
    items = tenant.viewer.get(f"{V1}/devices/{device_id}/keys").json()["items"]
    assert {i["id"]: i["revoked_at"] is not None for i in items} == {
        first["id"]: True,
        second["id"]: False,
    }
    # Revoking again changes nothing; an unknown key is 404.
    resp = tenant.operator.delete(f"{V1}/devices/{device_id}/keys/{first['id']}")
    assert resp.status_code == 204
    assert_problem(tenant.operator.delete(f"{V1}/devices/{device_id}/keys/key_nope"), 404)


def test_device_keys_of_another_tenant_are_not_found(
    server: RoostServer, tenant: Tenant, admin: Api
) -> None:
    device_id = new_device(tenant)
    key = created(tenant.operator, f"/devices/{device_id}/keys", {})
    # The superuser acts in the default tenant: the device is not there.
    assert_problem(admin.get(f"{V1}/devices/{device_id}/keys"), 404)
    assert_problem(admin.post(f"{V1}/devices/{device_id}/keys", json={}), 404)
    assert_problem(admin.delete(f"{V1}/devices/{device_id}/keys/{key['id']}"), 404)
    assert_problem(tenant.viewer.post(f"{V1}/devices/{device_id}/keys", json={}), 403)
    assert_problem(
        tenant.operator.post(f"{V1}/devices/{device_id}/keys", json={"name": "x" * 201}), 422
    )
    assert_problem(tenant.operator.post(f"{V1}/devices/{device_id}/keys", json={"k": 1}), 422)


def _ws_url(server: RoostServer) -> str:
    return server.url.replace("http://", "ws://") + f"{V1}/ws/ingest"


async def _ws_send(server: RoostServer, authorization: str, value: float) -> int | dict[str, Any]:
    try:
        async with websockets.connect(
            _ws_url(server), additional_headers={"Authorization": authorization}
        ) as ws:
            await ws.send(orjson.dumps({"sensor_id": "t", "value": value}).decode())
            ack: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            return ack
    except InvalidStatus as exc:
        return exc.response.status_code


def test_sas_tokens_open_the_websocket_ingest_door(server: RoostServer, tenant: Tenant) -> None:
    device_id = new_device(tenant)
    key = created(tenant.operator, f"/devices/{device_id}/keys", {})
    token = device_sas(tenant.id, device_id, key["key"])
    ack = asyncio.run(_ws_send(server, token, 5.0))
    assert isinstance(ack, dict) and ack["accepted"] == 1, ack
    expired = device_sas(tenant.id, device_id, key["key"], expiry=int(time.time()) - 10)
    assert asyncio.run(_ws_send(server, expired, 6.0)) == 401
    assert (
        asyncio.run(_ws_send(server, device_sas(tenant.id, device_id, sas.new_key()), 6.0)) == 401
    )
    tenant.operator.delete(f"{V1}/devices/{device_id}/keys/{key['id']}")
    assert asyncio.run(_ws_send(server, token, 7.0)) == 403
    assert stored(tenant.viewer, device_id) == [5.0]


# -- enrollment groups -------------------------------------------------------------------


def registration_sas(enrollment_id: str, registration_id: str, group_key: str,
                     expiry: int | None = None, key_name: str = "registration") -> str:  # fmt: skip
    derived = sas.derive_key(base64.b64decode(group_key), registration_id)
    expiry = int(time.time()) + HOUR if expiry is None else expiry
    resource = sas.registration_resource(enrollment_id, registration_id)
    return sas.sign(derived, resource, expiry, key_name=key_name)


def register(server: RoostServer, registration_id: str, authorization: str | None,
             **body: Any) -> httpx.Response:  # fmt: skip
    headers = {"Authorization": authorization} if authorization else {}
    return httpx.post(
        f"{server.url}{V1}/provisioning/register",
        json={"registration_id": registration_id, **body},
        headers=headers,
    )


def test_group_enrollment_takes_a_device_from_nothing_to_publishing(
    server: RoostServer, tenant: Tenant
) -> None:
    op = tenant.operator
    site = created(op, "/sites", {"id": unique("site"), "name": "Store"})["id"]
    group = created(op, "/groups", {"id": unique("grp"), "name": "Tills"})["id"]
    enrollment = created(
        op, "/enrollments", {"site_id": site, "group_ids": [group], "tags": {"kind": "till"}}
    )
    assert enrollment["enabled"] is True and len(base64.b64decode(enrollment["key"])) == 32
    registration_id = unique("sn")
    token = registration_sas(enrollment["id"], registration_id, enrollment["key"])

    resp = register(server, registration_id, token)
    assert resp.status_code == 200, resp.text
    first = resp.json()
    assert (first["device_id"], first["tenant_id"]) == (registration_id, tenant.id)
    assert first["created"] is True
    device = tenant.viewer.get(f"{V1}/devices/{registration_id}").json()
    assert device["site_id"] == site and device["groups"] == [group]
    assert device["tags"] == {"kind": "till"}
    assert publish(server, f"Bearer {first['token']}", 1.5).status_code == 200
    assert stored(tenant.viewer, registration_id) == [1.5]

    # Registering again: the same device, a new token.
    again = register(server, registration_id, token).json()
    assert again["device_id"] == registration_id and again["created"] is False
    assert again["token"] != first["token"]
    assert publish(server, f"Bearer {again['token']}", 2.5).status_code == 200
    assert tenant.viewer.get(f"{V1}/devices", params={"site_id": site}).json()["total"] >= 1


def test_registrations_with_bad_signatures_or_disabled_enrollments_are_refused(
    server: RoostServer, tenant: Tenant
) -> None:
    op = tenant.operator
    enrollment = created(op, "/enrollments", {"id": unique("enr")})
    eid, key = enrollment["id"], enrollment["key"]
    reg = unique("sn")
    refusals = {
        "no credential": None,
        "bearer": "Bearer abc",
        "forged": registration_sas(eid, reg, sas.new_key()),
        "expired": registration_sas(eid, reg, key, expiry=int(time.time()) - 5),
        "another registration id": registration_sas(eid, unique("sn"), key),
        "wrong key name": registration_sas(eid, reg, key, key_name="device"),
        "unknown enrollment": registration_sas(unique("enr"), reg, key),
        "malformed": "SharedAccessSignature sr=x",
    }
    for label, token in refusals.items():
        resp = register(server, reg, token)
        assert resp.status_code == 401, (label, resp.text)
    assert_problem(tenant.viewer.get(f"{V1}/devices/{reg}"), 404)

    resp = op.patch(f"{V1}/enrollments/{eid}", json={"enabled": False})
    assert resp.status_code == 200 and resp.json()["enabled"] is False
    assert_problem(register(server, reg, registration_sas(eid, reg, key)), 403, "disabled")
    assert_problem(tenant.viewer.get(f"{V1}/devices/{reg}"), 404)
    op.patch(f"{V1}/enrollments/{eid}", json={"enabled": True})
    assert register(server, reg, registration_sas(eid, reg, key)).status_code == 200
    assert_problem(register(server, "bad id!", registration_sas(eid, "bad id!", key)), 422)
    assert_problem(register(server, "", registration_sas(eid, reg, key)), 422)


def test_enrollments_crud_tenancy_and_bad_input(tenant: Tenant, admin: Api) -> None:
    op = tenant.operator
    given_key = base64.b64encode(secrets.token_bytes(64)).decode()
    eid = unique("enr")
    made = created(op, "/enrollments", {"id": eid, "key": given_key, "enabled": False})
    assert made["key"] == given_key and made["enabled"] is False
    assert_problem(op.post(f"{V1}/enrollments", json={"id": eid}), 409)
    got = tenant.viewer.get(f"{V1}/enrollments/{eid}").json()
    assert "key" not in got and got["group_ids"] == [] and got["tags"] == {}
    listed = tenant.viewer.get(f"{V1}/enrollments").json()
    assert [e["id"] for e in listed["items"]] == [eid] and "key" not in listed["items"][0]

    assert_problem(admin.get(f"{V1}/enrollments/{eid}"), 404)
    assert_problem(admin.patch(f"{V1}/enrollments/{eid}", json={"enabled": True}), 404)
    assert_problem(admin.delete(f"{V1}/enrollments/{eid}"), 404)
    assert eid not in [e["id"] for e in admin.get(f"{V1}/enrollments").json()["items"]]
    assert_problem(tenant.viewer.post(f"{V1}/enrollments", json={}), 403)
    assert_problem(tenant.viewer.patch(f"{V1}/enrollments/{eid}", json={"enabled": True}), 403)

    for body in (
        {"key": "not base64!"},
        {"key": base64.b64encode(b"short").decode()},
        {"id": "bad id"},
        {"group_ids": ["no-such-group"]},
        {"site_id": "no-such-site"},
        {"tags": {"a:b": "c"}},
        {"enabled": "yes"},
        {"unknown": 1},
    ):
        assert_problem(op.post(f"{V1}/enrollments", json=body), 422)
    assert_problem(op.patch(f"{V1}/enrollments/{eid}", json={"group_ids": ["nope"]}), 422)
    # A dynamic group chooses its members by its filter: refused when the enrollment is made,
    # rather than left out silently at a device's registration.
    dynamic = created(
        op, "/groups", {"id": unique("dyn"), "name": "d", "filter": {"tags": {"env": "prod"}}}
    )
    for resp in (
        op.post(f"{V1}/enrollments", json={"group_ids": [dynamic["id"]]}),
        op.patch(f"{V1}/enrollments/{eid}", json={"group_ids": [dynamic["id"]]}),
    ):
        problem = assert_problem(resp, 422)
        assert problem["errors"] == [
            {
                "field": "group_ids",
                "value": dynamic["id"],
                "message": f"group {dynamic['id']!r} is dynamic (its filter chooses its members)",
            }
        ]

    assert op.delete(f"{V1}/enrollments/{eid}").status_code == 204
    assert_problem(tenant.viewer.get(f"{V1}/enrollments/{eid}"), 404)


def new_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def test_a_csr_sent_when_provisioning_gets_a_certificate_of_the_platform_ca(
    server: RoostServer, tenant: Tenant
) -> None:
    enrollment = created(tenant.operator, "/enrollments", {})
    reg = unique("sn")
    token = registration_sas(enrollment["id"], reg, enrollment["key"])
    assert_problem(register(server, reg, token, csr="not a csr"), 422)
    assert_problem(tenant.viewer.get(f"{V1}/devices/{reg}"), 404)  # nothing was created
    resp = register(server, reg, token, csr=new_csr())
    assert resp.status_code == 200, resp.text
    pem = resp.json()["certificate"]
    certificate = x509.load_pem_x509_certificate(pem.encode())
    ca = x509.load_pem_x509_certificate(
        httpx.get(f"{server.url}{V1}/ca").json()["certificate"].encode()
    )
    assert certificate.issuer == ca.subject

    value = hardware_hash()
    created(tenant.operator, "/attestation-hashes", {"hashes": [value]})
    resp = httpx.post(
        f"{server.url}{V1}/provisioning/bootstrap",
        json={"hostname": unique("h"), "hash": value, "csr": new_csr()},
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["certificate"].startswith("-----BEGIN CERTIFICATE-----")


# -- attestation bootstrap ---------------------------------------------------------------


def hardware_hash() -> str:
    return hashlib.sha256(secrets.token_bytes(16)).hexdigest()


def bootstrap(server: RoostServer, hostname: str, value: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}{V1}/provisioning/bootstrap", json={"hostname": hostname, "hash": value}
    )


def test_attestation_bootstrap_takes_a_device_from_nothing_to_publishing_once(
    server: RoostServer, tenant: Tenant
) -> None:
    op = tenant.operator
    site = created(op, "/sites", {"id": unique("site"), "name": "Store"})["id"]
    value, spare = hardware_hash(), hardware_hash()
    stored_hashes = created(
        op, "/attestation-hashes", {"hashes": [value, spare], "site_id": site, "tags": {"a": 1}}
    )["items"]
    assert {h["hint"] for h in stored_hashes} == {value[:8], spare[:8]}
    listed = tenant.viewer.get(f"{V1}/attestation-hashes").json()
    assert listed["total"] == 2
    assert value not in orjson.dumps(listed).decode()  # only its first characters are shown

    hostname = unique("till") + ".store.example"
    resp = bootstrap(server, hostname, value)
    assert resp.status_code == 201, resp.text
    device = resp.json()
    assert device["device_id"] == hostname and device["tenant_id"] == tenant.id
    shown = tenant.viewer.get(f"{V1}/devices/{hostname}").json()
    assert shown["site_id"] == site and shown["tags"] == {"a": "1"}
    assert publish(server, f"Bearer {device['token']}", 3.5).status_code == 200
    assert stored(tenant.viewer, hostname) == [3.5]
    used = {h["hint"]: h for h in tenant.viewer.get(f"{V1}/attestation-hashes").json()["items"]}
    assert used[value[:8]]["device_id"] == hostname and used[value[:8]]["used_at"]

    # A replay and an unknown hash get the same answer; nothing is created.
    replay = assert_problem(bootstrap(server, unique("other"), value), 403)
    unknown = assert_problem(bootstrap(server, unique("other"), hardware_hash()), 403)
    assert replay["detail"] == unknown["detail"]
    assert tenant.viewer.get(f"{V1}/devices").json()["total"] == 1

    # The same hostname again (with another hash): a new device with a suffix, never the old one.
    second = bootstrap(server, hostname, spare)
    assert second.status_code == 201, second.text
    assert second.json()["device_id"].startswith(hostname + "-")


def test_attestation_hashes_bad_input_and_tenancy(
    server: RoostServer, tenant: Tenant, admin: Api
) -> None:
    op = tenant.operator
    for body in (
        {"hashes": []},
        {"hashes": ["abc"]},
        {"hashes": ["z" * 64]},
        {"hashes": [hardware_hash()], "group_ids": ["nope"]},
        {},
    ):
        assert_problem(op.post(f"{V1}/attestation-hashes", json=body), 422)
    # A dynamic group is refused at upload (it used to make the device's bootstrap fail with 409,
    # telling an unauthenticated caller about the configuration).
    dynamic = created(
        op, "/groups", {"id": unique("dyn"), "name": "d", "filter": {"tags": {"env": "prod"}}}
    )
    upload = {"hashes": [hardware_hash()], "group_ids": [dynamic["id"]]}
    problem = assert_problem(op.post(f"{V1}/attestation-hashes", json=upload), 422)
    assert "is dynamic" in problem["detail"]
    viewer_upload = tenant.viewer.post(
        f"{V1}/attestation-hashes", json={"hashes": [hardware_hash()]}
    )
    assert_problem(viewer_upload, 403)
    value = hardware_hash()
    entry = created(op, "/attestation-hashes", {"hashes": [value.upper()]})["items"][0]
    assert_problem(op.post(f"{V1}/attestation-hashes", json={"hashes": [value]}), 409)
    assert_problem(admin.delete(f"{V1}/attestation-hashes/{entry['id']}"), 404)
    assert entry["id"] not in orjson.dumps(admin.get(f"{V1}/attestation-hashes").json()).decode()
    assert op.delete(f"{V1}/attestation-hashes/{entry['id']}").status_code == 204
    assert_problem(bootstrap(server, unique("h"), value), 403)  # withdrawn
    assert_problem(bootstrap(server, "///", hardware_hash()), 422)
    assert_problem(bootstrap(server, unique("h"), "not-a-hash"), 422)


def test_refused_bootstraps_are_rate_limited_per_address(tmp_path: Path) -> None:
    # A server of its own: the budget of refusals belongs to the server process.
    own = RoostServer(tmp_path).start()
    try:
        for _ in range(10):
            assert_problem(bootstrap(own, unique("h"), hardware_hash()), 403)
        resp = bootstrap(own, unique("h"), hardware_hash())
        assert_problem(resp, 429)
        assert int(resp.headers["Retry-After"]) > 0
    finally:
        own.stop()
