"""The DDI API with httpx as the client: authentication, base, configData, deployments,
feedback, cancellation, artifacts (Range, MD5SUM) and bad input."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from tests.ota.ddi.conftest import (
    action_of,
    ddi,
    deploy,
    deployment_link,
    root,
    upload_artifact,
)
from tests.support import (
    ADMIN_PASSWORD,
    Api,
    Device,
    RoostServer,
    assert_problem,
    eventually,
    make_device,
    unique,
)

PAYLOAD = bytes(range(256)) * 64  # 16 KiB, every byte value


def feedback(
    execution: str, finished: str = "none", *details: str, **progress: int
) -> dict[str, Any]:
    """A feedback body as hawkBit clients send it (with the old ``id`` and ``time`` fields)."""
    result: dict[str, Any] = {"finished": finished}
    if progress:
        result["progress"] = progress
    return {
        "id": 0,
        "time": "20260101T120000",
        "status": {"execution": execution, "result": result, "details": list(details)},
    }


@pytest.fixture(scope="module")
def artifact(admin: Api) -> dict[str, Any]:
    """A firmware artifact of the default tenant."""
    return upload_artifact(admin, PAYLOAD, version="2.0.0", filename="image.swu")


# -- authentication -----------------------------------------------------------------------------


def test_base_answers_the_polling_interval_and_asks_for_config_data(
    ddi_server: RoostServer, device: Device
) -> None:
    with ddi(ddi_server, device.token) as client:
        resp = client.get(root(device))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["config"]["polling"]["sleep"] == "00:00:01"
        assert set(body["_links"]) == {"configData"}
        assert body["_links"]["configData"]["href"] == f"{ddi_server.url}{root(device)}/configData"
        # Bearer works as on every device door.
    with ddi(ddi_server, device.token, scheme="Bearer") as client:
        assert client.get(root(device)).status_code == 200


def test_credentials_must_be_the_controller_s_own(
    ddi_server: RoostServer, admin: Api, device: Device
) -> None:
    other = make_device(admin)
    with ddi(ddi_server, None) as anonymous:
        assert_problem(anonymous.get(root(device)), 401)
    with ddi(ddi_server, "not-a-token") as forged:
        assert forged.get(root(device)).status_code in (401, 403)
    with ddi(ddi_server, other.token) as client:
        # Another device's controller, and the device's own under another tenant: not found.
        assert_problem(client.get(root(device)), 404, device.id)
        assert_problem(client.get(root(other, tenant="elsewhere")), 404)
    user_token = admin.headers["Authorization"].split()[1]
    with ddi(ddi_server, user_token) as user:
        assert_problem(user.get(root(device)), 403)


def test_another_tenant_s_device_is_refused(ddi_server: RoostServer, admin: Api) -> None:
    tenant_id = unique("t")
    resp = admin.post(
        "/api/v1/tenants",
        json={
            "id": tenant_id,
            "name": tenant_id,
            "admin": {"username": f"{tenant_id}-admin", "password": ADMIN_PASSWORD},
        },
    )
    assert resp.status_code == 201, resp.text
    with Api(ddi_server.url) as anon:
        their_admin = anon.as_token(anon.login(f"{tenant_id}-admin", ADMIN_PASSWORD))
    with their_admin:
        theirs = make_device(their_admin)
    with ddi(ddi_server, theirs.token) as client:
        assert client.get(root(theirs, tenant=tenant_id)).status_code == 200
        # Their token on the default tenant's path (even with the same device id): 404.
        assert_problem(client.get(root(theirs)), 404)


# -- configData -----------------------------------------------------------------------------------


def test_config_data_is_kept_as_the_ddi_state(
    ddi_server: RoostServer, admin: Api, device: Device
) -> None:
    path = f"{root(device)}/configData"
    with ddi(ddi_server, device.token) as client:
        body = {"data": {"serial": "SN1", "hw": "rev1"}, "status": {"execution": "closed"}}
        assert client.put(path, json=body).status_code == 200
        assert "configData" not in client.get(root(device)).json()["_links"]

        def reported() -> dict[str, Any]:
            resp = admin.get(f"/api/v1/devices/{device.id}/states/ddi")
            assert resp.status_code == 200, resp.text
            found: dict[str, Any] = resp.json()["reported"]
            return found

        assert reported() == {"serial": "SN1", "hw": "rev1"}
        client.put(path, json={"data": {"mac": "00:11"}, "mode": "merge"})
        assert reported() == {"serial": "SN1", "hw": "rev1", "mac": "00:11"}
        client.put(path, json={"data": {"serial": "SN2"}, "mode": "replace"})
        assert reported() == {"serial": "SN2"}
        client.put(path, json={"data": {"hw": "x"}, "mode": "remove"})
        assert reported() == {"serial": "SN2"}
        # Bad input: a value that is not text, an unknown mode, a body that is not JSON.
        assert_problem(client.put(path, json={"data": {"n": 1}}), 422)
        assert_problem(client.put(path, json={"data": {}, "mode": "append"}), 422)
        assert_problem(client.put(path, json={"data": {"k": "v" * 200}}), 422)
        resp = client.put(path, content=b"{", headers={"Content-Type": "application/json"})
        assert_problem(resp, 400)


# -- deployments, feedback and cancellation -------------------------------------------------------


def test_deployment_base_feedback_and_success(
    ddi_server: RoostServer, admin: Api, device: Device, artifact: dict[str, Any]
) -> None:
    deployment = deploy(admin, artifact["id"], [device.id])
    with ddi(ddi_server, device.token) as client:
        href = deployment_link(client, root(device))
        assert href.startswith(f"{ddi_server.url}{root(device)}/deploymentBase/")
        resp = client.get(href, params={"actionHistory": 5})
        assert resp.status_code == 200, resp.text
        base = resp.json()
        action_id = int(base["id"])
        assert base["deployment"]["download"] == "forced"
        assert base["deployment"]["update"] == "forced"
        [chunk] = base["deployment"]["chunks"]
        assert chunk["part"] == "os" and chunk["version"] == "2.0.0"
        [art] = chunk["artifacts"]
        assert art["filename"] == "image.swu"
        assert art["size"] == len(PAYLOAD)
        assert art["hashes"] == {
            "sha1": hashlib.sha1(PAYLOAD).hexdigest(),
            "md5": hashlib.md5(PAYLOAD).hexdigest(),
            "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
        }
        download = art["_links"]["download-http"]["href"]
        assert art["_links"]["md5sum"]["href"] == f"{download}.MD5SUM"
        assert base["actionHistory"]["status"] == "QUEUED"

        feedback_path = f"{root(device)}/deploymentBase/{action_id}/feedback"
        resp = client.post(
            feedback_path, json=feedback("proceeding", "none", "starting", cnt=0, of=1)
        )
        assert resp.status_code == 200, resp.text
        assert action_of(admin, deployment["id"], device.id)["step"] == "DOWNLOADING"
        client.post(feedback_path, json=feedback("proceeding", "none", "writing"))
        assert action_of(admin, deployment["id"], device.id)["step"] == "INSTALLING"
        client.post(feedback_path, json=feedback("proceeding", "none", "done", cnt=1, of=1))
        assert action_of(admin, deployment["id"], device.id)["step"] == "REBOOTING"
        history = client.get(href, params={"actionHistory": -1}).json()["actionHistory"]
        assert history["messages"] == ["starting", "writing", "done"]

        resp = client.post(feedback_path, json=feedback("closed", "success", "Update Installed."))
        assert resp.status_code == 200, resp.text
        action = action_of(admin, deployment["id"], device.id)
        assert action["step"] == "SUCCEEDED" and action["version_reported"] == "2.0.0"
        # Done: the base no longer offers it; more feedback on a closed action is refused.
        assert "deploymentBase" not in client.get(root(device)).json()["_links"]
        assert client.post(feedback_path, json=feedback("proceeding")).status_code in (409, 410)


def test_feedback_failure_and_bad_feedback(
    ddi_server: RoostServer, admin: Api, device: Device, artifact: dict[str, Any]
) -> None:
    deployment = deploy(admin, artifact["id"], [device.id])
    other = make_device(admin)
    with ddi(ddi_server, device.token) as client, ddi(ddi_server, other.token) as other_client:
        action_id = int(client.get(deployment_link(client, root(device))).json()["id"])
        path = f"{root(device)}/deploymentBase/{action_id}/feedback"
        # Unknown action; another device's action (through its own controller): 404 problems.
        unknown = f"{root(device)}/deploymentBase/{action_id + 10_000}/feedback"
        assert_problem(client.post(unknown, json=feedback("proceeding")), 404, "action")
        theirs = f"{root(other)}/deploymentBase/{action_id}"
        assert_problem(other_client.get(theirs), 404, "action")
        assert_problem(other_client.post(f"{theirs}/feedback", json=feedback("proceeding")), 404)
        # Bad bodies: an unknown execution, no result, a non-numeric action id.
        assert_problem(client.post(path, json=feedback("exploded")), 422)
        assert_problem(client.post(path, json={"status": {"execution": "closed"}}), 422)
        bad_id = f"{root(device)}/deploymentBase/abc/feedback"
        assert_problem(client.post(bad_id, json=feedback("proceeding")), 422)

        resp = client.post(path, json=feedback("closed", "failure", "disk full", "rolled back"))
        assert resp.status_code == 200, resp.text
        action = action_of(admin, deployment["id"], device.id)
        assert action["step"] == "FAILED"
        assert "disk full" in action["step_details"]["error"]


def test_cancel_action_flow(
    ddi_server: RoostServer, admin: Api, device: Device, artifact: dict[str, Any]
) -> None:
    deployment = deploy(admin, artifact["id"], [device.id])
    with ddi(ddi_server, device.token) as client:
        action_id = int(client.get(deployment_link(client, root(device))).json()["id"])
        path = f"{root(device)}/deploymentBase/{action_id}/feedback"
        assert (
            client.post(path, json=feedback("proceeding", "none", "downloading")).status_code == 200
        )
        resp = admin.post(
            f"/api/v1/deployments/{deployment['id']}/cancel", json={"reason": "ddi test"}
        )
        assert resp.status_code in (200, 202), resp.text

        def cancel_link() -> str | None:
            href: str | None = (
                client.get(root(device)).json()["_links"].get("cancelAction", {}).get("href")
            )
            return href

        href = eventually(cancel_link)
        assert href == f"{ddi_server.url}{root(device)}/cancelAction/{action_id}"
        resp = client.get(href)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"id": str(action_id), "cancelAction": {"stopId": str(action_id)}}
        ack = feedback("closed", "success", "cancellation acknowledged.")
        assert client.post(f"{href}/feedback", json=ack).status_code == 200
        links = client.get(root(device)).json()["_links"]
        assert "cancelAction" not in links and "deploymentBase" not in links
        action = action_of(admin, deployment["id"], device.id)
        assert action["step"] == "CANCELED"
    with ddi(ddi_server, device.token) as client:
        other = deploy(admin, artifact["id"], [device.id])
        live = int(client.get(deployment_link(client, root(device))).json()["id"])
        # A cancelAction of an action that is not canceled: a conflict.
        assert_problem(client.get(f"{root(device)}/cancelAction/{live}"), 409, "not canceled")
        admin.post(f"/api/v1/deployments/{other['id']}/cancel", json={"reason": "ddi test"})


# -- artifacts -------------------------------------------------------------------------------------


def test_artifact_download_range_and_md5sum(
    ddi_server: RoostServer, admin: Api, device: Device, artifact: dict[str, Any]
) -> None:
    module = artifact["module_id"]
    base = f"{root(device)}/softwaremodules/{module}/artifacts"
    with ddi(ddi_server, device.token) as client:
        # a module is a device's to read once a deployment sent it there
        assert_problem(client.get(base), 404)
        assert_problem(client.get(f"{base}/image.swu"), 404)
        deploy(admin, artifact["id"], [device.id])
        resp = client.get(base)
        assert resp.status_code == 200, resp.text
        [listed] = resp.json()
        assert listed["filename"] == "image.swu" and listed["size"] == len(PAYLOAD)

        whole = client.get(f"{base}/image.swu")
        assert whole.status_code == 200 and whole.content == PAYLOAD
        part = client.get(f"{base}/image.swu", headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206, part.text
        assert part.content == PAYLOAD[1000:2000]
        assert part.headers["content-range"] == f"bytes 1000-1999/{len(PAYLOAD)}"
        tail = client.get(f"{base}/image.swu", headers={"Range": f"bytes={len(PAYLOAD)}-"})
        assert tail.status_code == 416

        md5 = client.get(f"{base}/image.swu.MD5SUM")
        assert md5.status_code == 200
        assert md5.text == f"{hashlib.md5(PAYLOAD).hexdigest()}  image.swu\n"

        assert_problem(client.get(f"{base}/other.bin"), 404)
        assert_problem(client.get(f"{root(device)}/softwaremodules/99999/artifacts"), 404)
    # Another tenant's device cannot name this module (its tenant has no such module).
    with ddi(ddi_server, None) as anonymous:
        assert_problem(anonymous.get(f"{base}/image.swu"), 401)


def test_errors_are_problems_not_500s(ddi_server: RoostServer, device: Device) -> None:
    with ddi(ddi_server, device.token) as client:
        for resp in (
            client.get(f"{root(device)}/deploymentBase/99999999"),
            client.get(f"{root(device)}/cancelAction/99999999"),
            client.post(f"{root(device)}/cancelAction/1/feedback", json=feedback("closed")),
            client.get(f"{root(device)}/softwaremodules/x/artifacts"),
        ):
            assert resp.status_code in (404, 422), resp.text
            assert resp.headers["content-type"].startswith("application/problem+json")
