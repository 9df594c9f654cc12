"""The console's provisioning pages in a real Chromium: enrollment groups (key shown once),
attestation hashes, offline bundles; the API's errors in the page; a viewer sees no changes."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from playwright.sync_api import expect

from roost.credentials.keys import sas
from tests.console.conftest import Console
from tests.support import Api, RoostServer, unique

V1 = "/api/v1"


def created(api: Api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post(f"{V1}{path}", json=body)
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


def hardware_hash() -> str:
    return hashlib.sha256(secrets.token_bytes(16)).hexdigest()


def accept_dialogs(console: Console) -> None:
    """Answer the page's confirm() questions with OK."""
    console.page.on("dialog", lambda dialog: dialog.accept())


def viewer(console_api: Api) -> tuple[str, str]:
    name, password = unique("viewer"), "viewer-password-" + secrets.token_hex(4)
    created(console_api, "/users", {"username": name, "password": password, "role": "viewer"})
    return name, password


def test_an_enrollment_group_made_in_the_form_is_listed_and_its_key_shown_once(
    console: Console, console_api: Api, console_server: RoostServer
) -> None:
    site = created(console_api, "/sites", {"id": unique("site"), "name": "Store"})["id"]
    group = created(console_api, "/groups", {"id": unique("grp"), "name": "Tills"})["id"]
    enrollment_id = unique("enr")
    console.sign_in()
    console.goto("/provisioning/enrollments")
    page = console.page
    expect(page.get_by_role("link", name="Enrollment groups")).to_have_attribute(
        "aria-current", "page"
    )
    page.get_by_label("Id (empty: generated)").fill(enrollment_id)
    page.get_by_label("Site").fill(site)
    page.get_by_label("Static groups").fill(group)
    page.get_by_label("Tags (a JSON object)").fill('{"kind": "till"}')
    page.get_by_role("button", name="Create enrollment group").click()

    panel = page.locator("#secret-once")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("Copy it now")
    key = page.get_by_label("Group key (Base64)").input_value()
    assert len(base64.b64decode(key)) == 32
    row = page.locator(f'tr[data-enrollment="{enrollment_id}"]')
    expect(row).to_contain_text(site)
    expect(row).to_contain_text("enabled")

    held = console_api.get(f"{V1}/enrollments/{enrollment_id}").json()
    assert held["site_id"] == site and held["group_ids"] == [group]
    assert held["tags"] == {"kind": "till"} and held["enabled"] is True
    # The key the page showed is the group's: a device derives its own from it and registers.
    registration_id = unique("sn")
    derived = sas.derive_key(base64.b64decode(key), registration_id)
    resource = sas.registration_resource(enrollment_id, registration_id)
    token = sas.sign(derived, resource, int(time.time()) + 3600, key_name="registration")
    resp = httpx.post(
        f"{console_server.url}{V1}/provisioning/register",
        json={"registration_id": registration_id},
        headers={"Authorization": token},
    )
    assert resp.status_code == 200, resp.text

    # Shown once: the page, loaded again, has no copy of it.
    console.goto("/provisioning/enrollments")
    expect(page.locator(f'tr[data-enrollment="{enrollment_id}"]')).to_be_visible()
    expect(page.locator("#secret-once")).to_be_hidden()
    assert key not in page.content()
    assert console.foreign_requests() == []


def test_a_bad_enrollment_shows_the_apis_error_in_the_page(
    console: Console, console_api: Api
) -> None:
    console.sign_in()
    console.goto("/provisioning/enrollments")
    page = console.page
    page.get_by_label("Site").fill("no-such-site")
    page.get_by_role("button", name="Create enrollment group").click()
    expected = console_api.post(f"{V1}/enrollments", json={"site_id": "no-such-site"}).json()
    problem = page.get_by_role("alert").filter(has_text=expected["detail"])
    expect(problem).to_be_visible()

    page.get_by_label("Site").fill("")
    page.get_by_label("Group key (Base64").fill(base64.b64encode(b"short").decode())
    page.get_by_role("button", name="Create enrollment group").click()
    short = console_api.post(
        f"{V1}/enrollments", json={"key": base64.b64encode(b"short").decode()}
    ).json()
    expect(page.get_by_role("alert").filter(has_text=short["detail"])).to_be_visible()
    expect(page.locator("#secret-once")).to_be_hidden()

    page.get_by_label("Group key (Base64").fill("")
    page.get_by_label("Tags (a JSON object)").fill("{not json")
    page.get_by_role("button", name="Create enrollment group").click()
    expect(page.get_by_role("alert").filter(has_text="not valid JSON")).to_be_visible()
    assert console.foreign_requests() == []


