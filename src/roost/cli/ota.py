"""``roost artifact``, ``roost deploy`` and ``roost deployments``: software delivery from the
command line.

Like the other store-side commands they act on the store directly as the local administrator,
through the services the HTTP routes call (:mod:`roost.ota.artifacts.service`,
:mod:`roost.ota.deployments.service`): an upload streams the file into the same blob store (the
data directory's, or ``ROOST_BLOB_URL``'s) with the same size limit, hashing and signing, and a
deployment starts its first phase's job at once; a running ``roost serve`` on the same store
releases it to the devices and moves the phases on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from roost.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    JsonOption,
    TenantOption,
    err,
    every_page,
    group,
    new_table,
    open_roost,
    out,
    page_json,
    print_json,
    run,
    tenant_actor,
    when,
)
from roost.cli.main import app as main_app
from roost.store.queries import DEFAULT_LIMIT, MAX_LIMIT, Page, PageRequest

artifact_app = group("artifact", "Artifacts: upload files devices install, list and show them.")
deployments_app = group(
    "deployments", "Deployments: list them, show one's progress, cancel or resume one."
)
main_app.add_typer(artifact_app)
main_app.add_typer(deployments_app)

#: Bytes read from the file at a time: large enough for speed, small enough that memory is flat.
CHUNK_BYTES: Final = 1024 * 1024
#: A maintenance window as the command takes it: local ``HH:MM-HH:MM``.
WINDOW: Final = re.compile(r"(\d{1,2}:\d{2})-(\d{1,2}:\d{2})")
DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Statuses a deployment may have (``roost deployments list --status``).
STATUSES: Final = (
    "SCHEDULED",
    "IN_PROGRESS",
    "PAUSED",
    "HALTED",
    "SUCCEEDED",
    "FAILED",
    "CANCELED",
)

ArtifactType = Literal["firmware", "application", "deb", "file", "container"]
ArtifactIdArgument = Annotated[str, typer.Argument(metavar="ID", help="The artifact's id.")]
DeploymentIdArgument = Annotated[str, typer.Argument(metavar="ID", help="The deployment's id.")]


# -- artifacts ----------------------------------------------------------------------------------


async def _chunks(file: Path, progress: Progress, task: Any) -> AsyncIterator[bytes]:
    """The file's bytes a chunk at a time (read on a thread), advancing the progress bar."""
    with file.open("rb") as handle:
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            progress.update(task, advance=len(chunk))
            yield chunk


async def _nothing() -> AsyncIterator[bytes]:
    """An empty body (a container reference has no bytes)."""
    return
    yield b""  # pragma: no cover - makes this an async generator


@artifact_app.command(
    epilog="Examples:\n\n"
    "  roost artifact upload kiosk-2.1.swu --type firmware --name kiosk --version 2.1.0 "
    "--model display-55\n\n"
    "  roost artifact upload app.jar --type application --name alert-app --version 7 "
    "--sha256 <hex>\n\n"
    "  roost artifact upload --type container --name shop --version 3 "
    "--reference registry.example/shop@sha256:<hex>"
)
def upload(
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="FILE",
            help="The file to upload (none for --type container).",
            exists=True,
            dir_okay=False,
            readable=True,
            show_default=False,
        ),
    ] = None,
    artifact_type: Annotated[
        ArtifactType,
        typer.Option("--type", help="firmware, application, deb, file or container."),
    ] = "firmware",
    name: Annotated[
        str | None,
        typer.Option("--name", help="Its name (default: a package's own, else the id)."),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="Its version (required but for a Debian package)."),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option("--model", help="A device model it suits (repeat; none: any model)."),
    ] = None,
    artifact_id: Annotated[
        str | None, typer.Option("--id", help="Its id, a slug (default: generated).")
    ] = None,
    filename: Annotated[
        str | None, typer.Option("--filename", help="File name devices see (default: FILE's).")
    ] = None,
    notes: Annotated[str | None, typer.Option("--notes", help="Release notes.")] = None,
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", help="The SHA-256 you expect: refused (nothing stored) if not."),
    ] = None,
    signature: Annotated[
        str | None,
        typer.Option("--signature", help="Your own detached signature (base64), kept as given."),
    ] = None,
    reference: Annotated[
        str | None, typer.Option("--reference", help="--type container: the image reference.")
    ] = None,
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Upload an artifact: streamed to storage with a progress bar, hashed on the way in, its
    manifest signed with Roost's key unless --signature gives yours."""
    if file is None and artifact_type != "container":
        raise typer.BadParameter("give the FILE to upload", param_hint="FILE")
    meta = {
        "type": artifact_type,
        "id": artifact_id,
        "name": name,
        "version": version,
        "filename": filename or (_file_name(file) if file is not None else None),
        "model_ids": models or [],
        "release_notes": notes,
        "signature": signature,
        "reference": reference,
    }
    size = file.stat().st_size if file is not None else 0

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=not as_json,
            ) as progress:
                task = progress.add_task("uploading", total=size)
                body = _chunks(file, progress, task) if file is not None else _nothing()
                made: dict[str, Any] = await roost.artifacts.create(
                    actor, meta, body, expected_sha256=sha256, expected_size=size
                )
                return made

    made = run(work())
    if as_json:
        print_json(made)
        return
    signed = f"signed by {made['signature_by']}" if made["signature"] else "unsigned"
    out.print(
        f"uploaded artifact {escape(made['id'])}: {escape(made['name'])} "
        f"{escape(made['version'])} ({made['type']}, {made['size']} bytes, {signed})\n"
        f"sha256 {made['sha256']}"
    )


