"""OTA: the handler of Roost's deployment jobs (operation ``ota.install``), step by step.

A deployment's job document is ``{"operation": "ota.install", "deployment_id", "phase",
"artifacts": [{id, sha256, size, type, version, name, signature, signing_key_id, url, …}]}``.
For each artifact the agent:

1. reads its signed manifest and URLs (``GET /api/v1/ota/artifacts/{id}``) and checks the
   Ed25519 signature over the manifest ``{id, sha256, size, type, version}`` with Roost's key —
   fetched once from ``GET /api/v1/ota/signing-key`` and pinned in ``data_dir/ota/signing-key.json``
   — or a key of ``[ota] signing_keys`` (an operator's own signature, or Roost's new key: a key
   other than the pinned one is refused until configured);
2. downloads it (step ``DOWNLOADING``) into ``data_dir/ota/``: a partial file survives an agent
   restart and continues from its size with ``Range``; its SHA-256 must be the manifest's;
3. installs it (step ``INSTALLING``), by type: ``file`` is copied atomically to the path
   ``[ota.files] <name> = "/path"`` names (the old file kept for a rollback), else
   ``hooks_dir/ota/install-file`` (or ``install``); ``deb`` runs ``hooks_dir/ota/install-deb``,
   by default ``dpkg -i``; every other type (``firmware``, ``application``, ``container``) runs
   ``hooks_dir/ota/install-<type>`` or ``hooks_dir/ota/install``. A hook gets the artifact's
   path as its argument (none for a container reference), the manifest (with ``name``,
   ``previous_version``, ``job_id``) as JSON on stdin, and ``ROOST_OTA_*`` variables. **Exit 0:
   installed; exit 10: installed, the device must reboot to finish; anything else: failed.**

After a reboot request the agent reports ``REBOOTING``, runs ``hooks_dir/ota/reboot`` (or
``[ota] reboot_command``) if there is one — else the install hook reboots the device itself —
and waits. At its next start the dispatcher runs the job's handler again (the execution is still
IN_PROGRESS) and the state file ``data_dir/ota/state.json`` (job, step, previous versions,
artifact paths; rewritten atomically at every step) says where it was: the health check
``hooks_dir/ota/health`` runs (exit 0: healthy; no hook: healthy), and the job SUCCEEDS with the
new ``version`` — or ``hooks_dir/ota/rollback`` (and the restored ``[ota.files]`` file) undoes
it and the job FAILS with step ``ROLLED_BACK``. A failed install and a failed health check
without a reboot roll back the same way; an agent stopped in the middle of an install rolls
back when it starts again. A failure before anything was installed (the download, a SHA-256 or
signature mismatch: the hooks never run) FAILS with step ``FAILED`` and a reason naming it.

The rollback hook gets what the install hook got, plus ``reason``; exit 0 (or 10) is rolled
back. Hooks run with a timeout (``[ota] hook_timeout_s``, ``health_timeout_s``). Settings::

    [ota]
    signing_keys = []                 # extra trusted Ed25519 keys (PEM or base64 raw)
    max_download_bytes_s = 0          # pace downloads on a shared or metered link (0: no limit)
    reboot_command = ["systemctl", "reboot"]   # when hooks_dir/ota/reboot does not exist
    [ota.files]
    menu = "/etc/store/menu.json"     # a file artifact named "menu" is installed there

Success writes ``data_dir/ota/installed.json`` ({name: version}, what Roost records in
``GET /api/v1/devices/{id}/software``) and reports it as ``{"software": {name: version}}`` on
``state/reported``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from roost_agent.config import Config, ConfigError
from roost_agent.handlers import HandlerError
from roost_agent.ota_install import (
    EXIT_REBOOT,
    AgentStopping,
    HttpStatusError,
    OtaError,
    OtaSettings,
    ServerApi,
    TrustedKeys,
    download,
    forget_backup,
    install_file,
    manifest_of,
    now_text,
    read_json,
    restore_file,
    run_hook,
    sha256_of,
    write_json_atomically,
)

if TYPE_CHECKING:
    from roost_agent.agent import Agent

log = logging.getLogger(__name__)

#: The job document's operation for deployments (src/roost/ota/deployments/phases.py).
OPERATION = "ota.install"
#: Steps reported while working (IN_PROGRESS ``status_details.step``) and on failure.
DOWNLOADING, INSTALLING, REBOOTING = "DOWNLOADING", "INSTALLING", "REBOOTING"
FAILED, ROLLED_BACK = "FAILED", "ROLLED_BACK"
#: A step of the state file: the outcome is known and reported by the dispatcher.
DONE = "DONE"
#: A failure's text at most (UTF-8): it is sent twice (reason, error) in the server's 8 KiB
#: of status_details.
MAX_REASON_BYTES = 2500
#: DOWNLOADING progress is reported at these fractions: enough to watch, few messages.
PROGRESS_MARKS = (0.25, 0.5, 0.75)
#: Seconds between looks at whether the agent stops, while it waits for the reboot.
STOP_POLL_S = 0.5
#: Waits before trying a broken download again (it resumes where it broke): about a minute in
#: all, the order of a Wi-Fi reconnect; a longer outage fails the job, and its retries go on.
DOWNLOAD_RETRY_S = (2.0, 4.0, 8.0, 16.0, 30.0)


class OtaHandler:
    """The ``ota.install`` job handler (see the module docstring); one update at a time."""

    def __init__(self, agent: Agent, settings: OtaSettings | None = None) -> None:
        self.agent = agent
        self.config: Config = agent.config
        self.settings = settings or OtaSettings.from_config(agent.config)
        self.dir = Path(self.config.data_dir) / "ota"
        self.state_path = self.dir / "state.json"
        self.installed_path = self.dir / "installed.json"
        self.api = ServerApi(self.config)
        try:
            self.keys = TrustedKeys(
                self.dir / "signing-key.json", self.settings.signing_keys, self.api
            )
        except ValueError as exc:
            raise ConfigError(f"[ota] signing_keys: {exc}") from exc
        hooks = self.config.hooks_dir
        self.hooks_dir = Path(hooks) / "ota" if hooks is not None else None
        self._lock = threading.Lock()
        self._reported = False

    # -- the job handler -----------------------------------------------------------------------

    def __call__(
        self, document: dict[str, Any], progress: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Install the deployment's artifacts; SUCCEEDED's status_details, or HandlerError
        with ``{"step": FAILED | ROLLED_BACK, "error"}``."""
        with self._lock:
            job_id = f"ota-{document.get('deployment_id')}-{document.get('phase')}"
            state = read_json(self.state_path)
            if isinstance(state, dict) and state.get("job_id") == job_id:
                resumed = self._resume(state, progress)
                if resumed is not None:
                    return resumed
            return self._install(job_id, document, progress)

    def _resume(
        self, state: dict[str, Any], progress: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any] | None:
        """Go on with the job the state file names after a restart; None to start afresh."""
        step = state.get("step")
        if step == DONE and isinstance(state.get("outcome"), dict):
            return dict(state["outcome"])  # reported once already: the same answer again
        if step == REBOOTING:
            log.info(
                "job %s: the device restarted after the update: checking health", state["job_id"]
            )
            return self._check_health_and_commit(state, progress, after_reboot=True)
        if step == INSTALLING:
            self._fail_and_roll_back(
                state, "the agent stopped while the update was being installed"
            )
        return None  # DOWNLOADING (resumes from the partial files), or a failed earlier try

    def _install(
        self, job_id: str, document: dict[str, Any], progress: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        artifacts = document.get("artifacts")
        if not isinstance(artifacts, list) or not artifacts:
            raise _failure(FAILED, "the job document lists no artifacts")
        installed = self.installed()
        state: dict[str, Any] = {
            "job_id": job_id,
            "deployment_id": document.get("deployment_id"),
            "step": DOWNLOADING,
            "artifacts": [],
            "installed": [],
            "reboot": False,
            "started_at": now_text(),
        }
        for sent in artifacts:
            if not isinstance(sent, dict) or not isinstance(sent.get("id"), str):
                raise _failure(FAILED, "the job document has an artifact without an id")
            name = str(sent.get("name") or sent["id"])
            state["artifacts"].append(
                {**manifest_of(sent), "name": name, "previous_version": installed.get(name)}
            )
        self._save(state)
        self._sweep({_download_name(a) for a in state["artifacts"]})
        progress({"step": DOWNLOADING})
        try:
            for i, sent in enumerate(artifacts):
                state["artifacts"][i]["path"] = self._fetch(sent, progress)
        except OtaError as exc:
            state.update(step=FAILED, failure=str(exc))
            self._save(state)
            raise _failure(FAILED, str(exc)) from exc
        state["step"] = INSTALLING
        self._save(state)
        progress({"step": INSTALLING})
        for artifact in state["artifacts"]:
            # Listed before its install runs: a failed or interrupted one is undone too.
            state["installed"].append(artifact["id"])
            self._save(state)
            try:
                status = self._run_install(state, artifact)
            except OtaError as exc:
                self._fail_and_roll_back(state, str(exc))
            state["reboot"] = state["reboot"] or status == EXIT_REBOOT
            self._save(state)
        if state["reboot"]:
            return self._reboot(state, progress)
        return self._check_health_and_commit(state, progress, after_reboot=False)

    # -- steps ---------------------------------------------------------------------------------

    def _fetch(self, sent: dict[str, Any], progress: Callable[[dict[str, Any]], None]) -> str:
        """The verified local file of an artifact (empty for a container reference)."""
        artifact_id = sent["id"]
        view = self.api.get_json(f"/api/v1/ota/artifacts/{artifact_id}")
        if not isinstance(view, dict):
            raise OtaError(f"GET /api/v1/ota/artifacts/{artifact_id}: not an artifact")
        if manifest_of(view) != manifest_of(sent):
            raise OtaError(
                f"artifact {artifact_id!r}: the manifest the server serves differs from the "
                "job's: refused"
            )
        key_id = self.keys.check(view)
        log.info("artifact %s: signature verified with key %s", artifact_id, key_id)
        if view.get("type") == "container":
            return ""
        size = int(view["size"])
        dest = self.dir / _download_name(view)
        marks = [int(size * f) for f in PROGRESS_MARKS]

        def on_bytes(received: int) -> None:
            while marks and received >= marks[0]:
                marks.pop(0)
                share = round(received / size, 2)
                progress({"step": DOWNLOADING, "artifact": artifact_id, "progress": share})

        for attempt in (1, 2):
            start = self._download(str(view["url"]), dest, size, on_bytes)
            digest = sha256_of(dest)
            if digest == view["sha256"]:
                return str(dest)
            dest.unlink()
            if start == 0 or attempt == 2:
                raise OtaError(
                    f"artifact {artifact_id!r}: the SHA-256 of the download is {digest}, not "
                    f"the signed manifest's {view['sha256']}: refused, not installed"
                )
            log.warning(
                "artifact %s: a resumed download does not verify: once more from the start",
                artifact_id,
            )
        raise AssertionError("unreachable")

    def _download(self, url: str, dest: Path, size: int, on_bytes: Callable[[int], None]) -> int:
        """:func:`download`, tried again (resuming) after a network failure: a flaky link
        costs time, not the update."""
        for delay in DOWNLOAD_RETRY_S:
            broke = self._download_once(url, dest, size, on_bytes)
            if isinstance(broke, int):
                return broke
            log.warning("%s; trying again in %g s", broke, delay)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if self.stopping():
                    raise AgentStopping("the agent stops: the download resumes at its start")
                time.sleep(STOP_POLL_S)
        last = self._download_once(url, dest, size, on_bytes)
        if isinstance(last, int):
            return last
        raise last

    def _download_once(
        self, url: str, dest: Path, size: int, on_bytes: Callable[[int], None]
    ) -> int | OtaError:
        """The byte the download resumed from, or the network failure that broke it
        (an HTTP error status is raised: trying again changes nothing)."""
        try:
            return download(
                self.api,
                url,
                dest,
                size,
                max_bytes_s=self.settings.max_download_bytes_s,
                stopping=self.stopping,
                on_bytes=on_bytes,
            )
        except HttpStatusError:
            raise
        except OtaError as exc:
            return exc

    def _run_install(self, state: dict[str, Any], artifact: dict[str, Any]) -> int:
        """Install one artifact; its hook's exit status (0, or EXIT_REBOOT). OtaError."""
        kind = str(artifact.get("type"))
        path = str(artifact.get("path") or "")
        target = self.settings.files.get(artifact["name"]) if kind == "file" else None
        if target is not None:
            install_file(Path(path), target, self._backup_of(artifact))
            log.info("installed %s %s at %s", artifact["name"], artifact["version"], target)
            return 0
        hook = self._hook(f"install-{kind}")
        if hook is None and kind != "deb":  # a package goes to dpkg unless install-deb says
            hook = self._hook("install")
        if hook is not None:
            argv = [str(hook)] + ([path] if path else [])
            label = f"the hook ota/{hook.name}"
        elif kind == "deb":
            argv, label = ["dpkg", "-i", path], "dpkg -i"
        else:
            where = self.hooks_dir or "[hooks] dir/ota"
            extra = f' or [ota.files] {artifact["name"]} = "/path"' if kind == "file" else ""
            raise OtaError(
                f"nothing installs a {kind} artifact: add {where}/install-{kind} or "
                f"{where}/install{extra}"
            )
        result = run_hook(
            argv,
            self._payload(state, artifact),
            self._env(state, artifact),
            self.settings.hook_timeout_s,
            label,
        )
        if result.status not in (0, EXIT_REBOOT):
            raise OtaError(result.reason(label))
        log.info(
            "installed %s %s with %s%s",
            artifact["name"],
            artifact["version"],
            label,
            " (a reboot is needed)" if result.status == EXIT_REBOOT else "",
        )
        return result.status

    def _reboot(
        self, state: dict[str, Any], progress: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Report REBOOTING, ask for the reboot, and wait for the agent to go down."""
        state["step"] = REBOOTING
        self._save(state)
        progress({"step": REBOOTING})
        hook = self._hook("reboot")
        argv = [str(hook)] if hook is not None else list(self.settings.reboot_command)
        if argv:
            self._confirm_step(state, REBOOTING)
            result = run_hook(
                argv,
                {"job_id": state["job_id"]},
                self._env(state, None),
                self.settings.hook_timeout_s,
                f"the reboot command {argv[0]}",
            )
            if result.status != 0:
                log.error("%s", result.reason("the reboot command"))
        else:
            log.warning(
                "job %s: the update asks for a reboot; waiting for the device to "
                "restart (no hooks_dir/ota/reboot, no [ota] reboot_command)",
                state["job_id"],
            )
        while not self.stopping():
            threading.Event().wait(STOP_POLL_S)
        raise AgentStopping("the agent stops for the reboot; the update resumes at its start")

    def _confirm_step(self, state: dict[str, Any], step: str) -> None:
        """Report ``step`` over HTTP and wait for the answer, so that it reaches the server
        before the device goes down (the MQTT progress update may still be in flight)."""
        path = f"/api/v1/device/jobs/{state['job_id']}/update"
        try:
            self.api.post_json(path, {"status": "IN_PROGRESS", "status_details": {"step": step}})
        except OtaError as exc:
            log.warning("could not confirm the step %s: %s", step, exc)

    def _check_health_and_commit(
        self,
        state: dict[str, Any],
        progress: Callable[[dict[str, Any]], None],
        *,
        after_reboot: bool,
    ) -> dict[str, Any]:
        hook = self._hook("health")
        if hook is not None:
            label = "the health check ota/health"
            try:
                result = run_hook(
                    [str(hook)],
                    self._payload(state, None),
                    self._env(state, None),
                    self.settings.health_timeout_s,
                    label,
                )
                if result.status != 0:
                    raise OtaError(result.reason(label))
            except OtaError as exc:
                when = "after the reboot" if after_reboot else "after the install"
                self._fail_and_roll_back(state, f"the new version is unhealthy {when}: {exc}")
        return self._commit(state)

    def _commit(self, state: dict[str, Any]) -> dict[str, Any]:
        installed = self.installed()
        for artifact in state["artifacts"]:
            installed[artifact["name"]] = str(artifact["version"])
            forget_backup(self._backup_of(artifact))
        write_json_atomically(self.installed_path, installed)
        first = state["artifacts"][0]
        outcome = {
            "version": str(first["version"]),
            "software": {a["name"]: str(a["version"]) for a in state["artifacts"]},
        }
        state.update(step=DONE, outcome=outcome)
        self._save(state)
        if not self.settings.keep_downloads:
            for artifact in state["artifacts"]:
                if artifact.get("path"):
                    Path(artifact["path"]).unlink(missing_ok=True)
        log.info("job %s: installed %s", state["job_id"], outcome["software"])
        self.report_software()
        return dict(outcome)

    def _fail_and_roll_back(self, state: dict[str, Any], reason: str) -> NoReturn:
        """Undo what the job installed, newest first, and raise its failure: ROLLED_BACK when
        something undid it, FAILED (with why not) otherwise."""
        log.warning("job %s: %s: rolling back", state["job_id"], reason)
        undone, problems = False, []
        hook = self._hook("rollback")
        by_id = {a["id"]: a for a in state["artifacts"]}
        for artifact_id in reversed(state.get("installed") or []):
            artifact = by_id[artifact_id]
            if artifact.get("type") == "file" and artifact["name"] in self.settings.files:
                target = self.settings.files[artifact["name"]]
                undone = restore_file(target, self._backup_of(artifact)) or undone
            if hook is not None:
                try:
                    result = run_hook(
                        [str(hook)] + ([artifact["path"]] if artifact.get("path") else []),
                        {**self._payload(state, artifact), "reason": reason},
                        self._env(state, artifact),
                        self.settings.hook_timeout_s,
                        "the rollback hook ota/rollback",
                    )
                except OtaError as exc:
                    problems.append(str(exc))
                    continue
                if result.status in (0, EXIT_REBOOT):
                    undone = True
                else:
                    problems.append(result.reason("the rollback hook ota/rollback"))
        if undone and not problems:
            step, text = ROLLED_BACK, f"{reason}; rolled back"
        elif problems:
            step, text = FAILED, f"{reason}; the rollback failed: {'; '.join(problems)}"
        elif state.get("installed"):
            step, text = FAILED, f"{reason}; nothing rolls it back (no hooks_dir/ota/rollback)"
        else:
            step, text = FAILED, reason
        state.update(step=FAILED, failure=text)
        self._save(state)
        raise _failure(step, text)

    # -- what the agent uses -------------------------------------------------------------------

    def installed(self) -> dict[str, str]:
        """What OTA installed on this device: {artifact name: version}."""
        found = read_json(self.installed_path)
        return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    def report_software(self) -> None:
        """Publish ``{"software": {name: version}}`` on ``state/reported`` (when any)."""
        installed = self.installed()
        if not installed:
            return
        link = self.agent.link
        link.publish(link.topic("state/reported"), json.dumps({"software": installed}).encode(), 1)
        self._reported = True

    def _on_connect(self) -> None:
        """Report the installed software once per run (a report lost while the agent was
        offline is made good; later reconnects do not rewrite the same state)."""
        if not self._reported:
            self.agent.submit(self.report_software)

    def stopping(self) -> bool:
        """Whether the agent is stopping (its stop event, or the interpreter going down)."""
        for name in ("stopping", "_stop"):
            event = getattr(self.agent, name, None)
            if isinstance(event, threading.Event):
                return event.is_set() or not threading.main_thread().is_alive()
        return not threading.main_thread().is_alive()

    # -- helpers -------------------------------------------------------------------------------

    def _hook(self, name: str) -> Path | None:
        if self.hooks_dir is None:
            return None
        path = self.hooks_dir / name
        if not path.is_file():
            return None
        if not os.access(path, os.X_OK):
            raise OtaError(f"the hook {path} is not executable (chmod +x {path})")
        return path

    def _sweep(self, keep: set[str]) -> None:
        """Delete downloads of earlier jobs (a failed one leaves its file for a retry)."""
        for path in self.dir.glob("*.bin"):
            if path.name not in keep:
                log.info("deleting %s, the download of an earlier update", path.name)
                path.unlink(missing_ok=True)

    def _backup_of(self, artifact: dict[str, Any]) -> Path:
        return self.dir / "backup" / str(artifact["name"])

    def _save(self, state: dict[str, Any]) -> None:
        state["updated_at"] = now_text()
        write_json_atomically(self.state_path, state)

    def _payload(self, state: dict[str, Any], artifact: dict[str, Any] | None) -> Any:
        if artifact is not None:
            return {
                **artifact,
                "job_id": state["job_id"],
                "deployment_id": state.get("deployment_id"),
            }
        return {
            "job_id": state["job_id"],
            "deployment_id": state.get("deployment_id"),
            "artifacts": state["artifacts"],
        }

    def _env(self, state: dict[str, Any], artifact: dict[str, Any] | None) -> dict[str, str]:
        env = {
            **os.environ,
            "ROOST_DEVICE_ID": self.config.device_id,
            "ROOST_API_URL": self.config.api_url,
            "ROOST_DATA_DIR": str(self.config.data_dir),
            "ROOST_OTA_JOB_ID": str(state["job_id"]),
            "ROOST_OTA_DEPLOYMENT_ID": str(state.get("deployment_id") or ""),
        }
        if artifact is not None:
            env.update(
                ROOST_OTA_ARTIFACT=str(artifact.get("path") or ""),
                ROOST_OTA_ARTIFACT_ID=str(artifact["id"]),
                ROOST_OTA_NAME=str(artifact["name"]),
                ROOST_OTA_TYPE=str(artifact.get("type")),
                ROOST_OTA_VERSION=str(artifact.get("version")),
                ROOST_OTA_PREVIOUS_VERSION=str(artifact.get("previous_version") or ""),
            )
        return env


def _download_name(artifact: dict[str, Any]) -> str:
    """The file an artifact downloads to: its id and the start of its SHA-256."""
    return f"{artifact['id']}-{str(artifact['sha256'])[:16]}.bin"


def _failure(step: str, reason: str) -> HandlerError:
    """A job failure for the dispatcher: ``reason`` (its ``reason``) and the deployment step.
    The text is cut so that both copies stay well inside the server's 8 KiB status_details."""
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_REASON_BYTES:
        reason = encoded[: MAX_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "..."
    return HandlerError(reason, {"step": step, "error": reason})


#: The handler registered on each agent (register_ota may be called twice: by the agent itself
#: and by a program that builds the agent).
_REGISTERED: weakref.WeakKeyDictionary[Agent, OtaHandler] = weakref.WeakKeyDictionary()


def register_ota(agent: Agent) -> OtaHandler:
    """Handle ``ota.install`` jobs on ``agent`` (idempotent: a second call keeps the first
    handler), and report the installed software once connected. ConfigError for a bad
    ``[ota]`` section."""
    existing = _REGISTERED.get(agent)
    if existing is not None:
        return existing
    handler = OtaHandler(agent)
    agent.handlers.job(OPERATION)(handler)
    agent.link.on_connect(handler._on_connect)
    _REGISTERED[agent] = handler
    return handler