def test_an_enrollment_group_is_edited_and_deleted_on_its_page(
    console: Console, console_api: Api
) -> None:
    enrollment = created(console_api, "/enrollments", {"tags": {"a": "1"}})
    accept_dialogs(console)
    console.sign_in()
    console.goto("/provisioning/enrollments")
    page = console.page
    page.get_by_role("link", name=enrollment["id"]).click()
    expect(page.get_by_role("heading", name=f"Enrollment group {enrollment['id']}")).to_be_visible()
    assert enrollment["key"] not in page.content()

    page.get_by_label("Enabled (devices may register)").uncheck()
    page.get_by_label("Tags (a JSON object)").fill("")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".spread .badge")).to_have_text("disabled")
    held = console_api.get(f"{V1}/enrollments/{enrollment['id']}").json()
    assert held["enabled"] is False and held["tags"] == {}

    page.get_by_label("Static groups").fill("no-such-group")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert").filter(has_text="no group 'no-such-group'")).to_be_visible()

    page.get_by_role("button", name="Delete enrollment group").click()
    page.wait_for_url("**/provisioning/enrollments")
    expect(page.locator(f'tr[data-enrollment="{enrollment["id"]}"]')).to_have_count(0)
    assert console_api.get(f"{V1}/enrollments/{enrollment['id']}").status_code == 404
    assert console.foreign_requests() == []


def test_attestation_hashes_are_added_and_removed(console: Console, console_api: Api) -> None:
    first, second = hardware_hash(), hardware_hash()
    accept_dialogs(console)
    console.sign_in()
    console.goto("/provisioning/attestations")
    page = console.page
    expect(page.get_by_role("link", name="Attestation hashes")).to_have_attribute(
        "aria-current", "page"
    )
    field = page.get_by_label("Hashes (SHA-256 in hex")
    field.fill("abc")
    page.get_by_role("button", name="Add hashes").click()
    refused = console_api.post(f"{V1}/attestation-hashes", json={"hashes": ["abc"]}).json()
    expect(page.get_by_role("alert").filter(has_text=refused["detail"])).to_be_visible()

    field.fill(f"{first}\n{second}")
    page.get_by_label("Tags (a JSON object)").fill('{"line": "A"}')
    page.get_by_role("button", name="Add hashes").click()
    expect(page.locator("tr[data-hash]", has_text=first[:8])).to_be_visible()
    listed = {h["hint"]: h for h in console_api.get(f"{V1}/attestation-hashes").json()["items"]}
    first_row = page.locator(f'tr[data-hash="{listed[first[:8]]["id"]}"]')
    expect(first_row).to_contain_text(first[:8])
    expect(first_row).to_contain_text("unused")
    expect(page.locator(f'tr[data-hash="{listed[second[:8]]["id"]}"]')).to_be_visible()
    assert listed[first[:8]]["tags"] == {"line": "A"}
    assert first not in page.content()  # only the first characters are ever shown

    first_row.get_by_role("button", name="Remove").click()
    expect(first_row).to_have_count(0)
    remaining = console_api.get(f"{V1}/attestation-hashes").json()["items"]
    assert first[:8] not in {h["hint"] for h in remaining}
    assert second[:8] in {h["hint"] for h in remaining}
    assert console.foreign_requests() == []


def test_the_bundles_page_gives_the_server_command(console: Console) -> None:
    console.sign_in()
    console.goto("/provisioning")
    page = console.page
    page.get_by_role("link", name="Bundles").click()
    expect(page.get_by_role("heading", name="Offline bundles")).to_be_visible()
    page.get_by_label("…or this many devices").fill("20")
    page.get_by_label("Id prefix (with a count)").fill("paris-12-till-")
    page.get_by_label("Static groups (commas)").fill("tills, paris")
    page.get_by_label("Output file").fill("tills.json")
    page.get_by_role("button", name="Show the command").click()
    expect(page.locator("#bundle-command")).to_have_text(
        "roost provision bundle --count 20 --prefix paris-12-till- "
        "--group tills --group paris --output tills.json"
    )
    assert console.foreign_requests() == []


def test_a_viewer_sees_provisioning_but_no_write_actions(
    console: Console, console_api: Api
) -> None:
    enrollment = created(console_api, "/enrollments", {})
    created(console_api, "/attestation-hashes", {"hashes": [hardware_hash()]})
    console.sign_in(*viewer(console_api))
    page = console.page
    for path in (
        "/provisioning/enrollments",
        f"/provisioning/enrollments/{enrollment['id']}",
        "/provisioning/attestations",
        "/provisioning/bundles",
    ):
        console.goto(path)
        expect(page.locator("main h1")).to_be_visible()
        expect(page.locator("[data-api]")).to_have_count(0)
        expect(page.get_by_role("button", name="Remove")).to_have_count(0)
    console.goto("/provisioning/bundles")
    expect(page.get_by_role("heading", name="What a bundle is")).to_be_visible()
    expect(page.locator("#bundle-form")).to_have_count(0)
    expect(page.get_by_role("button", name="Make and download the bundle")).to_have_count(0)
    console.goto("/provisioning/enrollments")
    expect(page.get_by_role("link", name=enrollment["id"])).to_be_visible()
    assert console.foreign_requests() == []


