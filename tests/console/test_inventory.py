"""The inventory pages in a real browser: collections, groups and bulk import through the API."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.console.conftest import Console
from tests.support import Api, make_device, unique

PASSWORD = "inventory-pass-1"


def accept_dialogs(console: Console) -> None:
    """Say yes to every confirm() (delete buttons ask first)."""
    console.page.on("dialog", lambda dialog: dialog.accept())


def new_user(api: Api, role: str) -> str:
    """A user of the superuser's tenant with ``role``."""
    name = unique(role)
    resp = api.post("/api/v1/users", json={"username": name, "password": PASSWORD, "role": role})
    assert resp.status_code == 201, resp.text
    return name


def open_details(details: Any) -> None:
    """Unfold a <details> section (it may start open)."""
    if details.get_attribute("open") is None:
        details.locator("summary").click()


def create(console: Console, slug: str, noun: str, values: dict[str, str]) -> None:
    """Fill the "New …" form of a collection page and submit it."""
    page = console.page
    console.goto(f"/inventory/{slug}")
    open_details(page.locator("#new-record"))
    form = page.get_by_role("form", name=f"New {noun}")
    for label, value in values.items():
        form.get_by_label(label, exact=True).fill(value)
    form.get_by_role("button", name=f"Create {noun}").click()


def api_get(api: Api, path: str) -> Any:
    resp = api.get(path)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_create_sites_manufacturers_models_and_firmware_from_the_forms(
    console: Console, console_api: Api
) -> None:
    console.sign_in()
    page = console.page
    site, mfr, model, fw = unique("site"), unique("mfr"), unique("model"), unique("fw")

    create(console, "sites", "site", {"Id": site, "Name": "Paris Opéra", "Country": "fr"})
    page.wait_for_url(f"**/inventory/sites/{site}")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Paris Opéra")
    create(console, "manufacturers", "manufacturer", {"Id": mfr, "Name": "Acme"})
    page.wait_for_url(f"**/inventory/manufacturers/{mfr}")
    create(
        console,
        "models",
        "model",
        {
            "Id": model,
            "Reference": "K2",
            "Commercial name": "Kiosk Two",
            "Manufacturer": mfr,
            "Heartbeat interval (s)": "60",
        },
    )
    page.wait_for_url(f"**/inventory/models/{model}")
    create(
        console,
        "firmware",
        "firmware",
        {"Id": fw, "Version": "2.1.0", "Model": model, "Released at (UTC)": "2026-03-01T10:00"},
    )
    page.wait_for_url(f"**/inventory/firmware/{fw}")

    # Listed in their tables, with links to the devices and between records.
    console.goto(f"/inventory/sites?q={site}")
    row = page.locator(f'tr[data-id="{site}"]')
    expect(row).to_contain_text("Paris Opéra")
    expect(row).to_contain_text("FR")  # the service normalised the country
    expect(row.get_by_role("link", name="Devices")).to_have_attribute(
        "href", f"/devices?site={site}"
    )
    console.goto("/inventory/models")
    row = page.locator(f'tr[data-id="{model}"]')
    expect(row).to_contain_text("Kiosk Two")
    expect(row.get_by_role("link", name=mfr)).to_have_attribute(
        "href", f"/inventory/manufacturers/{mfr}"
    )
    expect(row.get_by_role("link", name="Devices")).to_have_attribute(
        "href", f"/devices?model={model}"
    )
    console.goto(f"/inventory/firmware?model_id={model}")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator(f'tr[data-id="{fw}"]')).to_contain_text("2026-03-01 10:00:00Z")

    # And in the API.
    assert api_get(console_api, f"/api/v1/sites/{site}")["country"] == "FR"
    assert api_get(console_api, f"/api/v1/manufacturers/{mfr}")["name"] == "Acme"
    stored = api_get(console_api, f"/api/v1/device-models/{model}")
    assert (stored["manufacturer_id"], stored["heartbeat_interval_s"]) == (mfr, 60)
    assert stored["auto_create_sensors"] is True
    stored = api_get(console_api, f"/api/v1/firmware/{fw}")
    assert (stored["model_id"], stored["released_at"][:16]) == (model, "2026-03-01T10:00")
    assert console.foreign_requests() == []


