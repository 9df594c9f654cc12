"""HTTP routes: jobs over many devices (AWS IoT Jobs model), user side and device side.

User side (``Authorization: Bearer`` of a user; operators create and cancel, viewers read):
``/jobs``, ``/jobs/{id}``, ``/jobs/{id}/cancel``, ``/jobs/{id}/executions[/{device_id}]``,
``/devices/{id}/jobs``. Device side (device token): ``/device/jobs`` (the pending list, with an
optional long-poll ``?wait=``), ``/device/jobs/start-next``, ``/device/jobs/{job_id}`` and
``/device/jobs/{job_id}/update``; they take and give what the MQTT topics do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Body, Depends, Query
from pydantic import Field

from roost.core.ids import SLUG_PATTERN
from roost.credentials.dependencies import DeviceDep
from roost.http import schemas as s
from roost.http.deps import ActorDep, PageDep, get_roost
from roost.http.params import sortable
from roost.jobs.service import EXECUTION_SORTS, JOB_SORTS, JobService
from roost.store.queries import Page


class Services(Protocol):
    """What the job routes use of the running Roost."""

    @property
    def jobs(self) -> JobService: ...


RoostDep = Annotated[Services, Depends(get_roost)]


router = APIRouter(tags=["jobs"])


# The longest an HTTP device may long-poll for a job (proxies commonly cut idle requests at 60 s).
MAX_WAIT_S = 55

ERRORS = s.problem_responses(403, 404, 409, 413, 422)
ExecutionStatusName = Literal[
    "QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED"
]
STATUS_DOC = (
    "Only executions with this status; repeat for several "
    "(QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, TIMED_OUT, REJECTED, REMOVED, CANCELED)"
)
PENDING_DOC = (
    "true: only executions not yet completed (QUEUED or IN_PROGRESS); "
    "false: only completed ones (any final status)"
)


# -- bodies ------------------------------------------------------------------------------------


class TargetsIn(s.Body):
    """Which devices a job runs on: the union of the devices, the groups' members and the query."""

    devices: list[str] = Field(default_factory=list, description="Device ids")
    groups: list[str] = Field(default_factory=list, description="Group ids (static or dynamic)")
    query: dict[str, Any] | None = Field(
        None,
        description="Devices matching every part: site_id, model_id, firmware_id, customer_id, "
        "tags {key: value}, tag 'key:value' | 'key' (or a list)",
    )


class ExponentialIn(s.Body):
    """An exponential rollout: start at the base rate, multiply it after each step."""

    base_rate_per_minute: float
    increment_factor: float = Field(description="1.1 to 5")
    rate_increase_criteria: dict[str, int] = Field(
        description="Exactly one of number_of_notified_things or number_of_succeeded_things"
    )


class RolloutIn(s.Body):
    """How fast executions are released to devices (none: all at once)."""

    max_per_minute: float | None = Field(None, description="1 to 1000 releases per minute")
    exponential: ExponentialIn | None = None


class AbortIn(s.Body):
    """Cancel the job when too many of its executed executions failed."""

    failure_type: Literal["FAILED", "REJECTED", "TIMED_OUT", "ALL"]
    action: Literal["CANCEL"] = "CANCEL"
    min_executed: int = Field(description="Executions that ended before the rule applies")
    threshold_pct: float = Field(description="Percentage of the executed that failed, 0-100")


class RetryIn(s.Body):
    """Retry executions that ended in a failure type."""

    failure_type: Literal["FAILED", "TIMED_OUT", "ALL"]
    max_attempts: int = Field(
        description="How many times an execution is retried after such an outcome (0-10); "
        "it runs at most 1 + max_attempts times"
    )


