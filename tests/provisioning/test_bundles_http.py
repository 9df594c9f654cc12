"""``POST /api/v1/provisioning/bundles`` through the running server on each backend: the bundle's
devices are created where asked, its credentials open the server, and bad requests are refused
with nothing made."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import orjson

from roost.credentials.keys import sas
from tests.conftest import Tenant
from tests.support import Api, RoostServer, assert_problem, unique

V1 = "/api/v1"
BUNDLES = f"{V1}/provisioning/bundles"


def created(api: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post(f"{V1}{path}", json=body)
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


def bundle(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post(BUNDLES, json=body)
    assert resp.status_code == 201, resp.text
    document: dict[str, Any] = resp.json()
    return document


def publish(server: RoostServer, authorization: str, value: float) -> int:
    return httpx.post(
        f"{server.url}{V1}/telemetry",
        content=orjson.dumps({"sensor_id": "t", "value": value}),
        headers={"Authorization": authorization, "Content-Type": "application/json"},
    ).status_code


def exists(api: Api, device_id: str) -> bool:
    status = api.get(f"{V1}/devices/{device_id}").status_code
    assert status in {200, 404}
    return status == 200


def test_a_bundle_creates_its_devices_where_asked_and_is_a_download(
    server: RoostServer, tenant: Tenant
) -> None:
    site = created(tenant.operator, "/sites", {"id": unique("site"), "name": "Store"})["id"]
    group = created(tenant.operator, "/groups", {"id": unique("grp"), "name": "Tills"})["id"]
    ids = [unique("till"), unique("till")]
    resp = tenant.operator.post(
        BUNDLES, json={"device_ids": ids, "site_id": site, "group_ids": [group]}
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["cache-control"] == "no-store"
    disposition = resp.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="roost-bundle-')
    assert disposition.endswith('.json"')
    assert resp.headers["content-type"].startswith("application/json")

    document = resp.json()
    assert document["format"] == "roost-bundle/1" and document["tenant_id"] == tenant.id
    assert [d["device_id"] for d in document["devices"]] == ids
    for entry in document["devices"]:
        assert entry["created"] is True
        assert entry["token_id"] and entry["token"] and entry["key_id"].startswith("key_")
        assert len(base64.b64decode(entry["key"])) == 32
        assert entry["sas_resource"] == sas.device_resource(tenant.id, entry["device_id"])
        device = tenant.viewer.get(f"{V1}/devices/{entry['device_id']}").json()
        assert device["site_id"] == site and device["groups"] == [group]
    members = tenant.viewer.get(f"{V1}/groups/{group}/devices").json()["items"]
    assert sorted(d["id"] for d in members) == sorted(ids)
    # The CA is the one the API serves; the endpoints default to the address asked.
    assert document["ca_certificate"] == tenant.viewer.get(f"{V1}/ca").json()["certificate"]
    # The OTA signing key too, so that an agent pins it from the stick.
    signing_key = tenant.viewer.get(f"{V1}/ota/signing-key").json()
    assert document["ota_signing_key"] == {
        "id": signing_key["key_id"],
        "algorithm": signing_key["algorithm"],
        "public_key": signing_key["public_key"],
    }
    assert document["api_url"] == server.url
    assert document["mqtt"]["host"] == httpx.URL(server.url).host


def test_a_bundles_credentials_open_the_server_and_a_second_bundle_adds_new_ones(
    server: RoostServer, tenant: Tenant
) -> None:
    device_id = unique("till")
    [first] = bundle(tenant.operator, {"device_ids": [device_id]})["devices"]
    assert first["created"] is True
    assert publish(server, f"Bearer {first['token']}", 1.0) == 200
    key = base64.b64decode(first["key"])
    expiry = int(time.time()) + 600
    assert publish(server, sas.sign(key, first["sas_resource"], expiry), 2.0) == 200
    named = sas.sign(key, first["sas_resource"], expiry, key_name=first["key_id"])
    assert publish(server, named, 3.0) == 200

    # Again for the same device: it is not made twice, and gets new credentials beside the old.
    [second] = bundle(tenant.operator, {"device_ids": [device_id]})["devices"]
    assert second["device_id"] == device_id and second["created"] is False
    assert second["token"] != first["token"] and second["token_id"] != first["token_id"]
    assert second["key"] != first["key"] and second["key_id"] != first["key_id"]
    assert publish(server, f"Bearer {second['token']}", 4.0) == 200
    assert publish(server, f"Bearer {first['token']}", 5.0) == 200
    second_sas = sas.sign(base64.b64decode(second["key"]), second["sas_resource"], expiry)
    assert publish(server, second_sas, 6.0) == 200

    resp = tenant.viewer.get(
        f"{V1}/devices/{device_id}/telemetry", params={"sensor": "t", "order": "asc"}
    )
    assert [i["value"] for i in resp.json()["items"]] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    tokens = tenant.viewer.get(f"{V1}/devices/{device_id}/tokens").json()["items"]
    assert {first["token_id"], second["token_id"]} <= {t["id"] for t in tokens}


def test_count_and_prefix_number_the_devices(tenant: Tenant) -> None:
    prefix = unique("pos") + "-"
    document = bundle(tenant.operator, {"count": 3, "prefix": prefix})
    ids = [d["device_id"] for d in document["devices"]]
    assert ids == [f"{prefix}001", f"{prefix}002", f"{prefix}003"]
    assert all(exists(tenant.viewer, device_id) for device_id in ids)


def test_an_explicit_api_url_is_echoed_and_names_the_mqtt_host(tenant: Tenant) -> None:
    document = bundle(
        tenant.operator,
        {"device_ids": [unique("till")], "api_url": "https://roost.example.com:8443/"},
    )
    assert document["api_url"] == "https://roost.example.com:8443"
    assert document["mqtt"]["host"] == "roost.example.com"
    document = bundle(
        tenant.operator,
        {
            "device_ids": [unique("till")],
            "api_url": "http://store-7:8000",
            "mqtt_host": "broker.store-7",
        },
    )
    assert document["api_url"] == "http://store-7:8000"
    assert document["mqtt"]["host"] == "broker.store-7"


def test_bad_bundles_are_refused_with_nothing_made(tenant: Tenant) -> None:
    new = unique("till")
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"count": 2}, "count with prefix"),
        ({"prefix": "pos-"}, "prefix goes with count"),
        ({"device_ids": [new], "count": 2, "prefix": "pos-"}, "device_ids, or count"),
        ({"device_ids": []}, "at least one device"),
        ({}, "at least one device"),
        ({"device_ids": [new, new]}, "named twice"),
        ({"device_ids": [new], "api_url": "ftp://x"}, "api_url"),
        ({"device_ids": [new], "site_id": "no-such-site"}, "no site 'no-such-site'"),
        ({"device_ids": [new], "group_ids": ["no-such-group"]}, "no group 'no-such-group'"),
        ({"device_ids": [new, "Not An Id!"]}, "device"),
    ]
    for body, phrase in refusals:
        assert_problem(tenant.operator.post(BUNDLES, json=body), 422, phrase)
    # Schema checks answer 422 too.
    for body in ({"count": 0, "prefix": "p-"}, {"count": "2", "prefix": "p-"}):
        assert tenant.operator.post(BUNDLES, json=body).status_code == 422
    assert not exists(tenant.viewer, new)

    # A refused new device leaves no fresh credentials on the existing devices before it.
    existing = created(tenant.operator, "/devices", {"id": unique("till")})["id"]
    body = {"device_ids": [existing, new], "site_id": "no-such-site"}
    assert_problem(tenant.operator.post(BUNDLES, json=body), 422, "no site")
    assert tenant.viewer.get(f"{V1}/devices/{existing}/tokens").json()["total"] == 0
    assert tenant.viewer.get(f"{V1}/devices/{existing}/keys").json()["total"] == 0
    assert not exists(tenant.viewer, new)


def test_only_operators_make_bundles(tenant: Tenant) -> None:
    device_id = unique("till")
    assert_problem(tenant.viewer.post(BUNDLES, json={"device_ids": [device_id]}), 403)
    assert_problem(tenant.anonymous.post(BUNDLES, json={"device_ids": [device_id]}), 401)
    assert not exists(tenant.viewer, device_id)
    assert bundle(tenant.admin, {"device_ids": [device_id]})["devices"][0]["created"] is True
