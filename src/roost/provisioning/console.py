"""Console pages of the provisioning room: enrollment groups, attestation hashes, bundles.

Lists and records are read through :class:`~roost.provisioning.service.ProvisioningService`
with the page's user, as ``GET /api/v1/enrollments`` and ``/attestation-hashes`` read them;
every change is sent by the browser to those API routes. An offline bundle is made by the
browser at ``POST /api/v1/provisioning/bundles`` and saved as a file; the page also composes the
``roost provision bundle`` command that writes one on the server (for air-gapped work).
"""

from __future__ import annotations

import shlex
from typing import Any

from fastapi import APIRouter
from starlette.responses import HTMLResponse, RedirectResponse, Response

from roost.console.web import ConsoleRoute, Page, PageDep
from roost.credentials.keys import sas
from roost.provisioning.bundles import BUNDLE_FORMAT, MAX_BUNDLE_DEVICES
from roost.provisioning.service import ENROLLMENT_SORTS, HASH_SORTS, MAX_HASHES_PER_UPLOAD
from roost.store.queries import PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

# Sites and groups offered as suggestions in the placement fields: a tenant's worth for a
# datalist; an id typed by hand still works, and the API checks it either way.
CHOICES_LIMIT = 500


async def placement_choices(page: Page) -> dict[str, Any]:
    """Sites, and the static groups a provisioned device can join, for the forms' suggestions."""
    choices = PageRequest(limit=CHOICES_LIMIT, sort="id")
    sites = await page.roost.inventory.list(page.actor, "site", choices)
    groups = await page.roost.inventory.list(page.actor, "group", choices)
    return {
        "sites": sites.items,
        # Dynamic groups choose their members by filter: the API refuses them here.
        "groups": [g for g in groups.items if g.get("filter") is None],
    }


@router.get("/provisioning")
async def provisioning_home(page: PageDep) -> Response:
    """The provisioning section opens on its enrollment groups."""
    return RedirectResponse("/provisioning/enrollments", status_code=303)


@router.get("/provisioning/enrollments")
async def enrollment_list(page: PageDep) -> HTMLResponse:
    """Enrollment groups, and a form to make one (operators)."""
    paging = page.paging(default_sort="-created_at")
    listed = await page.roost.provisioning.list_enrollments(page.actor, paging.request_page)
    choices: dict[str, Any] = await placement_choices(page) if page.can_operate else {}
    return page.render(
        "provisioning/enrollments.html",
        paging=paging,
        listed=listed,
        sorts=ENROLLMENT_SORTS,
        **choices,
    )


@router.get("/provisioning/enrollments/{enrollment_id}")
async def enrollment_detail(page: PageDep, enrollment_id: str) -> HTMLResponse:
    """One enrollment group: where its devices land, how they register; edit and delete."""
    enrollment = await page.roost.provisioning.get_enrollment(page.actor, enrollment_id)
    choices: dict[str, Any] = await placement_choices(page) if page.can_operate else {}
    return page.render(
        "provisioning/enrollment.html",
        enrollment=enrollment,
        example_resource=sas.registration_resource(enrollment_id, "{registration_id}"),
        **choices,
    )


@router.get("/provisioning/attestations")
async def attestation_list(page: PageDep) -> HTMLResponse:
    """Attestation hashes (by id and first characters), and a form to add some (operators)."""
    paging = page.paging(default_sort="-created_at")
    listed = await page.roost.provisioning.list_hashes(page.actor, paging.request_page)
    choices: dict[str, Any] = await placement_choices(page) if page.can_operate else {}
    return page.render(
        "provisioning/attestations.html",
        paging=paging,
        listed=listed,
        sorts=HASH_SORTS,
        max_hashes=MAX_HASHES_PER_UPLOAD,
        **choices,
    )


def bundle_command(tenant_id: str, params: dict[str, str]) -> str | None:
    """The ``roost provision bundle`` command line for the form's values (None: no devices)."""
    device_id = params.get("device_id", "").strip()
    count = params.get("count", "").strip()
    prefix = params.get("prefix", "").strip()
    if not device_id and not count:
        return None
    words = ["roost", "provision", "bundle"]
    if count:
        words += ["--count", count, "--prefix", prefix or "device-"]
    else:
        words.append(device_id)
    site = params.get("site", "").strip()
    if site:
        words += ["--site", site]
    for group in params.get("groups", "").replace(",", " ").split():
        words += ["--group", group]
    if tenant_id != "default":
        words += ["--tenant", tenant_id]
    words += ["--output", params.get("output", "").strip() or "bundle.json"]
    return shlex.join(words)


@router.get("/provisioning/bundles")
async def bundles(page: PageDep) -> HTMLResponse:
    """Offline bundles: what one holds, a form that downloads one from the API (operators), and
    the server command that writes one."""
    params = {key: value for key, value in page.request.query_params.items() if key != "csrf"}
    choices: dict[str, Any] = await placement_choices(page) if page.can_operate else {}
    return page.render(
        "provisioning/bundles.html",
        params=params,
        command=bundle_command(page.actor.tenant_id, params),
        bundle_format=BUNDLE_FORMAT,
        max_devices=MAX_BUNDLE_DEVICES,
        **choices,
    )