def test_a_bundle_made_in_the_form_is_downloaded_and_its_devices_exist(
    console: Console, console_api: Api, console_server: RoostServer
) -> None:
    site = created(console_api, "/sites", {"id": unique("site"), "name": "Store"})["id"]
    group = created(console_api, "/groups", {"id": unique("grp"), "name": "Tills"})["id"]
    ids = [unique("till"), unique("till")]
    console.sign_in()
    console.goto("/provisioning/bundles")
    page = console.page
    form = page.locator("#bundle-form")
    api_url = form.get_by_label("API URL the devices will use")
    expect(api_url).to_have_value(console_server.url)
    expect(api_url).to_have_accessible_description(re.compile("address devices reach"))
    form.get_by_label("Device ids (commas or lines)").fill("\n".join(ids))
    form.get_by_label("Site of new devices").fill(site)
    form.get_by_label("Static groups of new devices").fill(group)
    with page.expect_download() as info:
        form.get_by_role("button", name="Make and download the bundle").click()
    download = info.value
    assert re.fullmatch(r"roost-bundle-\d{8}T\d{6}\.json", download.suggested_filename)
    bundle = orjson.loads(Path(download.path()).read_bytes())

    assert bundle["api_url"] == console_server.url and bundle["format"] == "roost-bundle/1"
    assert [d["device_id"] for d in bundle["devices"]] == ids
    assert all(d["created"] is True and d["token"] and d["key"] for d in bundle["devices"])
    assert bundle["ca_certificate"] == console_api.get(f"{V1}/ca").json()["certificate"]
    made = page.locator("#bundle-made")
    expect(made).to_be_visible()
    expect(made.get_by_role("status")).to_have_text(
        f"{download.suggested_filename}: 2 devices, 2 created."
    )
    expect(made).to_contain_text("Keep the file safe")
    expect(made.get_by_role("link", name=ids[0])).to_be_visible()
    for device_id in ids:
        device = console_api.get(f"{V1}/devices/{device_id}").json()
        assert device["site_id"] == site and device["groups"] == [group]
    # The downloaded token opens the server.
    resp = httpx.post(
        f"{console_server.url}{V1}/telemetry",
        json={"sensor_id": "t", "value": 1.0},
        headers={"Authorization": f"Bearer {bundle['devices'][0]['token']}"},
    )
    assert resp.status_code == 200, resp.text

    # Again with one existing device and a number: the summary says what was made.
    form.get_by_label("Device ids (commas or lines)").fill(ids[0])
    form.get_by_label("…or a number of devices").fill("2")
    form.get_by_label("Id prefix of numbered devices").fill("x-")
    form.get_by_role("button", name="Make and download the bundle").click()
    expect(form.get_by_role("alert")).to_contain_text("give device_ids, or count with prefix")
    form.get_by_label("Device ids (commas or lines)").fill("")
    prefix = unique("pos") + "-"
    form.get_by_label("Id prefix of numbered devices").fill(prefix)
    with page.expect_download() as info:
        form.get_by_role("button", name="Make and download the bundle").click()
    numbered = orjson.loads(Path(info.value.path()).read_bytes())
    assert [d["device_id"] for d in numbered["devices"]] == [f"{prefix}001", f"{prefix}002"]
    expect(made.get_by_role("status")).to_contain_text("2 devices, 2 created.")
    assert console_api.get(f"{V1}/devices/{prefix}002").status_code == 200
    assert console.foreign_requests() == []


def test_a_refused_bundle_shows_the_apis_error_and_downloads_nothing(
    console: Console, console_api: Api
) -> None:
    device_id = unique("till")
    downloads: list[Any] = []
    console.sign_in()
    console.goto("/provisioning/bundles")
    page = console.page
    page.on("download", lambda download: downloads.append(download))
    form = page.locator("#bundle-form")
    form.get_by_label("Device ids (commas or lines)").fill(device_id)
    form.get_by_label("Site of new devices").fill("no-such-site")
    form.get_by_role("button", name="Make and download the bundle").click()
    expected = console_api.post(
        f"{V1}/provisioning/bundles", json={"device_ids": [device_id], "site_id": "no-such-site"}
    ).json()
    expect(form.get_by_role("alert")).to_contain_text(expected["detail"])

    form.get_by_label("Site of new devices").fill("")
    form.get_by_label("API URL the devices will use").fill("ftp://x")
    form.get_by_role("button", name="Make and download the bundle").click()
    expect(form.get_by_role("alert")).to_contain_text("api_url must be an http(s) URL")
    expect(page.locator("#bundle-made")).to_be_hidden()
    assert downloads == []
    assert console_api.get(f"{V1}/devices/{device_id}").status_code == 404
    assert console.foreign_requests() == []