def _file_name(file: Path) -> str:
    """The file's name as the API takes it (other characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._+~-]", "_", file.name).lstrip("._+~-") or "artifact"


@artifact_app.command(
    "list",
    epilog="Examples:\n\n  roost artifact list\n\n  roost artifact list --type deb --json",
)
def artifact_list(
    artifact_type: Annotated[
        ArtifactType | None, typer.Option("--type", help="Only artifacts of this type.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Only artifacts that suit this device model.")
    ] = None,
    q: Annotated[str | None, typer.Option("--q", help="Text in id, name, version or file.")] = None,
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List a tenant's artifacts, newest first: type, version, size, SHA-256, who signed."""

    async def work() -> list[dict[str, Any]]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await every_page(
                lambda page: roost.artifacts.list(
                    actor, page, type=artifact_type, model_id=model, q=q
                )
            )

    items = run(work())
    if as_json:
        print_json(items)
        return
    table = new_table("id", "name", "version", "type", "size", "sha256", "signed by", "models")
    for item in items:
        table.add_row(
            escape(item["id"]),
            escape(item["name"]),
            escape(item["version"]),
            item["type"],
            str(item["size"]),
            item["sha256"],
            item["signature_by"] if item["signature"] else "unsigned",
            escape(", ".join(item["model_ids"]) or "any"),
        )
    out.print(table)