def test_edit_and_delete_records(console: Console, console_api: Api) -> None:
    customer, site = unique("cust"), unique("site")
    assert console_api.post("/api/v1/customers", json={"id": customer, "name": "Shop"}).is_success
    body = {"id": site, "name": "Lyon", "customer_id": customer, "city": "Lyon"}
    assert console_api.post("/api/v1/sites", json=body).is_success
    console.sign_in()
    accept_dialogs(console)
    page = console.page

    console.goto(f"/inventory/sites?q={site}")
    page.get_by_role("link", name=f"Edit site {site}").click()
    form = page.get_by_role("form", name="Edit site")
    form.get_by_label("Name", exact=True).fill("Lyon Part-Dieu")
    form.get_by_label("Time zone").fill("Europe/Paris")
    form.get_by_label("City").fill("")  # an emptied field is cleared
    form.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Lyon Part-Dieu")
    stored = api_get(console_api, f"/api/v1/sites/{site}")
    assert (stored["name"], stored["timezone"], stored["city"]) == (
        "Lyon Part-Dieu",
        "Europe/Paris",
        "",
    )
    assert stored["customer_id"] == customer  # untouched fields keep their values

    # A customer still used by a site cannot go: the API's reason shows in the page.
    console.goto(f"/inventory/customers?q={customer}")
    page.get_by_role("button", name=f"Delete customer {customer}").click()
    expect(page.get_by_role("alert")).to_contain_text("still used by 1 sites")
    assert console_api.get(f"/api/v1/customers/{customer}").status_code == 200

    console.goto(f"/inventory/sites/{site}")
    page.get_by_role("button", name="Delete site").click()
    page.wait_for_url("**/inventory/sites")
    assert console_api.get(f"/api/v1/sites/{site}").status_code == 404
    console.goto(f"/inventory/customers?q={customer}")
    page.get_by_role("button", name=f"Delete customer {customer}").click()
    expect(page.locator(f'tr[data-id="{customer}"]')).to_have_count(0)
    assert console_api.get(f"/api/v1/customers/{customer}").status_code == 404
    assert console.foreign_requests() == []


def test_bad_input_shows_the_apis_message(console: Console, console_api: Api) -> None:
    site = unique("site")
    assert console_api.post("/api/v1/sites", json={"id": site, "name": "Taken"}).is_success
    console.sign_in()
    page = console.page

    create(console, "sites", "site", {"Id": site, "Name": "Again"})
    form = page.get_by_role("form", name="New site")
    expect(form.get_by_role("alert")).to_contain_text(f"site '{site}' already exists")

    other = unique("site")
    form.get_by_label("Id", exact=True).fill(other)
    form.get_by_label("Country").fill("France")
    form.get_by_role("button", name="Create site").click()
    expect(form.get_by_role("alert")).to_contain_text("two-letter ISO 3166 code")
    form.get_by_label("Country").fill("")
    form.get_by_label("Customer").fill("nobody")
    form.get_by_role("button", name="Create site").click()
    expect(form.get_by_role("alert")).to_contain_text("no customer 'nobody'")
    assert console_api.get(f"/api/v1/sites/{other}").status_code == 404
    assert console.foreign_requests() == []


def test_static_and_dynamic_groups(console: Console, console_api: Api) -> None:
    site = unique("site")
    assert console_api.post("/api/v1/sites", json={"id": site, "name": "Nantes"}).is_success
    at_site = make_device(console_api, site_id=site).id
    elsewhere = make_device(console_api).id
    console.sign_in()
    accept_dialogs(console)
    page = console.page

    # A static group, and a device added to it by id.
    static = unique("grp")
    console.goto("/inventory/groups")
    open_details(page.locator("#new-static"))
    form = page.get_by_role("form", name="New static group")
    form.get_by_label("Id").fill(static)
    form.get_by_label("Name").fill("Front counters")
    form.get_by_role("button", name="Create static group").click()
    page.wait_for_url(f"**/inventory/groups/{static}")
    expect(page.get_by_text("No devices in this group yet")).to_be_visible()
    add = page.get_by_role("form", name="Add devices")
    add.get_by_label("Device ids").fill("no-such-device")
    add.get_by_role("button", name="Add to group").click()
    expect(add.get_by_role("alert")).to_contain_text("unknown devices: no-such-device")
    add.get_by_label("Device ids").fill(elsewhere)
    add.get_by_role("button", name="Add to group").click()
    expect(page.locator(f'tr[data-id="{elsewhere}"]')).to_be_visible()
    members = api_get(console_api, f"/api/v1/groups/{static}/devices")["items"]
    assert [d["id"] for d in members] == [elsewhere]

    # A dynamic group: its members are the devices its rule matches.
    dynamic = unique("grp")
    console.goto("/inventory/groups")
    open_details(page.locator("#new-dynamic"))
    form = page.get_by_role("form", name="New dynamic group")
    form.get_by_label("Id").fill(dynamic)
    form.get_by_label("Name").fill("Nantes devices")
    form.get_by_role("button", name="Create dynamic group").click()
    expect(form.get_by_role("alert")).to_contain_text("filter must select on at least one")
    form.get_by_label("Site").fill(site)
    form.get_by_role("button", name="Create dynamic group").click()
    page.wait_for_url(f"**/inventory/groups/{dynamic}")
    expect(page.locator(f'tr[data-id="{at_site}"]')).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(1)
    assert api_get(console_api, f"/api/v1/groups/{dynamic}")["filter"] == {"site_id": site}

    # Its rule edited: a tag no device has leaves it empty.
    rule = page.get_by_role("form", name="Edit rule")
    rule.get_by_label("Tags (JSON object)").fill('{"floor": "9"}')
    rule.get_by_role("button", name="Save rule").click()
    expect(page.get_by_text("No device matches this rule yet")).to_be_visible()
    stored = api_get(console_api, f"/api/v1/groups/{dynamic}")["filter"]
    assert stored == {"site_id": site, "tags": {"floor": "9"}}

    # The static member taken out again, then the group deleted.
    console.goto(f"/inventory/groups/{static}")
    page.get_by_role("button", name=f"Remove {elsewhere}").click()
    expect(page.get_by_text("No devices in this group yet")).to_be_visible()
    page.get_by_role("button", name="Delete group").click()
    page.wait_for_url("**/inventory/groups")
    assert console_api.get(f"/api/v1/groups/{static}").status_code == 404
    assert console.foreign_requests() == []


