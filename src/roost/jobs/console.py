"""Console pages of jobs: the list, the create form, a job's progress and executions, and a
device's executions (its Jobs tab).

Pages read through :class:`~roost.jobs.service.JobService` as the API does; creating and
cancelling are sent by the browser to ``/api/v1/jobs`` (``static/console.js``). A job's page
polls its own URL with htmx while the job runs and swaps in the ``jobs/_live.html`` part only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

from roost.console.web import ConsoleRoute, Page, PageDep
from roost.core.access import Role
from roost.errors import NotFound
from roost.jobs.lifecycle import EXECUTION_TERMINAL, ExecutionStatus
from roost.jobs.rules import JOB_TERMINAL, JobStatus
from roost.store.queries import MAX_LIMIT, PageRequest

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

JOB_STATUSES = [s.value for s in JobStatus]
EXECUTION_STATUSES = [s.value for s in ExecutionStatus]
# The stacked progress bar's order and colours: done well, done badly, still to do.
BAR_ORDER = (
    ("SUCCEEDED", "#2da44e"),
    ("FAILED", "#cf222e"),
    ("TIMED_OUT", "#e16f24"),
    ("REJECTED", "#a40e26"),
    ("CANCELED", "#8c959f"),
    ("REMOVED", "#bfc4ca"),
    ("IN_PROGRESS", "#d4a72c"),
    ("QUEUED", "#f2e5b5"),
)
BAR_COLOURS = dict(BAR_ORDER)
# Executions shown per page on a job's page (a job may have thousands).
EXECUTIONS_PAGE = 25
# The header htmx sets on its requests: the job page then answers only its live part.
HTMX_HEADER = "HX-Request"


@dataclass(frozen=True, slots=True)
class Progress:
    """A job's executions counted per status, as a stacked bar."""

    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        """Every execution of the job."""
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        """Executions in a final status."""
        return sum(n for status, n in self.counts.items() if status in EXECUTION_TERMINAL)

    @property
    def segments(self) -> list[tuple[str, int, float, str]]:
        """(status, count, percent of the total, colour) for each status with executions."""
        total = self.total
        if not total:
            return []
        return [
            (status, self.counts.get(status, 0), 100 * self.counts.get(status, 0) / total, colour)
            for status, colour in BAR_ORDER
            if self.counts.get(status, 0)
        ]


def _status(page: Page, allowed: list[str]) -> str | None:
    value = page.request.query_params.get("status") or None
    return value if value in allowed else None


@router.get("/jobs")
async def job_list(page: PageDep) -> Response:
    """Jobs, newest first: filter by status, find one by id."""
    wanted = (page.request.query_params.get("q") or "").strip()
    missing = None
    if wanted:
        # The API has no text search over jobs: an id is looked up and opened directly.
        try:
            job = await page.roost.jobs.get(page.actor, wanted)
        except NotFound:
            missing = wanted
        else:
            return RedirectResponse(f"/jobs/{job['id']}", status_code=303)
    paging = page.paging(default_sort="-created_at")
    status = _status(page, JOB_STATUSES)
    jobs = await page.roost.jobs.list(page.actor, [status] if status else [], paging.request_page)
    return page.render(
        "jobs/list.html",
        jobs=jobs,
        paging=paging,
        chosen=status,
        statuses=JOB_STATUSES,
        missing=missing,
        progress={job["id"]: Progress(job["counts"]) for job in jobs.items},
    )


@router.get("/jobs/new")
async def job_form(page: PageDep) -> Response:
    """The form that creates a job (operators); ``?devices=a,b`` fills its device targets."""
    page.actor.require(Role.OPERATOR)
    raw = page.request.query_params.get("devices") or ""
    devices = [d.strip() for d in raw.split(",") if d.strip()]
    groups = await page.roost.inventory.list(
        page.actor, "group", PageRequest(limit=MAX_LIMIT, sort="name")
    )
    picked = set(page.request.query_params.getlist("group"))
    return page.render(
        "jobs/new.html", devices=devices, groups=groups, picked=picked, statuses=JOB_STATUSES
    )


@router.get("/jobs/{job_id}")
async def job_detail(page: PageDep, job_id: str) -> Response:
    """A job: its document, targets and settings, progress and executions; cancel."""
    job = await page.roost.jobs.get(page.actor, job_id)
    paging = page.paging(default_sort="device_id", size=EXECUTIONS_PAGE)
    status = _status(page, EXECUTION_STATUSES)
    executions = await page.roost.jobs.list_executions(
        page.actor, job_id, [status] if status else [], None, paging.request_page
    )
    context: dict[str, Any] = {
        "job": job,
        "progress": Progress(job["counts"]),
        "executions": executions,
        "paging": paging,
        "chosen": status,
        "statuses": EXECUTION_STATUSES,
        "colours": BAR_COLOURS,
        "running": job["status"] not in JOB_TERMINAL,
    }
    if page.request.headers.get(HTMX_HEADER):
        return page.render("jobs/_live.html", **context)
    return page.render("jobs/detail.html", **context)


@router.get("/devices/{device_id}/jobs")
async def device_jobs(page: PageDep, device_id: str) -> Response:
    """A device's executions of every job, newest first."""
    device = await page.roost.devices.get(page.actor, device_id)
    paging = page.paging(default_sort="-queued_at")
    status = _status(page, EXECUTION_STATUSES)
    executions = await page.roost.jobs.device_executions(
        page.actor, device_id, [status] if status else [], None, paging.request_page
    )
    return page.render(
        "jobs/device.html",
        device=device,
        tab="jobs",
        executions=executions,
        paging=paging,
        chosen=status,
        statuses=EXECUTION_STATUSES,
    )
