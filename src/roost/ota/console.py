"""Console pages of software delivery: artifacts (list, upload, one artifact), deployments (list,
the wizard that creates one, a deployment's live progress) and a device's Software tab.

Pages read through :class:`~roost.ota.artifacts.service.ArtifactService` and
:class:`~roost.ota.deployments.service.DeploymentService` as the API does. Every change is sent
by the browser to the API itself: an upload is the raw file POSTed by ``XMLHttpRequest`` to
``/api/v1/artifacts`` (so the page shows its progress), a deployment the wizard's JSON POSTed to
``/api/v1/deployments``, cancel and resume their API routes (``static/console.js``). A running
deployment's page polls its own URL with htmx every 2 s and swaps in the ``ota/_live.html`` part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fastapi import APIRouter
from starlette.responses import Response

from roost.console.web import ConsoleRoute, Page, PageDep
from roost.core.access import Role
from roost.store.queries import MAX_LIMIT, PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

#: Artifact types, as the API names them (the list's filter and the upload form's choice).
ARTIFACT_TYPES: Final = ("firmware", "application", "deb", "file", "container")
#: Deployment statuses, as the API names them (the list's filter).
DEPLOYMENT_STATUSES: Final = (
    "SCHEDULED",
    "IN_PROGRESS",
    "PAUSED",
    "HALTED",
    "SUCCEEDED",
    "FAILED",
    "CANCELED",
)
#: A deployment in one of these moves no more: its page stops polling, cancel is not offered.
FINAL_STATUSES: Final = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})
#: The steps of a device, in the order of the stacked bar: done well, done badly, under way.
STEP_ORDER: Final = (
    ("SUCCEEDED", "#2da44e"),
    ("FAILED", "#cf222e"),
    ("ROLLED_BACK", "#e16f24"),
    ("CANCELED", "#8c959f"),
    ("REBOOTING", "#bf8700"),
    ("INSTALLING", "#d4a72c"),
    ("DOWNLOADING", "#eac54f"),
    ("QUEUED", "#f2e5b5"),
)
#: Steps a device ends in (the bar's "done" count).
END_STEPS: Final = frozenset({"SUCCEEDED", "FAILED", "ROLLED_BACK", "CANCELED"})
#: Devices (actions) shown per page on a deployment's page (a deployment may have thousands).
ACTIONS_PAGE: Final = 25
#: Download counts shown per page on an artifact's page.
DOWNLOADS_PAGE: Final = 25
#: Deployments a list page shows: each row's bar needs its overview (one read per row).
DEPLOYMENTS_PAGE: Final = 25
#: The header htmx sets on its requests: the deployment page then answers its live part only.
HTMX_HEADER: Final = "HX-Request"
#: Longest text filter kept from the query string.
MAX_FILTER_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class Steps:
    """Devices of a deployment (or a phase, or a site) counted per step, as a stacked bar."""

    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        """Every device counted."""
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        """Devices in a final step."""
        return sum(n for step, n in self.counts.items() if step in END_STEPS)

    @property
    def segments(self) -> list[tuple[str, int, float, str]]:
        """(step, count, percent of the total, colour) for each step with devices."""
        total = self.total
        if not total:
            return []
        return [
            (step, self.counts.get(step, 0), 100 * self.counts.get(step, 0) / total, colour)
            for step, colour in STEP_ORDER
            if self.counts.get(step, 0)
        ]


def _text(page: Page, name: str) -> str | None:
    return (page.request.query_params.get(name) or "").strip()[:MAX_FILTER_CHARS] or None


def _choice(page: Page, name: str, allowed: tuple[str, ...]) -> str | None:
    value = page.request.query_params.get(name) or None
    return value if value in allowed else None


@router.get("/artifacts")
async def artifact_list(page: PageDep) -> Response:
    """Artifacts, newest first, filtered by type, model and text; operators upload new ones."""
    paging = page.paging(default_sort="-created_at")
    chosen = {
        "type": _choice(page, "type", ARTIFACT_TYPES),
        "model_id": _text(page, "model_id"),
        "q": _text(page, "q"),
    }
    artifacts = await page.roost.artifacts.list(page.actor, paging.request_page, **chosen)
    return page.render(
        "ota/artifacts.html",
        artifacts=artifacts,
        paging=paging,
        chosen=chosen,
        filtered=any(chosen.values()),
        types=ARTIFACT_TYPES,
        max_bytes=page.roost.settings.artifact_max_bytes,
    )


@router.get("/artifacts/{artifact_id}")
async def artifact_detail(page: PageDep, artifact_id: str) -> Response:
    """One artifact: metadata, signed manifest and signature, downloads per device; delete."""
    artifact = await page.roost.artifacts.get(page.actor, artifact_id)
    paging = page.paging(default_sort="-last_at", size=DOWNLOADS_PAGE)
    downloads = await page.roost.artifacts.downloads_of(
        page.actor, artifact_id, paging.request_page
    )
    return page.render(
        "ota/artifact.html",
        artifact=artifact,
        manifest=page.roost.artifacts.manifest(artifact),
        downloads=downloads,
        paging=paging,
    )


@router.get("/deployments")
async def deployment_list(page: PageDep) -> Response:
    """Deployments, newest first, with each one's progress; filter by status."""
    paging = page.paging(default_sort="-created_at", size=DEPLOYMENTS_PAGE)
    status = _choice(page, "status", DEPLOYMENT_STATUSES)
    deployments = await page.roost.deployments.list(
        page.actor, [status] if status else [], paging.request_page
    )
    progress: dict[str, Steps] = {}
    for item in deployments.items:
        overview = await page.roost.deployments.get(page.actor, item["id"])
        progress[item["id"]] = Steps(overview["steps"])
    return page.render(
        "ota/deployments.html",
        deployments=deployments,
        paging=paging,
        chosen=status,
        statuses=DEPLOYMENT_STATUSES,
        progress=progress,
    )