def test_import_a_csv_dry_run_then_apply(console: Console, console_api: Api) -> None:
    site = unique("site")
    assert console_api.post("/api/v1/sites", json={"id": site, "name": "Lille"}).is_success
    first, second = unique("imp"), unique("imp")
    bad = f"id,name,site_id,tag.floor\n{first},Kiosk 1,{site},1\n{second},Kiosk 2,nowhere,2\n"
    console.sign_in()
    page = console.page
    console.goto("/inventory/import")

    page.get_by_label("CSV or JSON file").set_input_files(
        files=[{"name": "devices.csv", "mimeType": "text/csv", "buffer": bad.encode()}]
    )
    expect(page.get_by_role("button", name="Apply import")).to_be_disabled()
    page.get_by_role("button", name="Dry run").click()
    report = page.locator("#import-report")
    expect(report).to_contain_text("Dry run: the import would be refused")
    expect(report).to_contain_text("1 of 2 row(s) are invalid")
    bad_row = report.locator("tbody tr")
    expect(bad_row).to_have_count(1)
    expect(bad_row).to_contain_text("2")
    expect(bad_row).to_contain_text(second)
    expect(bad_row).to_contain_text("no site 'nowhere'")
    expect(page.get_by_role("button", name="Apply import")).to_be_disabled()
    assert api_get(console_api, f"/api/v1/devices?q={first}")["total"] == 0

    # Fixed and pasted instead of uploaded: the dry run passes and writes nothing.
    page.get_by_label("CSV or JSON file").set_input_files([])
    page.get_by_label("… or paste its content").fill(bad.replace("nowhere", site))
    page.get_by_role("button", name="Dry run").click()
    expect(report).to_contain_text("Dry run: nothing was written yet")
    expect(report.locator('[data-count="would be created"] .value')).to_have_text("2")
    assert api_get(console_api, f"/api/v1/devices?q={first}")["total"] == 0

    page.get_by_role("button", name="Apply import").click()
    expect(report).to_contain_text("Imported")
    expect(report.locator('[data-count="created"] .value')).to_have_text("2")
    expect(page.get_by_role("button", name="Apply import")).to_be_disabled()
    for device_id, floor in ((first, "1"), (second, "2")):
        device = api_get(console_api, f"/api/v1/devices/{device_id}")
        assert (device["site_id"], device["tags"]) == (site, {"floor": floor})
    assert console.foreign_requests() == []


def test_a_viewer_sees_no_write_actions(console: Console, console_api: Api) -> None:
    site, group = unique("site"), unique("grp")
    assert console_api.post("/api/v1/sites", json={"id": site, "name": "Viewed"}).is_success
    assert console_api.post("/api/v1/groups", json={"id": group, "name": "Watched"}).is_success
    viewer = new_user(console_api, "viewer")
    console.sign_in(viewer, PASSWORD)
    page = console.page

    for path, shown in (
        (f"/inventory/sites?q={site}", "Viewed"),
        (f"/inventory/sites/{site}", "Viewed"),
        ("/inventory/customers", "Customers"),
        ("/inventory/manufacturers", "Manufacturers"),
        ("/inventory/models", "Models"),
        ("/inventory/firmware", "Firmware"),
        ("/inventory/groups", "Watched"),
        (f"/inventory/groups/{group}", "Watched"),
        ("/inventory/import", "Import devices"),
    ):
        console.goto(path)
        expect(page.locator("main")).to_contain_text(shown)
        expect(page.locator("[data-api]")).to_have_count(0)
        expect(page.locator("main form:not(.filters)")).to_have_count(0)
        expect(page.get_by_role("button", name="Dry run")).to_have_count(0)
    expect(page.get_by_text("needs the operator role")).to_be_visible()
    assert console.foreign_requests() == []
