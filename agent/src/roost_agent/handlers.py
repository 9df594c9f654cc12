"""What the device does when Roost asks: commands, desired-state changes and jobs.

Two ways to say it, and a decorated function wins over a hook of the same name::

    handlers = agent.handlers

    @handlers.command("reboot")
    def reboot(params: dict) -> dict:          # the result goes to the command's ``result``
        ...

    @handlers.desired
    def apply(delta: dict) -> dict:            # the fields applied, reported back (None: all)
        ...

    @handlers.job("touch")                     # the job document's "operation"
    def touch(document: dict, progress) -> dict:   # progress({...}): IN_PROGRESS details
        ...                                    # the answer: SUCCEEDED's status_details

or executables in ``[hooks] dir`` (shell scripts welcome): ``commands/<name>``, ``state`` and
``jobs/<operation>``. A hook gets JSON on stdin (the params, the delta, the job document) and the
context in ``ROOST_*`` environment variables, and writes its answer as JSON on stdout (empty:
``null``; text that is not JSON is answered as a string). Exit 0 is success; any other status
fails with the last lines of stderr as the reason; a hook still running after its timeout is
killed (its whole process group) and fails. A job hook reports progress with lines
``PROGRESS {"step": "DOWNLOADING"}`` on stdout while it runs.

A handler fails by raising: :class:`HandlerError` carries the reason (and, for jobs, extra
``status_details``); any other exception fails with its message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    from roost_agent.config import Config

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
Progress = Callable[[dict[str, Any]], None]

#: A command's hook gets as long as the server waits for an answer by default (60 s).
COMMAND_TIMEOUT_S = 60.0
#: Applying desired state should be quick; a stuck hook must not hold later deltas forever.
STATE_TIMEOUT_S = 60.0
#: Jobs download and install: an hour, the order of an OTA over a slow link.
JOB_TIMEOUT_S = 3600.0
#: How much of a failing hook's stderr becomes the reason (the server keeps results small).
REASON_LINES = 20
REASON_CHARS = 2000
#: A job hook's progress line.
PROGRESS_PREFIX = "PROGRESS "
#: Names that may become a file name under the hooks directory (no "/", no leading dot).
HOOK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}$")


class HandlerError(Exception):
    """A handler failed; ``reason`` goes to the server, ``details`` into a job's status_details."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = dict(details or {})


class NoHandler(HandlerError):
    """Nothing handles this command or job operation (neither a decorator nor a hook)."""