@router.get("/deployments/new")
async def deployment_wizard(page: PageDep) -> Response:
    """The wizard that creates a deployment (operators): artifacts, targets, phases, rollout,
    maintenance window, review. ``?artifact=a&devices=d1,d2`` fills its first choices."""
    page.actor.require(Role.OPERATOR)
    everything = PageRequest(limit=MAX_LIMIT, sort="-created_at")
    artifacts = await page.roost.artifacts.list(page.actor, everything)
    groups = await page.roost.inventory.list(
        page.actor, "group", PageRequest(limit=MAX_LIMIT, sort="name")
    )
    params = page.request.query_params
    devices = [d.strip() for d in (params.get("devices") or "").split(",") if d.strip()]
    return page.render(
        "ota/wizard.html",
        artifacts=artifacts,
        groups=groups,
        picked=set(params.getlist("artifact")),
        devices=devices,
    )


@router.get("/deployments/{deployment_id}")
async def deployment_detail(page: PageDep, deployment_id: str) -> Response:
    """A deployment's live progress: counts per step, per phase and per site, failures, its
    devices; cancel and resume. Polls itself every 2 s until the deployment is over."""
    deployment = await page.roost.deployments.get(page.actor, deployment_id)
    paging = page.paging(default_sort="device_id", size=ACTIONS_PAGE)
    step = _choice(page, "step", tuple(name for name, _ in STEP_ORDER))
    actions = await page.roost.deployments.actions(
        page.actor, deployment_id, step=[step] if step else [], page=paging.request_page
    )
    context: dict[str, Any] = {
        "deployment": deployment,
        "steps": Steps(deployment["steps"]),
        "phase_steps": [Steps(p["steps"]) for p in deployment["phases"]],
        "site_steps": [(s["site_id"], Steps(s["steps"])) for s in deployment["sites"]],
        "step_names": [name for name, _ in reversed(STEP_ORDER)],
        "actions": actions,
        "paging": paging,
        "chosen": step,
        "running": deployment["status"] not in FINAL_STATUSES,
    }
    if page.request.headers.get(HTMX_HEADER):
        return page.render("ota/_live.html", **context)
    return page.render("ota/deployment.html", **context)


@router.get("/devices/{device_id}/software")
async def device_software(page: PageDep, device_id: str) -> Response:
    """A device's software inventory: what deployments installed on it."""
    device = await page.roost.devices.get(page.actor, device_id)
    installed = await page.roost.deployments.installed(page.actor, device_id)
    return page.render("ota/software.html", device=device, tab="software", installed=installed)


@router.get("/apt")
async def apt_channels(page: PageDep) -> Response:
    """The tenant's APT channels: who sees each one and how many packages it holds."""
    paging = page.paging(default_sort="name")
    channels = await page.roost.apt.list_channels(page.actor, paging.request_page)
    return page.render("ota/apt.html", channels=channels, paging=paging)


@router.get("/apt/{name}")
async def apt_channel(page: PageDep, name: str) -> Response:
    """One channel: its packages, and the lines a device's apt needs to read it."""
    channel = await page.roost.apt.get_channel(page.actor, name)
    base = str(page.request.base_url).rstrip("/") + channel["repository"]
    return page.render("ota/apt_channel.html", channel=channel, repository_url=base)