class WindowIn(s.Body):
    """A maintenance window in each device's local time (its site's time zone; UTC without)."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] | None = Field(
        None, description="Days the window starts on; every day when absent"
    )
    start: str = Field(description='Local time "HH:MM"')
    end: str = Field(description='Local time "HH:MM" (exclusive); not after start: past midnight')


class JobIn(s.Body):
    """A new job."""

    id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="A slug; generated when absent",
        json_schema_extra=s.documented(pattern=SLUG_PATTERN),
    )
    description: str | None = None
    document: dict[str, Any] = Field(description="The job document (a JSON object, ≤ 32 KiB)")
    targets: TargetsIn
    target_selection: Literal["SNAPSHOT", "CONTINUOUS"] = "SNAPSHOT"
    rollout: RolloutIn | None = None
    abort: list[AbortIn] | None = None
    timeout_in_progress_s: int | None = Field(
        None, description="An execution IN_PROGRESS longer than this becomes TIMED_OUT"
    )
    retries: list[RetryIn] | None = None
    schedule_at: s.Rfc3339Time | None = Field(None, description="Nothing is released before")
    end_at: s.Rfc3339Time | None = Field(
        None, description="Nothing is released after; never-released executions are CANCELED"
    )
    maintenance: list[WindowIn] | None = Field(
        None, description="Release an execution only while its device is inside a window"
    )


class CancelIn(s.Body):
    """How to cancel a job."""

    force: bool = Field(False, description="Also cancel IN_PROGRESS executions")
    reason: str | None = Field(None, max_length=500)


class ExecutionUpdateIn(s.Body):
    """A device's update of its execution."""

    status: str = Field(description="IN_PROGRESS, SUCCEEDED, FAILED or REJECTED")
    status_details: dict[str, Any] | None = None
    expected_version: int | None = Field(None, description="Refused (409) unless current")
    step_timeout_s: int | None = Field(
        None, description="TIMED_OUT unless updated again within this time"
    )
    client_token: str | None = None


class StartNextIn(s.Body):
    """Options of start-next."""

    status_details: dict[str, Any] | None = None
    step_timeout_s: int | None = None
    client_token: str | None = None


# -- answers -----------------------------------------------------------------------------------


class JobOut(s.Out):
    """A job, with its executions counted per status."""

    id: str
    description: str
    document: dict[str, Any]
    targets: dict[str, Any]
    target_selection: str
    status: str = Field(description="SCHEDULED, IN_PROGRESS, COMPLETED or CANCELED")
    reason: str | None = Field(description="Why the job was cancelled (user or abort rule)")
    rollout: dict[str, Any] | None
    abort: list[dict[str, Any]] | None
    retries: list[dict[str, Any]] | None
    timeout_in_progress_s: int | None
    schedule_at: datetime | None
    end_at: datetime | None
    maintenance: list[dict[str, Any]] | None
    released_count: int = Field(description="Releases made so far (a retry is released again)")
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    counts: dict[str, int]


class ExecutionOut(s.Out):
    """One device's execution of a job."""

    job_id: str
    device_id: str
    status: str
    status_details: dict[str, Any] | None
    version: int
    attempt: int
    queued_at: datetime
    released_at: datetime | None = Field(description="When it was notified to the device")
    started_at: datetime | None
    updated_at: datetime
    completed_at: datetime | None
    timeout_at: datetime | None


class PendingOut(s.Out):
    """A device's pending executions (IN_PROGRESS first, then released QUEUED)."""

    jobs: list[dict[str, Any]]


# -- user side ---------------------------------------------------------------------------------


@router.post(
    "/jobs",
    response_model=JobOut,
    status_code=201,
    operation_id="create_job",
    summary="Create a job over devices, groups or a device query",
    responses=ERRORS,
    description="Unknown target devices or groups answer 422, each listed in `errors`.",
)
async def create_job(roost: RoostDep, actor: ActorDep, body: JobIn) -> dict[str, Any]:
    return await roost.jobs.create(actor, body.model_dump(exclude_none=True))


@router.get(
    "/jobs",
    response_model=s.Page[JobOut],
    operation_id="list_jobs",
    openapi_extra=sortable(JOB_SORTS),
    summary="List jobs, newest first (filter by status)",
)
async def list_jobs(
    roost: RoostDep,
    actor: ActorDep,
    page: PageDep,
    status: Annotated[
        list[Literal["SCHEDULED", "IN_PROGRESS", "COMPLETED", "CANCELED"]] | None,
        Query(description="Only jobs with this status; repeat for several"),
    ] = None,
) -> Page[dict[str, Any]]:
    return await roost.jobs.list(actor, status or [], page)


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    operation_id="get_job",
    summary="Get a job with its execution counts per status",
    responses=ERRORS,
)
async def get_job(roost: RoostDep, actor: ActorDep, job_id: str) -> dict[str, Any]:
    return await roost.jobs.get(actor, job_id)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    operation_id="cancel_job",
    summary="Cancel a job (QUEUED executions; with force also IN_PROGRESS ones)",
    responses=ERRORS,
)
async def cancel_job(
    roost: RoostDep,
    actor: ActorDep,
    job_id: str,
    body: Annotated[CancelIn | None, Body()] = None,
) -> dict[str, Any]:
    options = body or CancelIn()
    return await roost.jobs.cancel(actor, job_id, force=options.force, reason=options.reason)


