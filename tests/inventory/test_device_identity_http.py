"""GET /api/v1/device: a device asks who it is (the agent's edge metadata service caches it)."""

from __future__ import annotations

import time
from datetime import datetime

from roost.credentials.keys import sas
from tests.conftest import Tenant
from tests.support import assert_problem

API = "/api/v1"


def test_a_device_reads_its_own_identity_with_token_or_sas(tenant: Tenant) -> None:
    op = tenant.operator
    for path, body in (
        (f"{API}/sites", {"id": "paris", "name": "Paris"}),
        (f"{API}/device-models", {"id": "k1", "reference": "k1", "commercial_name": "K1"}),
        (f"{API}/groups", {"id": "lobby", "name": "lobby"}),
        (f"{API}/groups", {"id": "prod", "name": "prod", "filter": {"tags": {"env": "prod"}}}),
    ):
        assert op.post(path, json=body).status_code == 201
    device = {
        "id": "till-07",
        "name": "Till 7",
        "site_id": "paris",
        "model_id": "k1",
        "tags": {"env": "prod", "floor": "1"},
        "group_ids": ["lobby"],
        "notes": "not for the device",
    }
    resp = op.post(f"{API}/devices", json=device)
    assert resp.status_code == 201, resp.text
    created_at = resp.json()["created_at"]
    token = op.post(f"{API}/devices/till-07/tokens", json={}).json()["token"]
    other = op.post(f"{API}/devices", json={"id": "till-08"}).json()
    other_token = op.post(f"{API}/devices/{other['id']}/tokens", json={}).json()["token"]

    me = tenant.client(token).get(f"{API}/device")
    assert me.status_code == 200, me.text
    assert me.json() == {
        "id": "till-07",
        "tenant_id": tenant.id,
        "name": "Till 7",
        "site_id": "paris",
        "model_id": "k1",
        "group_ids": ["lobby", "prod"],  # static and dynamic
        "tags": {"env": "prod", "floor": "1"},
        "created_at": created_at,
    }
    assert datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    # Each device sees itself only.
    assert tenant.client(other_token).get(f"{API}/device").json()["id"] == "till-08"

    # A change of the record shows at once (nothing cached on the server).
    assert op.patch(f"{API}/devices/till-07", json={"tags": {"env": None}}).status_code == 200
    after = tenant.client(token).get(f"{API}/device").json()
    assert after["tags"] == {"floor": "1"} and after["group_ids"] == ["lobby"]

    # A SAS token signed with one of its keys works too.
    key = op.post(f"{API}/devices/till-07/keys").json()
    expiry = int(time.time()) + 300
    signed = sas.sign(sas.decode_key(key["key"]), f"{tenant.id}/devices/till-07", expiry)
    by_sas = tenant.anonymous.get(f"{API}/device", headers={"Authorization": signed})
    assert by_sas.status_code == 200 and by_sas.json()["id"] == "till-07", by_sas.text


def test_only_devices_may_ask(tenant: Tenant) -> None:
    assert_problem(tenant.anonymous.get(f"{API}/device"), 401)
    assert_problem(tenant.operator.get(f"{API}/device"), 403)
    op = tenant.operator
    assert op.post(f"{API}/devices", json={"id": "gone"}).status_code == 201
    issued = op.post(f"{API}/devices/gone/tokens", json={}).json()
    assert tenant.client(issued["token"]).get(f"{API}/device").status_code == 200
    assert op.delete(f"{API}/devices/gone/tokens/{issued['id']}").status_code == 204
    refused = tenant.client(issued["token"]).get(f"{API}/device")
    assert_problem(refused, refused.status_code)
    assert refused.status_code in (401, 403), refused.text
