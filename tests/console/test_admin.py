"""The administration pages: users, API keys, consumers, the audit log and tenants, in Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.console.conftest import Console
from tests.support import Api, assert_problem, make_device, unique

PASSWORD = "console-pass-1234"


def new_user(api: Api, role: str, *, tenant: str | None = None) -> tuple[str, int]:
    """A user made through the API: (username, id)."""
    name = unique(role)
    body: dict[str, Any] = {"username": name, "password": PASSWORD, "role": role}
    if tenant:
        body["tenant"] = tenant
    resp = api.post("/api/v1/users", json=body)
    assert resp.status_code == 201, resp.text
    return name, resp.json()["id"]


@pytest.fixture
def second(browser: Any, console: Console) -> Iterator[Console]:
    """Another browser context (its own cookies) on the same server."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    tab = Console(console.server, context, page)
    page.on("request", lambda request: tab.requested.append(request.url))
    yield tab
    context.close()


def accept_dialogs(console: Console) -> None:
    """Answer every confirm() of the page with OK."""
    console.page.on("dialog", lambda dialog: dialog.accept())


def test_an_admin_adds_a_user_who_then_signs_in(
    console: Console, second: Console, console_api: Api
) -> None:
    console.sign_in()
    console.goto("/admin/users")
    page = console.page
    expect(page.get_by_role("navigation", name="Administration")).to_contain_text("API keys")
    name = unique("clerk")
    page.locator("#new-user > summary").click()
    form = page.locator("#new-user form")
    form.get_by_label("Username").fill(name)
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_label("Role").select_option("viewer")
    form.get_by_role("button", name="Add user").click()
    row = page.locator(f'tr[data-user="{name}"]')
    expect(row).to_contain_text("viewer")
    expect(row).to_contain_text("never")  # not signed in yet
    created = console_api.get("/api/v1/users", params={"q": name}).json()["items"]
    assert [(u["username"], u["role"]) for u in created] == [(name, "viewer")]

    second.sign_in(name, PASSWORD)
    second.goto("/admin/users")
    expect(second.page.get_by_role("alert")).to_contain_text("this needs the admin role")
    expect(second.page.locator(".user")).to_contain_text(name)
    # The first browser now sees the sign-in time.
    page.reload()
    expect(page.locator(f'tr[data-user="{name}"]')).not_to_contain_text("never")
    assert console.foreign_requests() == []
    assert second.foreign_requests() == []


def test_search_and_role_filter_narrow_the_user_list(console: Console, console_api: Api) -> None:
    operator, _ = new_user(console_api, "operator")
    viewer, _ = new_user(console_api, "viewer")
    console.sign_in()
    console.goto("/admin/users?role=operator")
    page = console.page
    expect(page.locator(f'tr[data-user="{operator}"]')).to_be_visible()
    expect(page.locator(f'tr[data-user="{viewer}"]')).to_have_count(0)
    page.get_by_label("Search").fill(viewer)
    page.locator("form.filters").get_by_label("Role").select_option("")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator(f'tr[data-user="{viewer}"]')).to_be_visible()
    assert console.foreign_requests() == []


def test_an_admin_changes_a_role_disables_and_deletes_a_user(
    console: Console, console_api: Api
) -> None:
    name, user_id = new_user(console_api, "viewer")
    console.sign_in()
    accept_dialogs(console)
    console.goto(f"/admin/users?q={name}")
    page = console.page
    row = page.locator(f'tr[data-user="{name}"]')
    row.get_by_text("Manage").click()
    row.get_by_label(f"Role of {name}").select_option("operator")
    row.get_by_role("button", name="Change role").click()
    expect(page.locator(f'tr[data-user="{name}"] td').nth(1)).to_have_text("operator")
    assert console_api.get(f"/api/v1/users/{user_id}").json()["role"] == "operator"

    row.get_by_text("Manage").click()
    row.get_by_label(f"New password for {name}").fill("another-password-1")
    row.get_by_role("button", name="Reset password").click()
    expect(row.get_by_label(f"New password for {name}")).to_be_hidden()  # reloaded, closed
    assert console_api.login(name, "another-password-1")

    row.get_by_text("Manage").click()
    row.get_by_role("button", name="Disable").click()
    expect(row.locator(".badge-disabled")).to_be_visible()
    assert console_api.get(f"/api/v1/users/{user_id}").json()["disabled"] is True

    row.get_by_text("Manage").click()
    row.get_by_role("button", name="Delete").click()
    expect(page.locator(f'tr[data-user="{name}"]')).to_have_count(0)
    assert_problem(console_api.get(f"/api/v1/users/{user_id}"), 404)
    assert console.foreign_requests() == []