class Handlers:
    """The registry of decorated handlers plus the hooks directory (see the module docstring)."""

    def __init__(
        self,
        config: Config | Path | str | None = None,
        *,
        hooks_dir: Path | str | None = None,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        state_timeout_s: float = STATE_TIMEOUT_S,
        job_timeout_s: float = JOB_TIMEOUT_S,
    ) -> None:
        base_env: dict[str, str] = {}
        if isinstance(config, (Path, str)):
            hooks_dir = hooks_dir or config
        elif config is not None:
            hooks_dir = hooks_dir or config.hooks_dir
            base_env = {
                "ROOST_DEVICE_ID": config.device_id,
                "ROOST_TENANT_ID": config.tenant_id,
                "ROOST_API_URL": config.api_url,
                "ROOST_DATA_DIR": str(config.data_dir),
            }
        self.hooks_dir = Path(hooks_dir) if hooks_dir is not None else None
        self.command_timeout_s = command_timeout_s
        self.state_timeout_s = state_timeout_s
        self.job_timeout_s = job_timeout_s
        self._base_env = base_env
        self._commands: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self._jobs: dict[str, Callable[[dict[str, Any], Progress], Any]] = {}
        self._desired: Callable[[dict[str, Any]], Any] | None = None
        self._lock = threading.Lock()

    # -- the decorator API ------------------------------------------------------------------------

    def command(self, name: str) -> Callable[[F], F]:
        """Register ``fn(params) -> result`` for the command ``name``."""

        def register(fn: F) -> F:
            with self._lock:
                self._commands[name] = fn
            return fn

        return register

    def desired(self, fn: F) -> F:
        """Register ``fn(delta) -> applied fields`` (None: the whole delta was applied)."""
        with self._lock:
            self._desired = fn
        return fn

    def job(self, operation: str) -> Callable[[F], F]:
        """Register ``fn(document, progress) -> status_details`` for jobs of ``operation``."""

        def register(fn: F) -> F:
            with self._lock:
                self._jobs[operation] = fn
            return fn

        return register

    # -- what is there ----------------------------------------------------------------------------

    def hook(self, kind: str, name: str = "") -> Path | None:
        """The hook file for ``commands/<name>``, ``state`` or ``jobs/<name>`` if it exists."""
        if self.hooks_dir is None:
            return None
        if kind == "state":
            path = self.hooks_dir / "state"
        else:
            if not HOOK_NAME.match(name):
                return None
            path = self.hooks_dir / kind / name
        return path if path.is_file() else None

    def has_command(self, name: str) -> bool:
        """Whether a decorator or a hook handles the command ``name``."""
        return name in self._commands or self.hook("commands", name) is not None

    def has_desired(self) -> bool:
        """Whether a decorator or a hook applies desired state."""
        return self._desired is not None or self.hook("state") is not None

    def has_job(self, operation: str) -> bool:
        """Whether a decorator or a hook handles jobs of ``operation``."""
        return operation in self._jobs or self.hook("jobs", operation) is not None

    # -- running them -----------------------------------------------------------------------------

    def run_command(
        self, name: str, params: dict[str, Any], env: dict[str, str] | None = None
    ) -> Any:
        """The result of command ``name``; raises :class:`HandlerError` (NoHandler) on failure."""
        fn = self._commands.get(name)
        if fn is not None:
            return _call(fn, params)
        hook = self.hook("commands", name)
        if hook is None:
            raise NoHandler(f"no handler for command {name!r}")
        return self._run_hook(hook, params, env, self.command_timeout_s)

    def apply_desired(
        self, delta: dict[str, Any], env: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The fields applied from ``delta`` (what to report); raises :class:`HandlerError`."""
        fn = self._desired
        if fn is not None:
            applied = _call(fn, delta)
        else:
            hook = self.hook("state")
            if hook is None:
                raise NoHandler("no handler for desired state")
            applied = self._run_hook(hook, delta, env, self.state_timeout_s)
        if applied is None:
            return dict(delta)
        if not isinstance(applied, dict):
            raise HandlerError(
                f"the desired-state handler answered {type(applied).__name__}, not an object "
                "of the applied fields"
            )
        return applied

    def run_job(
        self,
        operation: str,
        document: dict[str, Any],
        progress: Progress,
        env: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """A job's status_details on success; raises :class:`HandlerError` (NoHandler)."""
        fn = self._jobs.get(operation)
        if fn is not None:
            result = _call(fn, document, progress)
        else:
            hook = self.hook("jobs", operation)
            if hook is None:
                raise NoHandler(f"no handler for job operation {operation!r}")
            result = self._run_hook(hook, document, env, self.job_timeout_s, progress)
        if result is None or isinstance(result, dict):
            return result
        return {"result": result}

    def _run_hook(
        self,
        path: Path,
        payload: Any,
        env: dict[str, str] | None,
        timeout_s: float,
        progress: Progress | None = None,
    ) -> Any:
        where = self._label(path)
        if not os.access(path, os.X_OK):
            raise HandlerError(f"the hook {where} is not executable (chmod +x {path})")
        child_env = {**os.environ, **self._base_env, **(env or {})}
        return run_hook(path, payload, child_env, timeout_s, progress, where)

    def _label(self, path: Path) -> str:
        if self.hooks_dir is not None:
            try:
                return str(path.relative_to(self.hooks_dir))
            except ValueError:
                pass
        return str(path)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except HandlerError:
        raise
    except Exception as exc:
        log.warning("handler %s failed", getattr(fn, "__name__", fn), exc_info=True)
        raise HandlerError(f"{type(exc).__name__}: {exc}") from exc


def run_hook(
    path: Path,
    payload: Any,
    env: dict[str, str],
    timeout_s: float,
    progress: Progress | None,
    label: str,
) -> Any:
    """Run one executable hook (see the module docstring); its answer, or HandlerError."""
    try:
        child = subprocess.Popen(
            [str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(path.parent),
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
    except OSError as exc:
        raise HandlerError(f"the hook {label} could not start: {exc}") from exc
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    out: list[str] = []
    err: deque[str] = deque(maxlen=REASON_LINES)

    def feed() -> None:
        assert child.stdin is not None
        try:
            child.stdin.write(json.dumps(payload).encode())
            child.stdin.close()
        except OSError:
            pass  # the hook does not read its input: that is its business

    def read_out() -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            line = raw.decode(errors="replace")
            if progress is not None and line.startswith(PROGRESS_PREFIX):
                _progress_line(line[len(PROGRESS_PREFIX) :], progress, label)
            else:
                out.append(line)

    def read_err() -> None:
        assert child.stderr is not None
        for raw in child.stderr:
            err.append(raw.decode(errors="replace").rstrip("\n"))

    threads = [threading.Thread(target=t, daemon=True) for t in (feed, read_out, read_err)]
    for thread in threads:
        thread.start()
    try:
        status = child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill(child)
        reason = f"the hook {label} timed out after {timeout_s:g} s and was killed"
        raise HandlerError(reason) from None
    finally:
        # A daemon the hook started in the background may hold the pipes: do not wait for it.
        for thread in threads:
            thread.join(timeout=5)
        for stream in (child.stdout, child.stderr):
            stream.close()
    if status != 0:
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        tail = "\n".join(line for line in err if line.strip())[-REASON_CHARS:]
        raise HandlerError(f"the hook {label} {how}" + (f": {tail}" if tail else ""))
    text = "".join(out).strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _progress_line(text: str, progress: Progress, label: str) -> None:
    try:
        details = json.loads(text)
    except ValueError:
        log.warning("the hook %s wrote a progress line that is not JSON: %.200s", label, text)
        return
    if isinstance(details, dict):
        progress(details)
    else:
        log.warning("the hook %s wrote progress that is not a JSON object: %.200s", label, text)


def _kill(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        child.kill()
    child.wait()