@artifact_app.command(epilog="Example:\n\n  roost artifact show kiosk-2.1")
def show(
    artifact_id: ArtifactIdArgument,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Print an artifact as JSON, with its signed manifest and its downloads per device."""

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            artifact: dict[str, Any] = await roost.artifacts.get(actor, artifact_id)
            downloads = await every_page(
                lambda page: roost.artifacts.downloads_of(actor, artifact_id, page)
            )
            return {
                **artifact,
                "manifest": roost.artifacts.manifest(artifact),
                "downloads": downloads,
            }

    print_json(run(work()))


# -- deployments --------------------------------------------------------------------------------


def _window(window: str | None, days: str | None) -> list[dict[str, Any]] | None:
    """``--window 02:00-05:00 --days sat,sun`` as the API's maintenance list."""
    if window is None:
        if days is not None:
            raise typer.BadParameter("--days needs --window", param_hint="--days")
        return None
    found = WINDOW.fullmatch(window.strip())
    if found is None:
        raise typer.BadParameter("give the window as HH:MM-HH:MM", param_hint="--window")
    entry: dict[str, Any] = {"start": found.group(1).zfill(5), "end": found.group(2).zfill(5)}
    if days:
        chosen = [d.strip().lower() for d in days.split(",") if d.strip()]
        wrong = [d for d in chosen if d not in DAYS]
        if wrong:
            raise typer.BadParameter(
                f"unknown day {wrong[0]!r}: use {', '.join(DAYS)}", param_hint="--days"
            )
        entry["days"] = chosen
    return [entry]


@main_app.command(
    epilog="Examples:\n\n"
    "  roost deploy kiosk-2.1 --group displays --canary-group pilot-stores --threshold 90 "
    "--window 02:00-05:00\n\n"
    "  roost deploy kiosk-2.1 shop-data --device kiosk-1 --device kiosk-2 --rate 10"
)
def deploy(
    artifacts: Annotated[
        list[str], typer.Argument(metavar="ARTIFACT...", help="The artifacts to install.")
    ],
    devices: Annotated[
        list[str] | None, typer.Option("--device", help="A target device (repeat).")
    ] = None,
    groups: Annotated[
        list[str] | None, typer.Option("--group", help="A target group (repeat).")
    ] = None,
    canary_group: Annotated[
        str | None,
        typer.Option("--canary-group", help="A group whose targets update first, as a canary."),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold", min=0, max=100, help="Canary: % of its finished devices to succeed."
        ),
    ] = 100,
    rate: Annotated[
        float | None,
        typer.Option("--rate", help="Devices released per minute (default: all at once)."),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option("--window", help="Maintenance window HH:MM-HH:MM in each site's time."),
    ] = None,
    days: Annotated[
        str | None, typer.Option("--days", help="The window's days: mon,tue,… (default: all).")
    ] = None,
    deployment_id: Annotated[
        str | None, typer.Option("--id", help="Its id, a slug (default: generated).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Its name (default: its id).")] = None,
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Deploy artifacts to devices and groups, a canary group first if given: the rest follow
    only when the canary's success reaches --threshold (else it halts: `roost deployments
    resume`). A running `roost serve` on the same store releases it to the devices."""
    if not devices and not groups:
        raise typer.BadParameter("give at least one --device or --group", param_hint="--device")
    body: dict[str, Any] = {
        "artifact_ids": artifacts,
        "targets": {"devices": devices or [], "groups": groups or []},
    }
    if deployment_id is not None:
        body["id"] = deployment_id
    if name is not None:
        body["name"] = name
    if canary_group is not None:
        body["phases"] = [
            {"name": "canary", "groups": [canary_group], "success_threshold_pct": threshold},
            {"name": "rest"},
        ]
    if rate is not None:
        body["rollout"] = {"max_per_minute": rate}
    maintenance = _window(window, days)
    if maintenance is not None:
        body["maintenance"] = maintenance

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            made: dict[str, Any] = await roost.deployments.create(actor, body)
            return made

    made = run(work())
    if as_json:
        print_json(made)
        return
    phases = ", then ".join(f"{p['name']} ({p['devices']})" for p in made["phases"])
    out.print(
        f"created deployment {escape(made['id'])}: {made['devices']} devices, "
        f"phases {escape(phases)}; {made['status']}"
    )


@deployments_app.command(
    "list",
    epilog="Examples:\n\n  roost deployments list\n\n  roost deployments list --status HALTED",
)
def deployments_list(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help=f"Only these statuses (repeat): {', '.join(STATUSES)}."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=MAX_LIMIT, help="Deployments per page.")
    ] = DEFAULT_LIMIT,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Deployments to skip.")] = 0,
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List deployments, newest first: status, current phase, artifacts."""

    async def work() -> Page[dict[str, Any]]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            found: Page[dict[str, Any]] = await roost.deployments.list(
                actor, [s.upper() for s in status or []], PageRequest(limit, offset)
            )
            return found

    page = run(work())
    if as_json:
        print_json(page_json(page))
        return
    table = new_table("id", "name", "status", "phase", "artifacts", "created", "by")
    for item in page.items:
        table.add_row(
            escape(item["id"]),
            escape(item["name"]),
            item["status"],
            str(item["current_phase"]),
            escape(", ".join(item["artifact_ids"])),
            when(item["created_at"]),
            escape(item["created_by"]),
        )
    out.print(table)
    shown = f"{offset + 1}-{offset + len(page.items)}" if page.items else "none"
    out.print(f"deployments {shown} of {page.total}")


def _print_overview(overview: Mapping[str, Any]) -> None:
    """A deployment's progress as a few lines: status, steps, phases, sites, failures."""
    reason = f" ({overview['reason']})" if overview.get("reason") else ""
    out.print(f"deployment {escape(overview['id'])}: {overview['status']}{escape(reason)}")
    counted = ", ".join(f"{step} {n}" for step, n in overview["steps"].items() if n)
    out.print(f"  {overview['devices']} devices: {counted or 'none reached yet'}")
    for phase in overview["phases"]:
        pct = "—" if phase["success_pct"] is None else f"{phase['success_pct']:g}%"
        out.print(
            f"  phase {phase['index']} {escape(phase['name'])}: {phase['devices']} devices, "
            f"success {pct} (threshold {phase['success_threshold_pct']:g}%)"
        )
    for site in overview["sites"]:
        done = ", ".join(f"{step} {n}" for step, n in site["steps"].items() if n)
        out.print(f"  site {escape(site['site_id'] or '(none)')}: {done}")
    for failure in overview["failures"]:
        error = (failure.get("details") or {}).get("error", "")
        out.print(
            f"  failed: {escape(failure['device_id'])} {failure['step']} {escape(str(error))}",
            style="red",
        )


@deployments_app.command("show", epilog="Example:\n\n  roost deployments show dep-kiosk-2.1")
def deployments_show(
    deployment_id: DeploymentIdArgument,
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Show a deployment's progress: devices per step, per phase and per site, failures."""

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            found: dict[str, Any] = await roost.deployments.get(actor, deployment_id)
            return found

    overview = run(work())
    if as_json:
        print_json(overview)
        return
    _print_overview(overview)


@deployments_app.command(
    epilog='Example:\n\n  roost deployments cancel dep-kiosk-2.1 --reason "wrong build"'
)
def cancel(
    deployment_id: DeploymentIdArgument,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept with it).")] = None,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Cancel a deployment: its queued devices are cancelled, installing ones told to stop."""

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            found: dict[str, Any] = await roost.deployments.cancel(
                actor, deployment_id, reason=reason
            )
            return found

    _print_overview(run(work()))


@deployments_app.command(epilog="Example:\n\n  roost deployments resume dep-kiosk-2.1")
def resume(
    deployment_id: DeploymentIdArgument,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Go on with a HALTED deployment: its next phase starts although the last one fell short."""

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            found: dict[str, Any] = await roost.deployments.resume(actor, deployment_id)
            return found

    _print_overview(run(work()))