def test_a_refused_user_change_shows_the_apis_message(console: Console, console_api: Api) -> None:
    taken, _ = new_user(console_api, "viewer")
    console.sign_in()
    console.goto("/admin/users")
    page = console.page
    page.locator("#new-user > summary").click()
    form = page.locator("#new-user form")
    form.get_by_label("Username").fill(taken)
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_role("button", name="Add user").click()
    expect(form.get_by_role("alert")).to_contain_text(f"username '{taken}' is taken")

    form.get_by_label("Username").fill(unique("short"))
    form.get_by_label("Password").fill("short")
    form.get_by_role("button", name="Add user").click()
    expect(form.get_by_role("alert")).to_contain_text("password")
    expect(form.get_by_role("alert")).to_contain_text("at least 8 characters")

    # The superuser cannot be demoted: the API's conflict is shown beside the form.
    admin_row = page.locator('tr[data-user="admin"]')
    admin_row.get_by_text("Manage").click()
    admin_row.get_by_label("Role of admin").select_option("viewer")
    admin_row.get_by_role("button", name="Change role").click()
    expect(admin_row.get_by_role("alert")).to_contain_text("the superuser cannot be demoted")
    assert console.foreign_requests() == []


def test_an_api_key_is_shown_once_works_and_stops_when_revoked(
    console: Console, console_api: Api
) -> None:
    console.sign_in()
    accept_dialogs(console)
    console.goto("/admin/api-keys")
    page = console.page
    name = unique("ci-key")
    page.locator("#new-key > summary").click()
    form = page.locator("#new-key form")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Role").select_option("viewer")
    form.get_by_role("button", name="Create key").click()
    shown = page.get_by_label("API key", exact=True)
    expect(shown).to_have_value(re.compile("^roost_"))
    expect(page.locator("#secret-once")).to_contain_text("shown this once")
    key = shown.input_value()
    assert key.startswith("roost_")
    with Api(console.server.url, key) as api:
        assert api.get("/api/v1/devices").status_code == 200
        # A viewer key may read but not change anything.
        assert_problem(api.post("/api/v1/sites", json={"id": unique("s"), "name": "x"}), 403)

    # The list refreshed under the key; once hidden, the key is nowhere in the page.
    row = page.locator("tr", has_text=name)
    expect(row).to_contain_text("viewer")
    page.get_by_role("button", name="I have copied it").click()
    assert key not in page.content()
    page.reload()
    assert key not in page.content()

    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("tr", has_text=name).locator(".badge-revoked")).to_be_visible()
    with Api(console.server.url, key) as api:
        assert_problem(api.get("/api/v1/devices"), 401, "revoked")
    assert console.foreign_requests() == []