@router.get(
    "/jobs/{job_id}/executions",
    response_model=s.Page[ExecutionOut],
    operation_id="list_job_executions",
    openapi_extra=sortable(EXECUTION_SORTS),
    summary="List a job's executions (filter by status, or pending=true for not yet completed)",
    responses=ERRORS,
)
async def list_job_executions(
    roost: RoostDep,
    actor: ActorDep,
    job_id: str,
    page: PageDep,
    status: Annotated[list[ExecutionStatusName] | None, Query(description=STATUS_DOC)] = None,
    pending: Annotated[bool | None, Query(description=PENDING_DOC)] = None,
) -> Page[dict[str, Any]]:
    return await roost.jobs.list_executions(actor, job_id, status or [], pending, page)


@router.get(
    "/jobs/{job_id}/executions/{device_id}",
    response_model=ExecutionOut,
    operation_id="get_job_execution",
    summary="Get one device's execution of a job",
    responses=ERRORS,
)
async def get_job_execution(
    roost: RoostDep, actor: ActorDep, job_id: str, device_id: str
) -> dict[str, Any]:
    return await roost.jobs.get_execution(actor, job_id, device_id)


@router.get(
    "/devices/{device_id}/jobs",
    response_model=s.Page[ExecutionOut],
    operation_id="list_device_job_executions",
    openapi_extra=sortable(EXECUTION_SORTS),
    summary="List a device's job executions (filter by status, or pending=true)",
    responses=ERRORS,
)
async def list_device_job_executions(
    roost: RoostDep,
    actor: ActorDep,
    device_id: str,
    page: PageDep,
    status: Annotated[list[ExecutionStatusName] | None, Query(description=STATUS_DOC)] = None,
    pending: Annotated[bool | None, Query(description=PENDING_DOC)] = None,
) -> Page[dict[str, Any]]:
    return await roost.jobs.device_executions(actor, device_id, status or [], pending, page)


# -- device side -------------------------------------------------------------------------------


@router.get(
    "/device/jobs",
    response_model=PendingOut,
    tags=["jobs (devices)"],
    operation_id="device_pending_jobs",
    summary="The calling device's pending executions (long-poll with wait=seconds)",
)
async def device_pending_jobs(
    roost: RoostDep,
    device: DeviceDep,
    wait: Annotated[
        float, Query(ge=0, le=MAX_WAIT_S, description="Wait up to this long for a job")
    ] = 0,
) -> dict[str, Any]:
    return await roost.jobs.wait_pending(device, wait)


@router.post(
    "/device/jobs/start-next",
    tags=["jobs (devices)"],
    operation_id="device_start_next_job",
    summary="Start the calling device's next execution; {execution: null} when none waits",
    responses=ERRORS,
)
async def device_start_next_job(
    roost: RoostDep, device: DeviceDep, body: Annotated[StartNextIn | None, Body()] = None
) -> dict[str, Any]:
    raw = body.model_dump(exclude_none=True) if body is not None else None
    return await roost.jobs.start_next(device, raw)


@router.get(
    "/device/jobs/{job_id}",
    tags=["jobs (devices)"],
    operation_id="device_describe_job",
    summary="One of the calling device's released executions, with the job document",
    responses=ERRORS,
)
async def device_describe_job(roost: RoostDep, device: DeviceDep, job_id: str) -> dict[str, Any]:
    return await roost.jobs.describe(device, job_id)


@router.post(
    "/device/jobs/{job_id}/update",
    tags=["jobs (devices)"],
    operation_id="device_update_job",
    summary="Update the calling device's execution of a job (409 illegal move or stale version)",
    responses=ERRORS,
)
async def device_update_job(
    roost: RoostDep, device: DeviceDep, job_id: str, body: ExecutionUpdateIn
) -> dict[str, Any]:
    return await roost.jobs.update(device, job_id, body.model_dump(exclude_none=True))
