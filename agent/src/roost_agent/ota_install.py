"""The mechanics of an OTA update: the ``[ota]`` settings, the server's device routes, downloads
that resume with ``Range``, the SHA-256 and Ed25519 checks with a pinned key, and the hooks.

:mod:`roost_agent.ota` drives these through a deployment's steps; nothing here reports to the
server or knows about jobs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable

from roost_agent.config import Config, ConfigError
from roost_agent.credentials import authorize

if TYPE_CHECKING:
    # Imported where a signature is checked: cryptography costs ~7 MB of RSS, and an agent
    # that never installs anything should not carry it (the agent's budget is 40 MB).
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)

#: The fields of an artifact's manifest that Roost signs (src/roost/ota/artifacts/service.py).
MANIFEST_FIELDS = ("id", "sha256", "size", "type", "version")
#: A read or write of the download; large enough to keep a slow SD card busy, small enough
#: that a rate limit and a stop request are noticed several times a second.
CHUNK_BYTES = 64 * 1024
#: Seconds a request to the server may stall before it counts as failed (then retried).
HTTP_TIMEOUT_S = 30.0
#: An install hook's exit status that means "installed; the device must reboot to finish".
EXIT_REBOOT = 10
#: Installing firmware on a Pi (a whole image to an SD card) takes minutes; half an hour is
#: generous and still ends a hung hook before the job's own timeout does.
HOOK_TIMEOUT_S = 1800.0
#: A health check looks at a running service; five minutes covers a slow boot.
HEALTH_TIMEOUT_S = 300.0
#: How much of a failing hook's stderr goes into the reason (status_details stay under 8 KiB).
REASON_CHARS = 1500


class OtaError(Exception):
    """A step of an update failed; the message names what and why (it becomes the reason)."""


class AgentStopping(BaseException):
    """The agent is stopping while an update waits or downloads: nothing is reported, the
    state file says where to resume. A BaseException so that no handler wrapper reports it."""


def now_text() -> str:
    """The current time in RFC 3339 (UTC), for state files."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_json_atomically(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path``: a temporary file, fsync, rename, fsync the dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as file:
        json.dump(value, file, indent=1, sort_keys=True)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None when it is missing or unreadable (logged)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s): ignored", path, exc)
        return None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@dataclass(frozen=True)
class OtaSettings:
    """The ``[ota]`` section of the configuration (all optional)."""

    files: dict[str, Path] = field(default_factory=dict)  # [ota.files] artifact name -> path
    signing_keys: list[str] = field(default_factory=list)  # PEM or base64 raw Ed25519 keys
    max_download_bytes_s: float = 0.0  # 0: no limit
    hook_timeout_s: float = HOOK_TIMEOUT_S
    health_timeout_s: float = HEALTH_TIMEOUT_S
    reboot_command: list[str] = field(default_factory=list)  # e.g. ["systemctl", "reboot"]
    keep_downloads: bool = False  # keep installed artifacts in data_dir/ota

    @classmethod
    def from_config(cls, config: Config) -> OtaSettings:
        """Read and check ``[ota]`` (ConfigError naming the key)."""
        section = config.extra.get("ota", {})
        if not isinstance(section, dict):
            raise ConfigError("[ota] must be a table")
        files = section.get("files", {})
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise ConfigError('[ota.files] maps artifact names to paths: name = "/path"')
        keys = section.get("signing_keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ConfigError("[ota] signing_keys is a list of keys (PEM or base64 raw)")
        reboot = section.get("reboot_command", [])
        if not isinstance(reboot, list) or not all(isinstance(a, str) for a in reboot):
            raise ConfigError('[ota] reboot_command is a list: ["systemctl", "reboot"]')
        numbers = {}
        for key, default in (
            ("max_download_bytes_s", 0.0),
            ("hook_timeout_s", HOOK_TIMEOUT_S),
            ("health_timeout_s", HEALTH_TIMEOUT_S),
        ):
            value = section.get(key, default)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"[ota] {key} must be a number >= 0, not {value!r}")
            numbers[key] = float(value)
        keep = section.get("keep_downloads", False)
        if not isinstance(keep, bool):
            raise ConfigError(f"[ota] keep_downloads must be true or false, not {keep!r}")
        base = config.data_dir
        if config.ota_signing_key:  # Roost's key from the offline bundle: pinned from the stick
            keys = [*keys, config.ota_signing_key]
        return cls(
            files={name: (base / path).resolve() for name, path in files.items()},
            signing_keys=list(keys),
            reboot_command=list(reboot),
            keep_downloads=keep,
            **numbers,
        )


