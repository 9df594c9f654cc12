"""A device's Credentials tab in a real Chromium: tokens, certificates and keys issued (their
secret shown once), used by the device, rotated and revoked; a viewer sees no changes."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import httpx
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import expect

from roost.credentials.keys import sas
from tests.console.conftest import Console
from tests.mqtt_device import MqttDevice
from tests.support import Api, Device, RoostServer, assert_problem, unique

V1 = "/api/v1"


def new_device(api: Api) -> str:
    device_id = unique("dev")
    resp = api.post(f"{V1}/devices", json={"id": device_id, "name": f"Till {device_id}"})
    assert resp.status_code == 201, resp.text
    return device_id


def ingest(server: RoostServer, authorization: str, value: float) -> httpx.Response:
    """The device sends one reading over HTTP with ``authorization``."""
    return httpx.post(
        f"{server.url}{V1}/telemetry",
        content=orjson.dumps({"sensor_id": "t", "value": value}),
        headers={"Authorization": authorization, "Content-Type": "application/json"},
    )


def listed(api: Api, device_id: str, kind: str) -> list[dict[str, Any]]:
    resp = api.get(f"{V1}/devices/{device_id}/{kind}")
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def secret(page: Any, label: str) -> str:
    """The value of a secret the page shows once."""
    value: str = page.locator("#secret-once").get_by_role("textbox", name=label).input_value()
    return value


def open_tab(console: Console, device_id: str) -> None:
    console.page.on("dialog", lambda dialog: dialog.accept())
    console.sign_in()
    console.goto(f"/devices/{device_id}/credentials")
    expect(console.page.get_by_role("link", name="Credentials")).to_have_attribute(
        "aria-current", "page"
    )


def test_a_token_issued_in_the_page_is_shown_once_works_and_is_revoked(
    console: Console, console_api: Api, console_server: RoostServer
) -> None:
    device_id = new_device(console_api)
    open_tab(console, device_id)
    page = console.page
    expect(page.locator("#tokens")).to_contain_text("This device has no tokens")
    page.get_by_label("Name").first.fill("factory image")
    page.get_by_role("button", name="Issue token").click()

    panel = page.locator("#secret-once")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("Copy it now")
    token = secret(page, "Device token")
    (held,) = listed(console_api, device_id, "tokens")
    assert held["name"] == "factory image"
    row = page.locator(f'tr[data-token="{held["id"]}"]')
    expect(row).to_contain_text("factory image")
    expect(row).to_contain_text("active")

    # The token is the device's: it ingests over HTTP and connects over MQTT.
    assert ingest(console_server, f"Bearer {token}", 1.5).status_code == 200
    mqtt = MqttDevice(console_server, Device(device_id, token, held["id"]))
    mqtt.connect()
    mqtt.close()

    console.goto(f"/devices/{device_id}/credentials")
    assert token not in page.content()
    expect(page.locator("#secret-once")).to_be_hidden()
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    assert listed(console_api, device_id, "tokens")[0]["revoked_at"] is not None
    assert_problem(ingest(console_server, f"Bearer {token}", 2.5), 403, "revoked")
    refused = MqttDevice(console_server, Device(device_id, token, held["id"]))
    with pytest.raises(AssertionError):
        refused.connect()
    refused.close()
    assert console.foreign_requests() == []


def test_a_bad_token_request_shows_the_apis_error(console: Console, console_api: Api) -> None:
    device_id = new_device(console_api)
    open_tab(console, device_id)
    page = console.page
    page.get_by_label("Expires (UTC").fill("2001-01-01T00:00:00")
    page.get_by_role("button", name="Issue token").click()
    expected = console_api.post(
        f"{V1}/devices/{device_id}/tokens", json={"expires_at": "2001-01-01T00:00:00Z"}
    ).json()
    expect(page.get_by_role("alert").filter(has_text=expected["detail"])).to_be_visible()
    expect(page.locator("#secret-once")).to_be_hidden()
    assert listed(console_api, device_id, "tokens") == []
    assert console.foreign_requests() == []


def test_a_certificate_is_issued_with_its_key_shown_once_then_rotated_and_revoked(
    console: Console, console_api: Api
) -> None:
    device_id = new_device(console_api)
    open_tab(console, device_id)
    page = console.page
    page.get_by_label("Validity in days").fill("30")
    page.get_by_role("button", name="Issue certificate").click()
    expect(page.locator("#secret-once")).to_be_visible()
    pem = secret(page, "Certificate (PEM)")
    private_key = secret(page, "Private key (PKCS#8 PEM)")
    certificate = x509.load_pem_x509_certificate(pem.encode())
    key = serialization.load_pem_private_key(private_key.encode(), password=None)
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    (held,) = listed(console_api, device_id, "certificates")
    assert held["certificate"].strip() == pem.strip() and held["key_generated"] is True
    row = page.locator(f'tr[data-certificate="{held["id"]}"]')
    expect(row).to_contain_text(held["serial"][:16])
    expect(row).to_contain_text(held["fingerprint"][:16])
    expect(row).to_contain_text("active")

    page.get_by_role("button", name="I have copied it").click()
    expect(page.locator("#secret-once")).to_be_hidden()
    row.get_by_role("button", name="Rotate").click()
    expect(page.locator("#secret-once")).to_be_visible()
    expect(page.locator("#secret-once")).to_contain_text("is revoked")
    rotated_pem = secret(page, "Certificate (PEM)")
    expect(row).to_contain_text("revoked")
    certificates = {c["id"]: c for c in listed(console_api, device_id, "certificates")}
    (new,) = [c for c in certificates.values() if c["id"] != held["id"]]
    assert new["certificate"].strip() == rotated_pem.strip() and new["revoked_at"] is None
    assert certificates[held["id"]]["revoked_at"] is not None

    new_row = page.locator(f'tr[data-certificate="{new["id"]}"]')
    new_row.get_by_role("button", name="Revoke").click()
    expect(new_row).to_contain_text("revoked")
    assert all(c["revoked_at"] for c in listed(console_api, device_id, "certificates"))
    assert console.foreign_requests() == []


def test_a_key_made_in_the_page_signs_sas_tokens_until_revoked(
    console: Console, console_api: Api, console_server: RoostServer
) -> None:
    device_id = new_device(console_api)
    open_tab(console, device_id)
    page = console.page
    page.get_by_label("Name").last.fill("sas signer")
    page.get_by_role("button", name="Make key").click()
    key = secret(page, "Key (Base64)")
    (held,) = listed(console_api, device_id, "keys")
    row = page.locator(f'tr[data-key="{held["id"]}"]')
    expect(row).to_contain_text("sas signer")

    resource = sas.device_resource("default", device_id)
    token = sas.sign(base64.b64decode(key), resource, int(time.time()) + 3600)
    assert ingest(console_server, token, 1.0).status_code == 200
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_contain_text("revoked")
    assert_problem(ingest(console_server, token, 2.0), 403, "revoked")
    assert console.foreign_requests() == []


def test_a_viewer_sees_credentials_but_no_write_actions(console: Console, console_api: Api) -> None:
    device_id = new_device(console_api)
    assert console_api.post(f"{V1}/devices/{device_id}/tokens", json={"name": "t1"}).is_success
    assert console_api.post(f"{V1}/devices/{device_id}/certificates", json={}).is_success
    assert console_api.post(f"{V1}/devices/{device_id}/keys", json={"name": "k1"}).is_success
    name, password = unique("viewer"), "viewer-password-" + secrets.token_hex(4)
    made = console_api.post(
        f"{V1}/users", json={"username": name, "password": password, "role": "viewer"}
    )
    assert made.status_code == 201, made.text
    console.sign_in(name, password)
    console.goto(f"/devices/{device_id}/credentials")
    page = console.page
    expect(page.locator("#tokens")).to_contain_text("t1")
    expect(page.locator("#keys")).to_contain_text("k1")
    expect(page.locator("tr[data-certificate]")).to_have_count(1)
    expect(page.locator("[data-api]")).to_have_count(0)
    expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
    expect(page.get_by_role("button", name="Issue token")).to_have_count(0)
    assert console.foreign_requests() == []


def test_asking_the_device_to_rotate_queues_its_command(console: Console, console_api: Api) -> None:
    """The button sends roost.rotate_credentials (the agent's built-in command; the agent tests
    run it) and opens the device's commands, where it waits for the device."""
    device_id = new_device(console_api)
    assert console_api.post(f"{V1}/devices/{device_id}/certificates", json={}).is_success
    open_tab(console, device_id)
    page = console.page
    page.get_by_role("button", name="Ask the device to rotate its credentials").click()
    page.wait_for_url(f"**/devices/{device_id}/commands")
    expect(page.locator("main")).to_contain_text("roost.rotate_credentials")
    commands = console_api.get(f"{V1}/devices/{device_id}/commands").json()["items"]
    assert [(c["name"], c["params"]) for c in commands] == [
        ("roost.rotate_credentials", {"certificate": True})
    ]
    assert console.foreign_requests() == []
