"""hawkBit DDI seen through Roost: a deployment's action for a device is a hawkBit action.

:class:`Controller` answers one DDI controller (an authenticated device) from the deployment and
artifact services, and turns its feedback into the deployments' device-side updates:

* ``GET …/{controller}``: the polling interval (``settings.ddi_polling_s`` as ``HH:MM:SS``) and
  what to do next: ``cancelAction`` for an action canceled after it was released to the device
  and not yet acknowledged, else ``deploymentBase`` for the oldest open action, and
  ``configData`` while Roost holds no attributes of the device;
* ``deploymentBase/{action}``: one chunk per artifact of the deployment (part ``os`` for
  firmware, ``bApp`` for an application, else the artifact's type), with sha1/md5/sha256 and
  links to ``softwaremodules/{module}/artifacts/{filename}`` (the artifact's integer
  ``module_id``);
* feedback → :func:`execution_update` (the mapping is documented there);
* ``configData`` → the device's reported state named ``ddi`` (:data:`CONFIG_STATE`): merge,
  replace (attributes not given are removed) or remove, so operators see the attributes with
  the device's other states.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response
from fastapi.responses import PlainTextResponse

from roost.core.device_identity import DeviceIdentity
from roost.errors import Conflict, NotFound
from roost.ota.ddi.ports import ActionPort, ArtifactPort, StatePort
from roost.ota.ddi.schemas import MAX_DETAIL, ConfigDataIn, FeedbackIn

# The named state holding the attributes a DDI client sends with configData.
CONFIG_STATE = "ddi"
# Step details keep this many of the client's latest messages (the jobs bound details at 8 KiB).
KEPT_MESSAGES = 8
# An error text kept in the step details at most this long.
MAX_ERROR = 2048
# hawkBit's "part" of a software module, by Roost artifact type.
PARTS = {"firmware": "os", "application": "bApp"}
# Steps of an action (ota_actions.step) a client's ``proceeding`` moves along.
QUEUED, DOWNLOADING, INSTALLING, REBOOTING = "QUEUED", "DOWNLOADING", "INSTALLING", "REBOOTING"
WORKING_STEPS = (DOWNLOADING, INSTALLING, REBOOTING)
# Cancel feedback that ends the cancellation (hawkBit closes the action on each).
CANCEL_ANSWERS = ("closed", "canceled", "rejected")


def polling_sleep(seconds: int) -> str:
    """``HH:MM:SS`` as hawkBit writes ``config.polling.sleep``."""
    seconds = max(int(seconds), 1)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _messages(details: Sequence[str], earlier: Sequence[str] = ()) -> list[str]:
    kept = [*earlier, *(d[:MAX_DETAIL] for d in details if d.strip())]
    return kept[-KEPT_MESSAGES:]


@dataclass(frozen=True, slots=True)
class Report:
    """A device's report on an action, as the deployments take it."""

    status: str
    step: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    version: str | None = None
    progress: float | None = None


def execution_update(
    feedback: FeedbackIn, action: Mapping[str, Any], version: str
) -> Report | None:
    """The report a deployment feedback means, or None when it changes nothing.

    ==========================  =================================================================
    execution, finished         report (status, step)
    ==========================  =================================================================
    download                    IN_PROGRESS, DOWNLOADING
    downloaded                  IN_PROGRESS, INSTALLING
    proceeding, resumed         IN_PROGRESS: DOWNLOADING at first; INSTALLING once working;
                                REBOOTING when ``progress.cnt`` reached ``of`` (every chunk
                                installed, the result waits for the restart)
    closed + success / none     SUCCEEDED with ``version`` (the chunk's version)
    closed + failure            FAILED, step FAILED, the details as the error
    rejected, canceled          REJECTED (the client refused or dropped it), the details as error
    scheduled                   nothing (the client will start later)
    ==========================  =================================================================

    The client's messages (``details``) are kept in the action's step details (the latest
    :data:`KEPT_MESSAGES`), so the deployment overview shows what the client said.
    """
    status = feedback.status
    earlier = (action.get("step_details") or {}).get("messages") or []
    messages = {"messages": _messages(status.details, earlier)}
    execution, finished = status.execution, status.result.finished
    if execution == "scheduled":
        return None
    if execution == "closed" and finished != "failure":
        return Report("SUCCEEDED", details=messages, version=version)
    error = "; ".join(d[:MAX_DETAIL] for d in status.details) or f"{execution} by the client"
    if execution == "closed":
        return Report("FAILED", "FAILED", {**messages, "error": error[:MAX_ERROR]})
    if execution in ("rejected", "canceled"):
        text = f"{execution} by the client: {error}"[:MAX_ERROR]
        return Report("REJECTED", details={**messages, "error": text})
    step = _working_step(execution, feedback, str(action.get("step") or QUEUED))
    progress = status.result.progress
    percent = None
    if progress is not None and progress.of:
        percent = float(min(100, round(100 * progress.cnt / progress.of)))
    return Report("IN_PROGRESS", step, messages, progress=percent)