def test_a_consumer_is_created_with_a_grant_and_its_key_reads(
    console: Console, console_api: Api
) -> None:
    granted = make_device(console_api)
    other = make_device(console_api)
    console.sign_in()
    console.goto("/admin/consumers")
    page = console.page
    page.locator("#new-consumer > summary").click()
    form = page.locator("#new-consumer form")
    consumer_id = unique("dash")
    form.get_by_label("Name").fill("Store dashboard")
    form.get_by_label("Id (optional").fill(consumer_id)
    grants = form.get_by_label("Grants (JSON)")
    grants.fill('[{"devices": ["no-such-device"]}]')
    form.get_by_role("button", name="Create consumer").click()
    expect(form.get_by_role("alert")).to_contain_text("grants name unknown devices: no-such-device")

    grants.fill(f'[{{"devices": ["{granted.id}"]}}]')
    form.get_by_role("button", name="Create consumer").click()
    shown = page.get_by_label("Consumer key", exact=True)
    expect(page.locator("#secret-once")).to_contain_text(consumer_id)
    expect(shown).to_have_value(re.compile("^roostc_"))
    key = shown.input_value()
    assert key.startswith("roostc_")
    row = page.locator(f'tr[data-consumer="{consumer_id}"]')
    expect(row).to_contain_text(granted.id)
    with Api(console.server.url, key) as api:
        assert api.get(f"/api/v1/devices/{granted.id}/latest").status_code == 200
        assert api.get(f"/api/v1/devices/{other.id}/latest").status_code in {403, 404}
    stored = console_api.get(f"/api/v1/consumers/{consumer_id}").json()
    assert stored["grants"] == [{"devices": [granted.id]}]

    # Rotating shows the new key once; the old one stops working.
    page.get_by_role("button", name="I have copied it").click()
    accept_dialogs(console)
    page.locator(f'tr[data-consumer="{consumer_id}"]').get_by_role(
        "button", name="Rotate key"
    ).click()
    expect(page.locator("#secret-once")).to_contain_text("no longer works")
    rotated = page.get_by_label("Consumer key", exact=True).input_value()
    assert rotated.startswith("roostc_") and rotated != key
    with Api(console.server.url, key) as api:
        assert_problem(api.get(f"/api/v1/devices/{granted.id}/latest"), 401)
    assert console.foreign_requests() == []


def test_the_audit_log_lists_the_user_creation(console: Console, console_api: Api) -> None:
    name, _ = new_user(console_api, "operator")
    console.sign_in()
    console.goto("/admin/audit")
    page = console.page
    page.get_by_label("Resource type").fill("user")
    page.get_by_label("Resource id").fill(name)
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("admin")
    expect(rows.first).to_contain_text("create")
    change = rows.first.locator("details")
    expect(change.locator("pre")).to_be_hidden()
    change.get_by_text("created as").click()
    expect(change.locator("pre")).to_contain_text(f'"username": "{name}"')
    expect(change.locator("pre")).not_to_contain_text("password")

    # Newest first, and a time range in the future holds nothing.
    console.goto("/admin/audit")
    expect(page.locator("tbody tr").first).to_contain_text(name)
    console.goto("/admin/audit?since=2999-01-01T00:00")
    expect(page.get_by_text("No change matches these filters")).to_be_visible()
    console.goto("/admin/audit?since=yesterday")
    expect(page.get_by_text("not a time")).to_be_visible()
    assert console.foreign_requests() == []