# -- the server's device routes ------------------------------------------------------------------


class ServerApi:
    """The device's HTTP requests to Roost: its token as Bearer, the bundle's CA for https."""

    def __init__(self, config: Config) -> None:
        self.base = config.api_url.rstrip("/")
        self.config = config  # its current credential: roost_agent.credentials.authorize
        self._context: ssl.SSLContext | None = None
        if self.base.startswith("https:"):
            context = ssl.create_default_context(cadata=config.ca_certificate or None)
            if config.client_cert is not None and config.client_key is not None:
                context.load_cert_chain(str(config.client_cert), str(config.client_key))
            self._context = context

    def open(
        self, path: str, headers: Mapping[str, str] | None = None, *, auth: bool = True
    ) -> Any:
        """GET ``path`` (on the server, or a full URL); the open response. OtaError with the
        server's problem detail on an HTTP error, or the network's reason."""
        url = path if "://" in path else self.base + path
        request = urllib.request.Request(url, headers=dict(headers or {}))
        if auth:
            authorize(request, self.config)
        try:
            return urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S, context=self._context)
        except urllib.error.HTTPError as exc:
            raise HttpStatusError(exc.code, f"GET {path}: {exc.code} {_detail(exc)}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OtaError(f"GET {path}: the server cannot be reached ({reason})") from exc

    def post_json(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON to ``path``; the JSON answer."""
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        authorize(request, self.config)
        try:
            with urllib.request.urlopen(
                request, timeout=HTTP_TIMEOUT_S, context=self._context
            ) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise HttpStatusError(exc.code, f"POST {path}: {exc.code} {_detail(exc)}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise OtaError(f"POST {path}: the server cannot be reached ({reason})") from exc

    def get_json(self, path: str, *, auth: bool = True) -> Any:
        """The JSON answer of GET ``path``."""
        with self.open(path, {"Accept": "application/json"}, auth=auth) as response:
            try:
                return json.loads(response.read())
            except ValueError as exc:
                raise OtaError(f"GET {path}: the answer is not JSON") from exc


class HttpStatusError(OtaError):
    """The server answered with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"null")
    except (ValueError, OSError):
        return str(exc.reason)
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return str(exc.reason)


# -- downloads -----------------------------------------------------------------------------------


def download(
    api: ServerApi,
    path: str,
    dest: Path,
    size: int,
    *,
    max_bytes_s: float = 0.0,
    stopping: Callable[[], bool] = lambda: False,
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """Download ``path`` into ``dest`` until it holds ``size`` bytes, continuing a partial
    file from its size with ``Range`` (a cut download, even across agent restarts, resumes).
    Answers the byte it resumed from (0: from the start). ``max_bytes_s`` paces the transfer
    (0: as fast as the link goes); raises :class:`AgentStopping` when ``stopping()`` says so."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = dest.stat().st_size if dest.exists() else 0
    if have > size:  # not this artifact's bytes (an id always means the same bytes)
        dest.unlink()
        have = 0
    if have == size:
        return have
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = api.open(path, headers)
    except HttpStatusError as exc:
        if exc.status == 416:  # the server's file is shorter than what we hold: start over
            dest.unlink()
        raise
    with response:
        start = have
        if have and response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                raise OtaError(f"GET {path}: asked from byte {have}, got {content_range!r}")
            log.info("resuming the download of %s at byte %d of %d", path, have, size)
        elif have:
            log.info("the server ignored the range: downloading %s from the start", path)
            start = 0
        with dest.open("ab" if start else "wb") as file:
            _copy(response, file, start, size, max_bytes_s, stopping, on_bytes)
            file.flush()
            os.fsync(file.fileno())
    got = dest.stat().st_size
    if got != size:
        raise OtaError(f"GET {path}: the download ended at {got} of {size} bytes")
    return start


def _copy(
    response: IO[bytes],
    file: IO[bytes],
    received: int,
    size: int,
    max_bytes_s: float,
    stopping: Callable[[], bool],
    on_bytes: Callable[[int], None] | None,
) -> None:
    chunk = CHUNK_BYTES if max_bytes_s <= 0 else max(1024, min(CHUNK_BYTES, int(max_bytes_s / 8)))
    began = time.monotonic()
    fresh = 0
    while received < size:
        if stopping():
            raise AgentStopping("the agent is stopping: the download continues at its next start")
        try:
            data = response.read(min(chunk, size - received))
        except OSError as exc:
            raise OtaError(f"the download broke off at byte {received}: {exc}") from exc
        if not data:
            break
        file.write(data)
        file.flush()  # on disk (page cache) at once: a killed agent resumes from here
        received += len(data)
        fresh += len(data)
        if on_bytes is not None:
            on_bytes(received)
        if max_bytes_s > 0:
            ahead = fresh / max_bytes_s - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


# -- signatures ----------------------------------------------------------------------------------


def manifest_of(artifact: Mapping[str, Any]) -> dict[str, Any]:
    """The signed part of an artifact's view: ``{id, sha256, size, type, version}``."""
    return {key: artifact.get(key) for key in MANIFEST_FIELDS}


def canonical(manifest: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: JSON with sorted keys and no whitespace, UTF-8 (what
    Roost's orjson writes with OPT_SORT_KEYS)."""
    return json.dumps(
        dict(manifest), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def key_id_of(key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key (Roost's ``key_id``)."""
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text or the base64 of its 32 raw bytes (ValueError)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError("neither PEM nor the base64 of 32 raw bytes") from exc
    if len(raw) != 32:
        raise ValueError(f"a raw Ed25519 key has 32 bytes, not {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def signature_verifies(key: Ed25519PublicKey, manifest: Mapping[str, Any], signature: str) -> bool:
    """Whether ``signature`` (base64) is ``key``'s signature of ``manifest``."""
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(base64.b64decode(signature, validate=True), canonical(manifest))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


class TrustedKeys:
    """The keys this device accepts signatures from: Roost's, fetched once from
    ``GET /api/v1/ota/signing-key`` and pinned in ``pin_path`` (trust on first use), plus any
    the operator configured (``[ota] signing_keys``, and Roost's key when the offline bundle
    carried it: then nothing is learned from the network). A later key Roost answers with is never
    pinned over the first: an artifact signed with another key is refused until the operator
    adds that key to the configuration."""

    def __init__(self, pin_path: Path, configured: Sequence[str], api: ServerApi) -> None:
        self.pin_path = pin_path
        self.api = api
        self.configured: dict[str, Ed25519PublicKey] = {}
        for text in configured:
            key = load_public_key(text)
            self.configured[key_id_of(key)] = key
        self._lock = threading.Lock()

    def pinned(self) -> Ed25519PublicKey | None:
        """The pinned Roost key, fetched and pinned now when there is none and none is
        configured."""
        with self._lock:
            doc = read_json(self.pin_path)
            if isinstance(doc, dict) and isinstance(doc.get("public_key_raw"), str):
                try:
                    return load_public_key(doc["public_key_raw"])
                except ValueError as exc:
                    raise OtaError(
                        f"the pinned signing key in {self.pin_path} is unreadable ({exc}): "
                        "nothing is installed until it is repaired or removed"
                    ) from exc
            if self.configured:
                return None  # the operator chose the keys: nothing learned from the network
            answer = self.api.get_json("/api/v1/ota/signing-key", auth=False)
            if not isinstance(answer, dict) or answer.get("algorithm") != "ed25519":
                raise OtaError("GET /api/v1/ota/signing-key did not answer an Ed25519 key")
            key = load_public_key(str(answer.get("public_key_raw", "")))
            if answer.get("key_id") != key_id_of(key):
                raise OtaError("GET /api/v1/ota/signing-key: key_id does not match the key")
            write_json_atomically(
                self.pin_path,
                {
                    "key_id": key_id_of(key),
                    "public_key_raw": answer["public_key_raw"],
                    "pinned_at": now_text(),
                    "source": self.api.base,
                },
            )
            log.info("pinned Roost's OTA signing key %s in %s", key_id_of(key), self.pin_path)
            return key

    def check(self, artifact: Mapping[str, Any]) -> str:
        """Verify the artifact's signature over its manifest; the key id that verified it.
        OtaError naming the mismatch otherwise."""
        name = artifact.get("id")
        signature = artifact.get("signature")
        if not isinstance(signature, str) or not signature:
            raise OtaError(f"artifact {name!r} carries no signature: refused")
        keys = dict(self.configured)
        if artifact.get("signature_by") != "operator" or not keys:
            pin = self.pinned()
            if pin is not None:
                keys.setdefault(key_id_of(pin), pin)
        if not keys:
            raise OtaError(
                f"artifact {name!r} is signed with the operator's own key and this device "
                "trusts no operator key: refused (add it to [ota] signing_keys)"
            )
        wanted = artifact.get("signing_key_id")
        if artifact.get("signature_by") != "operator" and wanted and wanted not in keys:
            raise OtaError(
                f"artifact {name!r} is signed with key {wanted}, which this device does not "
                f"trust (it trusts {', '.join(sorted(keys))}; Roost's key is pinned in "
                f"{self.pin_path}): refused — if Roost's key really changed, add the new key "
                "to [ota] signing_keys"
            )
        manifest = manifest_of(artifact)
        candidates = {wanted: keys[wanted]} if wanted in keys else keys
        for key_id, key in candidates.items():
            if signature_verifies(key, manifest, signature):
                return str(key_id)
        raise OtaError(
            f"the signature of artifact {name!r} does not verify with key "
            f"{', '.join(sorted(str(k) for k in candidates))}: refused"
        )


# -- hooks and built-in installers ---------------------------------------------------------------


@dataclass(frozen=True)
class HookResult:
    """How a hook ended: its exit status and the tail of its stderr."""

    status: int
    stderr: str

    def reason(self, label: str) -> str:
        """A failure's text: the hook, how it ended, what it said."""
        how = (
            f"was killed by signal {-self.status}"
            if self.status < 0
            else f"exited with status {self.status}"
        )
        return f"{label} {how}" + (f": {self.stderr}" if self.stderr else "")


def run_hook(
    argv: list[str], payload: Any, env: Mapping[str, str], timeout_s: float, label: str
) -> HookResult:
    """Run a hook (or a command): JSON ``payload`` on stdin, stdout to our log; killed with its
    process group after ``timeout_s`` (OtaError)."""
    try:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
    except OSError as exc:
        raise OtaError(f"{label} could not start: {exc}") from exc
    try:
        out, err = child.communicate(json.dumps(payload).encode(), timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            child.kill()
        child.communicate()
        raise OtaError(f"{label} timed out after {timeout_s:g} s and was killed") from exc
    for line in out.decode(errors="replace").splitlines():
        if line.strip():
            log.info("%s: %s", label, line)
    tail = "\n".join(line for line in err.decode(errors="replace").splitlines() if line.strip())[
        -REASON_CHARS:
    ]
    return HookResult(child.returncode, tail)


def install_file(source: Path, target: Path, backup: Path) -> None:
    """Copy ``source`` over ``target`` atomically (a temporary file beside it, fsync, rename),
    keeping what was there in ``backup`` (or a ``.absent`` marker) for :func:`restore_file`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    backup.parent.mkdir(parents=True, exist_ok=True)
    absent = backup.with_name(backup.name + ".absent")
    if not backup.exists() and not absent.exists():  # a second try keeps the first backup
        if target.exists():
            _copy_atomically(target, backup)
        else:
            absent.touch()
    _copy_atomically(source, target)


def restore_file(target: Path, backup: Path) -> bool:
    """Put back what :func:`install_file` replaced; False when it kept nothing."""
    absent = backup.with_name(backup.name + ".absent")
    if backup.exists():
        _copy_atomically(backup, target)
        backup.unlink()
        return True
    if absent.exists():
        if target.exists():
            target.unlink()
        absent.unlink()
        return True
    return False


def forget_backup(backup: Path) -> None:
    """Drop the backup of a file once its update is committed."""
    for path in (backup, backup.with_name(backup.name + ".absent")):
        if path.exists():
            path.unlink()


def _copy_atomically(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.roost-ota.tmp")
    with source.open("rb") as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst, CHUNK_BYTES)
        dst.flush()
        os.fsync(dst.fileno())
    shutil.copymode(str(source), str(tmp))
    os.replace(tmp, target)
    _fsync_dir(target.parent)