def _working_step(execution: str, feedback: FeedbackIn, current: str) -> str:
    if execution == "download":
        return DOWNLOADING
    if execution == "downloaded":
        return INSTALLING
    progress = feedback.status.result.progress
    if progress is not None and progress.of and progress.cnt >= progress.of:
        return REBOOTING
    if current in WORKING_STEPS:
        return INSTALLING if current == DOWNLOADING else current
    return DOWNLOADING


@dataclass
class Controller:
    """One DDI controller: an authenticated device of the tenant the path names."""

    identity: DeviceIdentity
    actions: ActionPort
    artifacts: ArtifactPort
    states: StatePort
    polling_s: int
    base_url: str  # ``http(s)://host[:port]`` as the client reached us

    @property
    def root(self) -> str:
        """The controller's own URL."""
        return f"{self.base_url}/{self.identity.tenant_id}/controller/v1/{self.identity.device_id}"

    # -- polling ---------------------------------------------------------------------------------

    async def base(self) -> dict[str, Any]:
        """The base resource: polling interval and links to what the controller should do."""
        links: dict[str, dict[str, str]] = {}
        open_actions = await self.actions.device_actions(self.identity)
        cancel = next((a for a in open_actions if a.get("cancel_requested")), None)
        if cancel is not None:
            links["cancelAction"] = {"href": f"{self.root}/cancelAction/{cancel['action_id']}"}
        elif open_actions:
            action = open_actions[0]
            links["deploymentBase"] = {
                "href": f"{self.root}/deploymentBase/{action['action_id']}?c={_change_tag(action)}"
            }
        if not await self._has_config_data():
            links["configData"] = {"href": f"{self.root}/configData"}
        return {"config": {"polling": {"sleep": polling_sleep(self.polling_s)}}, "_links": links}

    async def _has_config_data(self) -> bool:
        try:
            state = await self.states.device_get(self.identity, CONFIG_STATE)
        except NotFound:
            return False
        return bool(state.get("reported"))

    # -- deployments -----------------------------------------------------------------------------

    async def deployment_base(self, action_id: int, history: int | None) -> dict[str, Any]:
        """The action as hawkBit's deploymentBase: chunks, artifacts and their links."""
        action = await self.actions.action_for_device(self.identity, action_id)
        rows = await self.artifacts.for_device(self.identity, _artifact_ids(action))
        chunks = [
            {
                "part": PARTS.get(str(row["type"]), str(row["type"])),
                "version": str(row["version"]),
                "name": str(row["name"] or row["id"]),
                "artifacts": [self._artifact(row)],
            }
            for row in rows
        ]
        deployment: dict[str, Any] = {"download": "forced", "update": "forced", "chunks": chunks}
        if action.get("maintenance"):
            # Jobs release an execution only inside its device's window: a released one is in.
            deployment["maintenanceWindow"] = "available"
        answer: dict[str, Any] = {"id": str(action["action_id"]), "deployment": deployment}
        if history is not None:
            messages = (action.get("step_details") or {}).get("messages") or []
            answer["actionHistory"] = {
                "status": str(action.get("step") or QUEUED),
                "messages": list(messages)[-history:] if history > 0 else list(messages),
            }
        return answer

    def _artifact(self, row: Mapping[str, Any]) -> dict[str, Any]:
        url = f"{self.root}/softwaremodules/{row['module_id']}/artifacts/{row['filename']}"
        return {
            "filename": row["filename"],
            "hashes": {"sha1": row["sha1"], "md5": row["md5"], "sha256": row["sha256"]},
            "size": row["size"],
            "_links": {
                "download": {"href": url},
                "download-http": {"href": url},
                "md5sum": {"href": f"{url}.MD5SUM"},
                "md5sum-http": {"href": f"{url}.MD5SUM"},
            },
        }

    async def feedback(self, action_id: int, body: FeedbackIn) -> None:
        """Apply a client's feedback on an action (404 for an action not this device's)."""
        action = await self.actions.action_for_device(self.identity, action_id)
        version = await self._version_of(action)
        report = execution_update(body, action, version)
        if report is not None:
            await self.actions.report(
                self.identity,
                action_id,
                report.status,
                step=report.step,
                details=report.details,
                version=report.version,
                progress=report.progress,
            )

    async def _version_of(self, action: Mapping[str, Any]) -> str:
        rows = await self.artifacts.for_device(self.identity, _artifact_ids(action))
        # The deployment's version is its first artifact's (the chunk the client installs).
        return str(rows[0]["version"]) if rows else ""

    # -- cancellation ----------------------------------------------------------------------------

    async def cancel_action(self, action_id: int) -> dict[str, Any]:
        """A cancellation: hawkBit names it by its own id; Roost's is the action's (stopId)."""
        action = await self.actions.action_for_device(self.identity, action_id)
        if not action.get("cancel_requested") and action.get("execution_status") != "CANCELED":
            raise Conflict(f"action {action_id} is not canceled: there is no cancellation")
        return {"id": str(action_id), "cancelAction": {"stopId": str(action_id)}}

    async def cancel_feedback(self, action_id: int, body: FeedbackIn) -> None:
        """The client's answer to a cancellation. A final one (closed, canceled, rejected)
        acknowledges it: the execution is canceled in Roost whatever the client says, and the
        action leaves the base resource; ``proceeding`` and the like change nothing."""
        await self.cancel_action(action_id)
        if body.status.execution in CANCEL_ANSWERS:
            await self.actions.report(self.identity, action_id, "CANCELED")

    # -- attributes ------------------------------------------------------------------------------

    async def config_data(self, body: ConfigDataIn) -> None:
        """Keep the attributes as the ``ddi`` reported state (merge, replace or remove)."""
        fields: dict[str, Any] = {}
        if body.mode in ("replace", "remove"):
            try:
                current = await self.states.device_get(self.identity, CONFIG_STATE)
            except NotFound:
                current = {}
            reported = current.get("reported") or {}
            if body.mode == "replace":
                fields = {key: None for key in reported if key not in body.data}
            else:
                fields = {key: None for key in body.data if key in reported}
        if body.mode != "remove":
            fields.update(body.data)
        if fields:
            await self.states.report(self.identity, fields, CONFIG_STATE)

    # -- artifacts -------------------------------------------------------------------------------

    async def module_artifacts(self, module_id: int) -> list[dict[str, Any]]:
        """The artifacts of a software module (Roost: the one artifact of that module id)."""
        row = await self.artifacts.by_module(self.identity, module_id)
        return [self._artifact(row)]

    async def download(self, request: Request, module_id: int, filename: str) -> Response:
        """The artifact's bytes (Range, ETag, HEAD by the artifact service), or ``.MD5SUM``."""
        row = await self.artifacts.by_module(self.identity, module_id)
        if filename == row["filename"]:
            return await self.artifacts.stream(
                request, self.identity.tenant_id, str(row["id"]), self.identity.device_id
            )
        if filename == f"{row['filename']}.MD5SUM":
            return PlainTextResponse(f"{row['md5']}  {row['filename']}\n")
        raise NotFound(f"software module {module_id} has no artifact {filename!r}")


def _artifact_ids(action: Mapping[str, Any]) -> list[str]:
    return [str(a["id"]) for a in action.get("artifacts") or ()]


def _change_tag(action: Mapping[str, Any]) -> str:
    """hawkBit's ``?c=`` on deploymentBase: changes when the action does, so clients look again."""
    text = f"{action['action_id']}:{action.get('deployment_id')}:{_artifact_ids(action)}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]