def test_the_superuser_creates_a_tenant_and_switches_to_it(
    console: Console, console_api: Api
) -> None:
    console.sign_in()
    console.goto("/admin/tenants")
    page = console.page
    tenant = unique("shop")
    page.locator("#new-tenant > summary").click()
    form = page.locator("#new-tenant form")
    form.get_by_label("Id").fill(tenant)
    form.get_by_label("Name", exact=True).fill("Shop chain")
    form.get_by_role("button", name="Create tenant").click()
    expect(page.locator(f'tr[data-tenant="{tenant}"]')).to_contain_text("Shop chain")

    page.locator("header select[name=tenant]").select_option(tenant)
    page.wait_for_url(console.server.url + "/")
    console.goto("/admin/users")
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"of tenant {tenant}")
    expect(page.get_by_text("This tenant has no users yet")).to_be_visible()
    # A user added in the page now belongs to the new tenant.
    name = unique("shopadmin")
    page.locator("#new-user > summary").click()
    form = page.locator("#new-user form")
    form.get_by_label("Username").fill(name)
    form.get_by_label("Password").fill(PASSWORD)
    form.get_by_label("Role").select_option("admin")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator(f'tr[data-user="{name}"]')).to_contain_text("admin")
    listed = console_api.get("/api/v1/users", headers={"X-Roost-Tenant": tenant}).json()
    assert [u["username"] for u in listed["items"]] == [name]
    # The audit log of the tenant holds that change.
    console.goto("/admin/audit")
    expect(page.locator("tbody tr").first).to_contain_text(name)

    # Back in the default tenant, the new user is not among its users.
    page.locator("header select[name=tenant]").select_option("default")
    page.wait_for_url(console.server.url + "/")
    console.goto(f"/admin/users?q={name}")
    expect(page.get_by_text("No user matches these filters")).to_be_visible()

    # Rename it and keep its data 30 days, then delete it with everything it owns.
    accept_dialogs(console)
    console.goto(f"/admin/tenants?q={tenant}")
    row = page.locator(f'tr[data-tenant="{tenant}"]')
    row.get_by_text("Edit").click()
    row.get_by_label("Name").fill("Shop chain (EU)")
    row.get_by_label("Keep telemetry").fill("30")
    row.get_by_role("button", name="Save").click()
    expect(row).to_contain_text("30 days")
    expect(row).to_contain_text("Shop chain (EU)")
    row.get_by_text("Edit").click()
    row.get_by_role("button", name="Delete tenant").click()
    expect(page.locator(f'tr[data-tenant="{tenant}"]')).to_have_count(0)
    assert_problem(console_api.get(f"/api/v1/tenants/{tenant}"), 404)
    assert console.foreign_requests() == []


def test_operators_and_viewers_see_no_admin_write_actions(
    console: Console, console_api: Api, second: Console
) -> None:
    operator, _ = new_user(console_api, "operator")
    viewer, _ = new_user(console_api, "viewer")
    device = make_device(console_api)
    make = console_api.post(
        "/api/v1/consumers", json={"name": "seen by all", "grants": [{"devices": [device.id]}]}
    )
    assert make.status_code == 201, make.text
    admin_key = console_api.post("/api/v1/api-keys", json={"name": unique("admin-key")})
    assert admin_key.status_code == 201, admin_key.text

    console.sign_in(operator, PASSWORD)
    page = console.page
    console.goto("/admin/users")
    expect(page.get_by_role("alert")).to_contain_text("this needs the admin role; you are operator")
    expect(page.get_by_text("Add a user")).to_have_count(0)
    expect(page.get_by_role("link", name="Tenants")).to_have_count(0)
    console.goto("/admin/tenants")
    expect(page.get_by_role("alert")).to_contain_text("only the platform superuser")
    expect(page.get_by_text("Create a tenant")).to_have_count(0)
    # API keys: only the operator's own (none), nobody else's to revoke.
    console.goto("/admin/api-keys")
    expect(page.get_by_text(admin_key.json()["name"])).to_have_count(0)
    expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
    expect(page.locator("#new-key select[name=role] option")).to_have_count(2)  # viewer, operator
    console.goto("/admin/audit")
    expect(page.locator("tbody tr").first).to_be_visible()

    second.sign_in(viewer, PASSWORD)
    page = second.page
    second.goto("/admin/consumers")
    expect(page.locator("tbody tr").first).to_be_visible()
    expect(page.get_by_text("Create a consumer")).to_have_count(0)
    expect(page.get_by_role("button", name="Rotate key")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    second.goto("/admin/audit")
    expect(page.get_by_role("alert")).to_contain_text("this needs the operator role")
    second.goto("/admin/users")
    expect(page.get_by_role("button")).to_have_text(["Sign out"])
    assert console.foreign_requests() == []
    assert second.foreign_requests() == []
