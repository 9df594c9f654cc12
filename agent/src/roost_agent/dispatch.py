"""Roost's requests to the device, from MQTT to the handlers and the answers back.

* ``devices/{id}/commands/{cmd}`` ``{"id", "name", "params"}`` → the command's handler →
  ``{"status": "SUCCEEDED"|"FAILED", "result"}`` on ``…/commands/{cmd}/response``. A name
  nothing handles fails at once ("no handler for command 'x'"). Delivery is at least once:
  every command id is kept in a journal (``data_dir/commands.json``) before its handler runs,
  so a resend — in this run or after a restart — never runs it twice; the kept answer is sent
  again instead, and a command the agent was running when it stopped is answered FAILED (not
  run again: think of ``reboot``). Answers not acknowledged before a restart are sent again.
* ``devices/{id}/state/delta`` ``{"version", "delta"}`` (on every desired change, and again on
  each connect) → the desired handler → the applied fields on ``…/state/reported``. Deltas are
  applied one at a time; one that arrives meanwhile replaces any still waiting (a delta is the
  whole difference, so the newest says everything).
* ``devices/{id}/jobs/notify`` ``{"jobs": [{job_id, status, document, version, attempt}]}`` → one
  execution at a time, in the server's order: ``IN_PROGRESS`` on ``…/jobs/{job}/update``, the
  handler of ``document["operation"]`` (its progress as further IN_PROGRESS updates), then
  SUCCEEDED with the handler's answer as ``status_details`` or FAILED with ``{"reason", …}``. An
  operation nothing handles is REJECTED with the reason. Executions are kept in a journal too
  (``data_dir/jobs.json``, by job and attempt): a finished one whose final update was not
  acknowledged is reported again when the server still lists it; one found IN_PROGRESS that this
  run has not started (the agent restarted mid-job, e.g. an OTA's reboot) runs its handler again,
  so job handlers must be idempotent.

Callbacks arrive on paho's network thread: they only parse and hand work to ``agent.submit``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roost_agent.handlers import HandlerError, NoHandler

if TYPE_CHECKING:
    from roost_agent.agent import Agent

log = logging.getLogger(__name__)

#: How many command ids and job executions the journals remember: far more than a device gets
#: between two resends, and the files stay a few hundred KiB.
JOURNAL_SIZE = 1000
#: How long a worker waits for the server's PUBACK of an answer before leaving it unconfirmed
#: (it is then sent again after a restart).
ACK_WAIT_S = 30.0
#: The server refuses command results over 64 KiB and status_details over 8 KiB.
MAX_RESULT_BYTES = 64 * 1024
MAX_DETAILS_BYTES = 8 * 1024


class Journal:
    """Recent records by key in a JSON file, rewritten atomically (fsync, rename) on change."""

    def __init__(self, path: Path, size: int = JOURNAL_SIZE) -> None:
        self.path = path
        self.size = size
        self._lock = threading.Lock()
        self._records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        try:
            loaded = json.loads(path.read_text())
        except FileNotFoundError:
            loaded = []
        except (OSError, ValueError) as exc:
            log.warning("the journal %s is unreadable (%s): starting a new one", path, exc)
            loaded = []
        for item in loaded if isinstance(loaded, list) else []:
            if isinstance(item, dict) and isinstance(item.get("key"), str):
                self._records[item["key"]] = item

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of ``key`` (a copy), None when it is not remembered."""
        with self._lock:
            record = self._records.get(key)
            return dict(record) if record is not None else None

    def claim(self, key: str, record: dict[str, Any]) -> bool:
        """Remember ``key`` unless it is known; False when it was (a duplicate)."""
        with self._lock:
            if key in self._records:
                return False
            self._records[key] = {**record, "key": key}
            self._save()
            return True

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Remember ``record`` as the state of ``key`` (replacing what was there)."""
        with self._lock:
            self._records[key] = {**record, "key": key}
            self._records.move_to_end(key)
            self._save()

    def update(self, key: str, **fields: Any) -> None:
        """Change some fields of a known record."""
        with self._lock:
            if key in self._records:
                self._records[key].update(fields)
                self._save()

    def records(self) -> list[dict[str, Any]]:
        """Every record, oldest first (copies)."""
        with self._lock:
            return [dict(r) for r in self._records.values()]

    def _save(self) -> None:
        while len(self._records) > self.size:
            self._records.popitem(last=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as file:
            json.dump(list(self._records.values()), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path)


class Dispatcher:
    """Commands, desired state and jobs from the server to the handlers (module docstring)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.link = agent.link
        self.handlers = agent.handlers
        self.config = agent.config
        data_dir = Path(self.config.data_dir)
        self.commands = Journal(data_dir / "commands.json")
        self.jobs = Journal(data_dir / "jobs.json")
        self._lock = threading.Lock()
        # Answers from an earlier run not known to have reached the server: sent on connect.
        self._unconfirmed = [r for r in self.commands.records() if not r.get("acked")]
        self._delta_waiting: dict[str, Any] | None = None
        self._delta_busy = False
        self._last_delta: Any = None
        self._job_list: list[dict[str, Any]] = []
        self._jobs_busy = False
        self._started_here: set[str] = set()
        self._resent: set[str] = set()

    def attach(self) -> None:
        """Subscribe to commands, state deltas and job notifications (again on reconnects)."""
        topic = self.link.topic
        self.link.subscribe(topic("commands/+"), self._on_command)
        self.link.subscribe(topic("commands/+/response/rejected"), self._on_rejected)
        self.link.subscribe(topic("state/delta"), self._on_delta)
        self.link.subscribe(topic("jobs/notify"), self._on_notify)
        self.link.subscribe(topic("jobs/+/update/rejected"), self._on_rejected)
        self.link.on_connect(self._on_connect)

    # -- commands ---------------------------------------------------------------------------------

    def _on_command(self, topic: str, payload: bytes) -> None:
        command_id = topic.rsplit("/", 1)[-1]
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            log.warning("command %s is not a JSON object: %.200r", command_id, payload)
            self.agent.submit(self._answer, command_id, "FAILED", "the command is not JSON")
            return
        name = body.get("name")
        params = body.get("params")
        if params is None:
            params = {}
        if not isinstance(name, str):
            self.agent.submit(self._answer, command_id, "FAILED", "the command has no name")
            return
        self.agent.submit(self._take_command, command_id, name, params, body)

    def _take_command(
        self, command_id: str, name: str, params: Any, body: dict[str, Any] | None = None
    ) -> None:
        # Claimed on a worker: the journal's fsync must not hold paho's network thread.
        if self.commands.claim(command_id, {"name": name, "state": "running"}):
            # A schedule's fire that the agent ran itself while offline: answer with that run.
            schedules = getattr(self.agent, "schedules", None)
            ran = schedules.answer_for(body) if schedules is not None and body else None
            if ran is not None:
                self._answer(
                    command_id, ran["status"], ran.get("result"), ran.get("status_details")
                )
                return
            self._run_command(command_id, name, params)
        else:
            self._duplicate(command_id)

    def _run_command(self, command_id: str, name: str, params: Any) -> None:
        env = {"ROOST_COMMAND_ID": command_id, "ROOST_COMMAND_NAME": name}
        try:
            if not isinstance(params, dict):
                raise HandlerError("the command's params are not a JSON object")
            result = self.handlers.run_command(name, params, env)
            text = json.dumps(result)
            if len(text) > MAX_RESULT_BYTES:
                raise HandlerError(f"the result is over {MAX_RESULT_BYTES} bytes of JSON")
            status = "SUCCEEDED"
        except NoHandler as exc:
            log.warning("command %s: %s", command_id, exc.reason)
            status, result = "FAILED", exc.reason
        except HandlerError as exc:
            log.warning("command %s (%s) failed: %s", command_id, name, exc.reason)
            status, result = "FAILED", exc.reason
        except (TypeError, ValueError) as exc:  # json.dumps: not JSON-able
            status, result = "FAILED", f"the result is not JSON: {exc}"
        else:
            log.info("command %s (%s) succeeded", command_id, name)
        self._answer(command_id, status, result)

    def _answer(
        self, command_id: str, status: str, result: Any, details: dict[str, Any] | None = None
    ) -> None:
        answer = {"status": status, "result": result}
        if details:
            answer["status_details"] = details
        sent = (self.commands.get(command_id) or {}).get("sent", 0) + 1
        record = {"state": "done", "answer": answer, "acked": False, "sent": sent}
        self.commands.put(command_id, record)
        info = self.link.publish(
            self.link.topic(f"commands/{command_id}/response"), json.dumps(answer).encode(), 1
        )
        if _acknowledged(info):
            self.commands.update(command_id, acked=True)

    def _duplicate(self, command_id: str) -> None:
        record = self.commands.get(command_id) or {}
        if record.get("state") == "done" and isinstance(record.get("answer"), dict):
            log.info("command %s was delivered again: answering as before", command_id)
            answer = record["answer"]
            self._answer(command_id, answer.get("status", "FAILED"), answer.get("result"))
        else:
            log.info("command %s was delivered again while it runs: ignored", command_id)

    def _on_connect(self) -> None:
        with self._lock:
            pending, self._unconfirmed = self._unconfirmed, []
        if pending:
            self.agent.submit(self._resend_answers, pending)

    def _resend_answers(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            command_id = record["key"]
            if record.get("state") == "done" and isinstance(record.get("answer"), dict):
                answer = record["answer"]
                self._answer(command_id, answer.get("status", "FAILED"), answer.get("result"))
            else:
                log.warning("command %s was interrupted by a restart: not run again", command_id)
                reason = "the agent stopped while the command ran; it was not run again"
                self._answer(command_id, "FAILED", reason)

    def _on_rejected(self, topic: str, payload: bytes) -> None:
        log.warning("the server refused %s: %.300s", topic, payload.decode(errors="replace"))

    # -- desired state ----------------------------------------------------------------------------

    def _on_delta(self, topic: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            log.warning("a state delta that is not JSON: %.200r", payload)
            return
        if not isinstance(body, dict) or not isinstance(body.get("delta"), dict):
            log.warning("a state delta without a delta object: %.200r", payload)
            return
        refresh = getattr(getattr(self.agent, "metadata", None), "refresh", None)
        if callable(refresh):
            self.agent.submit(refresh)
        with self._lock:
            self._delta_waiting = body
            if self._delta_busy:
                return
            self._delta_busy = True
        self.agent.submit(self._apply_deltas)

    def _apply_deltas(self) -> None:
        while True:
            with self._lock:
                body, self._delta_waiting = self._delta_waiting, None
                if body is None:
                    self._delta_busy = False
                    return
            try:
                self._apply_delta(body)
            except Exception:
                log.exception("applying the desired state failed")

    def _apply_delta(self, body: dict[str, Any]) -> None:
        delta = body["delta"]
        seen = (body.get("version"), delta)
        if not delta or seen == self._last_delta:
            return  # nothing to do, or the same delta again (a resend or a reconnect)
        if not self.handlers.has_desired():
            log.warning("desired state changed (%s) but no handler applies it", sorted(delta))
            return
        env = {"ROOST_STATE_VERSION": str(body.get("version", ""))}
        try:
            applied = self.handlers.apply_desired(delta, env)
            text = json.dumps(applied)
        except HandlerError as exc:
            log.warning("applying desired state version %s failed: %s", body.get("version"), exc)
            return
        except (TypeError, ValueError) as exc:
            log.warning("the applied state is not JSON: %s", exc)
            return
        self._last_delta = seen
        if applied:
            self.link.publish(self.link.topic("state/reported"), text.encode(), 1)
            log.info("applied and reported desired state: %s", ", ".join(sorted(applied)))

    # -- jobs -------------------------------------------------------------------------------------

    def _on_notify(self, topic: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            body = None
        jobs = body.get("jobs") if isinstance(body, dict) else None
        if not isinstance(jobs, list):
            log.warning("a job notification without a jobs list: %.200r", payload)
            return
        with self._lock:
            self._job_list = [j for j in jobs if isinstance(j, dict) and j.get("job_id")]
            if self._jobs_busy:
                return
            self._jobs_busy = True
        self.agent.submit(self._run_jobs)

    def _run_jobs(self) -> None:
        while True:
            with self._lock:
                execution = self._next_execution()
                if execution is None:
                    self._jobs_busy = False
                    return
            try:
                self._run_job(execution)
            except Exception as exc:
                log.exception("job %s failed in the agent", execution.get("job_id"))
                error = HandlerError(f"the agent failed: {type(exc).__name__}: {exc}")
                job_id, key = str(execution["job_id"]), _job_key(execution)
                try:
                    self._finish(job_id, key, None, error, True)
                except Exception:
                    log.exception("job %s: the failure could not be reported", job_id)

    def _next_execution(self) -> dict[str, Any] | None:
        """The first execution of the last list that this run has not finished (under lock)."""
        for execution in self._job_list:
            if execution.get("status") not in ("QUEUED", "IN_PROGRESS"):
                continue
            key = _job_key(execution)
            record = self.jobs.get(key)
            if record is None or record.get("state") != "done":
                if execution.get("status") == "IN_PROGRESS" and key in self._started_here:
                    continue  # ours and running, or a stale list after our own update
                return execution
            if not record.get("acked") and key not in self._resent:
                self._resent.add(key)
                final = record.get("update")
                if isinstance(final, dict):
                    log.info("job %s: reporting its outcome again", execution["job_id"])
                    self.agent.submit(self._send_final, execution["job_id"], key, final)
        return None

    def _run_job(self, execution: dict[str, Any]) -> None:
        job_id = str(execution["job_id"])
        key = _job_key(execution)
        document = execution.get("document")
        operation = document.get("operation") if isinstance(document, dict) else None
        started = execution.get("status") == "IN_PROGRESS"
        with self._lock:
            self._started_here.add(key)
        if not isinstance(document, dict) or not isinstance(operation, str):
            error = HandlerError('the job document has no "operation"')
            self._finish(job_id, key, None, error, started)
            return
        if not self.handlers.has_job(operation):
            error = NoHandler(f"no handler for job operation {operation!r}")
            self._finish(job_id, key, None, error, started)
            return
        self.jobs.put(key, {"state": "running", "operation": operation})
        if not started:
            self._update(job_id, {"status": "IN_PROGRESS"})
        log.info("job %s (%s) started", job_id, operation)

        def progress(details: dict[str, Any]) -> None:
            if not isinstance(details, dict):
                raise TypeError("progress takes a dict of status_details")
            self._update(job_id, {"status": "IN_PROGRESS", "status_details": details})

        env = {"ROOST_JOB_ID": job_id, "ROOST_JOB_ATTEMPT": str(execution.get("attempt", ""))}
        try:
            details = self.handlers.run_job(operation, document, progress, env)
            if details is not None and len(json.dumps(details)) > MAX_DETAILS_BYTES:
                raise HandlerError(f"the job's answer is over {MAX_DETAILS_BYTES} bytes of JSON")
        except HandlerError as exc:
            self._finish(job_id, key, None, exc, True)
        except (TypeError, ValueError) as exc:  # json.dumps: not JSON-able
            self._finish(job_id, key, None, HandlerError(f"the answer is not JSON: {exc}"), True)
        else:
            self._finish(job_id, key, details, None, True)

    def _finish(
        self,
        job_id: str,
        key: str,
        details: dict[str, Any] | None,
        error: HandlerError | None,
        started: bool,
    ) -> None:
        """Report the outcome: SUCCEEDED, FAILED, or REJECTED for one never started."""
        if error is None:
            update: dict[str, Any] = {"status": "SUCCEEDED"}
            if details:
                update["status_details"] = details
            log.info("job %s succeeded", job_id)
        else:
            status = "FAILED" if started else "REJECTED"
            update = {"status": status, "status_details": {**error.details, "reason": error.reason}}
            log.warning("job %s %s: %s", job_id, status.lower(), error.reason)
        self.jobs.put(key, {"state": "done", "update": update, "acked": False})
        self._send_final(job_id, key, update)

    def _send_final(self, job_id: str, key: str, update: dict[str, Any]) -> None:
        if _acknowledged(self._update(job_id, update)):
            self.jobs.update(key, acked=True)

    def _update(self, job_id: str, update: dict[str, Any]) -> Any:
        topic = self.link.topic(f"jobs/{job_id}/update")
        return self.link.publish(topic, json.dumps(update).encode(), 1)


def _job_key(execution: dict[str, Any]) -> str:
    return f"{execution.get('job_id')}#{execution.get('attempt', 1)}"


def _acknowledged(info: Any, timeout: float = ACK_WAIT_S) -> bool:
    """Whether the server acknowledged a QoS 1 publish within ``timeout``."""
    try:
        info.wait_for_publish(timeout)
        return bool(info.is_published())
    except (AttributeError, RuntimeError, ValueError):
        return False
