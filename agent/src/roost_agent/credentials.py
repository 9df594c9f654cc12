"""The device's current credential, the credentials the agent obtained itself, and their rotation.

* ``data_dir/credentials.json`` (mode 0600, written atomically) holds what the agent obtained by
  joining (:mod:`roost_agent.joining`) or by rotation: ``{"device_id", "tenant_id", "token",
  "token_id", "client_cert", "client_key", "certificate_id", "obtained_at", "source"}``; the key
  and certificate files sit in ``data_dir/credentials/`` (0600). When present it wins over the
  configuration (:func:`roost_agent.config.with_credentials`).
* :class:`CurrentCredential` is the one place every HTTP call of the agent takes its
  ``Authorization`` from (:func:`authorize`), so a rotation reaches them all at once.
* :class:`Rotation` is the built-in command ``roost.rotate_credentials``: ask the server for a new
  token (and a certificate, from a CSR of a key made here), write it down, reconnect MQTT with it,
  then retire the previous credential with the new one. The previous credential stays valid
  until then, so an answer lost on the way never locks the device out; a retirement that failed
  is kept in credentials.json and tried again on the next connect.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from roost_agent.config import CREDENTIALS_FILE, Config, ConfigError, read_credentials
from roost_agent.handlers import HandlerError

if TYPE_CHECKING:
    from roost_agent.agent import Agent

log = logging.getLogger(__name__)

COMMAND = "roost.rotate_credentials"
ROTATE_PATH = "/api/v1/device/credentials/rotate"
RETIRE_PATH = "/api/v1/device/credentials/retire"
KEYS_DIR = "credentials"
CERT_FILE = "client.pem"
KEY_FILE = "client.key"
#: One HTTP exchange with the server; joining and rotating are small JSON bodies.
HTTP_TIMEOUT_S = 15.0
#: How long a rotation waits for MQTT to come back with the new credential before it gives up
#: (and keeps the previous one valid): well inside the server's 60 s wait for a command's answer.
SWITCH_WAIT_S = 30.0


class CredentialError(Exception):
    """A credential cannot be made or stored here (no cryptography, a disk that refuses)."""


class ServerRefused(Exception):
    """The server answered an HTTP error: ``status`` and its problem ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail


def now_text() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- files ----------------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically, mode 0600: a temporary file, fsync, rename, fsync the dir."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)  # an existing tmp file keeps its mode through O_CREAT
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(str(path.parent), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_credentials(data_dir: Path, record: dict[str, Any]) -> None:
    """Write ``data_dir/credentials.json`` (0600, atomically)."""
    try:
        _write_private(Path(data_dir) / CREDENTIALS_FILE, json.dumps(record, indent=2).encode())
    except OSError as exc:
        raise CredentialError(f"cannot write {Path(data_dir) / CREDENTIALS_FILE}: {exc}") from exc


def write_key_pair(data_dir: Path, certificate: str, key: str) -> tuple[Path, Path]:
    """Store a client certificate and its private key in ``data_dir/credentials/`` (0600).

    The names stay the same across rotations, so every TLS context that loads them by path
    picks up the new pair; the key is written first (a new key with the old certificate would
    fail one handshake, never the other way round for longer than a rename)."""
    folder = Path(data_dir) / KEYS_DIR
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    try:
        _write_private(key_path, key.encode())
        _write_private(cert_path, certificate.encode())
    except OSError as exc:
        raise CredentialError(f"cannot write the client certificate in {folder}: {exc}") from exc
    return cert_path, key_path


def new_key_and_csr(common_name: str) -> tuple[str, str]:
    """A new EC P-256 private key (PEM, PKCS#8) and a CSR signed with it (PEM)."""
    try:  # imported here: only a device that uses certificates needs cryptography loaded
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:
        raise CredentialError(
            "a client certificate needs the cryptography package: pip install cryptography"
        ) from exc
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or "roost-device")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


# -- talking to the server ------------------------------------------------------------------------


def tls_for(
    config: Config, client_cert: Path | None = None, client_key: Path | None = None
) -> ssl.SSLContext:
    """Trust the bundle's CA only (the system's when there is none); present a client pair."""
    context = ssl.create_default_context(cadata=config.ca_certificate or None)
    if client_cert is not None and client_key is not None:
        context.load_cert_chain(str(client_cert), str(client_key))
    return context


def post_json(
    config: Config,
    path: str,
    body: dict[str, Any],
    *,
    authorization: str | None = None,
    api_url: str | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
) -> Any:
    """POST ``body`` to the server; its JSON answer. ServerRefused for an HTTP error (with the
    problem's detail), OSError when the server cannot be reached."""
    url = (api_url or config.api_url).rstrip("/") + path
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    if authorization:
        request.add_header("Authorization", authorization)
    context = tls_for(config, client_cert, client_key) if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S, context=context) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raise ServerRefused(exc.code, _detail(exc)) from exc
    except ValueError as exc:
        raise OSError(f"the server's answer to {path} is not JSON: {exc}") from exc


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"null")
    except (ValueError, OSError):
        return str(exc.reason)
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return str(exc.reason)


# -- the current credential -----------------------------------------------------------------------


class CurrentCredential:
    """The credential the agent uses now (thread-safe); a rotation switches it in place."""

    def __init__(self, config: Config) -> None:
        self._lock = threading.Lock()
        self.device_id = config.device_id
        self.origin = (config.device_id, config.token)  # what the configuration said
        self._token = config.token
        self.client_cert = config.client_cert
        self.client_key = config.client_key
        stored = read_credentials(config.data_dir) or {}
        same = stored.get("token") == config.token and stored.get("device_id") == config.device_id
        self.token_id: str | None = stored.get("token_id") if same else None
        self.certificate_id: str | None = stored.get("certificate_id") if same else None

    @property
    def token(self) -> str:
        with self._lock:
            return self._token

    def authorization(self) -> str | None:
        """The ``Authorization`` header value (None: the client certificate speaks alone)."""
        token = self.token
        return f"Bearer {token}" if token else None

    def use(self, record: dict[str, Any]) -> None:
        """Switch to the credentials of a credentials.json record."""
        with self._lock:
            self._token = record["token"]
            self.token_id = record.get("token_id")
            self.certificate_id = record.get("certificate_id")
            if record.get("client_cert") and record.get("client_key"):
                self.client_cert = Path(record["client_cert"])
                self.client_key = Path(record["client_key"])


# One agent per data directory: its parts find the current credential by their config.
_current: dict[Path, CurrentCredential] = {}
_current_lock = threading.Lock()


def current_credential(config: Config) -> CurrentCredential:
    """The current credential of the agent of ``config`` (made on first use)."""
    with _current_lock:
        found = _current.get(config.data_dir)
        if found is None or found.origin != (config.device_id, config.token):
            found = _current[config.data_dir] = CurrentCredential(config)
        return found


def authorize(request: urllib.request.Request, config: Config) -> None:
    """Add the device's current credential to an HTTP request to Roost (when it has a token)."""
    value = current_credential(config).authorization()
    if value:
        request.add_header("Authorization", value)


# -- rotation -------------------------------------------------------------------------------------


class Rotation:
    """The ``roost.rotate_credentials`` command (see the module docstring)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.config = agent.config
        self.current = current_credential(agent.config)
        self._lock = threading.Lock()  # one rotation (or retirement) at a time

    def run(self, params: dict[str, Any]) -> dict[str, Any]:
        """Rotate; answer ``{"token_id", "certificate_id", "retired"}`` (never a secret)."""
        wanted = params.get("certificate")
        if wanted is not None and not isinstance(wanted, bool):
            raise HandlerError("params.certificate must be true or false")
        with self._lock:
            return self._rotate(self.current.client_cert is not None if wanted is None else wanted)

    def _rotate(self, certificate: bool) -> dict[str, Any]:
        current = self.current
        key_pem = csr = None
        if certificate:
            try:
                key_pem, csr = new_key_and_csr(self.config.device_id)
            except CredentialError as exc:
                raise HandlerError(str(exc)) from exc
        answer = self._post(ROTATE_PATH, {"csr": csr}, "asking for new credentials")
        if not isinstance(answer, dict) or not answer.get("token"):
            raise HandlerError(f"the server's answer has no token: {answer!r:.200}")
        previous: dict[str, Any] = {}
        if isinstance(answer.get("previous"), dict):
            previous = answer["previous"]
        record: dict[str, Any] = {
            "device_id": answer.get("device_id") or self.config.device_id,
            "tenant_id": answer.get("tenant_id") or self.config.tenant_id,
            "token": answer["token"],
            "token_id": answer.get("token_id"),
            "client_cert": None if current.client_cert is None else str(current.client_cert),
            "client_key": None if current.client_key is None else str(current.client_key),
            "certificate_id": None,
            "obtained_at": now_text(),
            "source": "rotation",
        }
        try:
            if certificate:
                if not answer.get("certificate") or key_pem is None:
                    raise HandlerError("the server issued no certificate for the CSR")
                cert_path, key_path = write_key_pair(
                    self.config.data_dir, answer["certificate"], key_pem
                )
                record.update(
                    client_cert=str(cert_path),
                    client_key=str(key_path),
                    certificate_id=answer.get("certificate_id"),
                )
            record["retire"] = self._to_retire(previous, record)
            write_credentials(self.config.data_dir, record)
        except CredentialError as exc:
            raise HandlerError(f"{exc} (the previous credential stays in use)") from exc
        log.info(
            "new credentials: token %s%s; switching to them",
            record["token_id"],
            f", certificate {record['certificate_id']}" if certificate else "",
        )
        current.use(record)
        link = self.agent.link
        try:
            link.use_credentials(
                record["token"],
                Path(record["client_cert"]) if certificate else None,
                Path(record["client_key"]) if certificate else None,
            )
        except ConfigError as exc:
            raise HandlerError(f"{exc}; the previous credentials were not retired") from exc
        if not link.connected.wait(SWITCH_WAIT_S):
            raise HandlerError(
                f"MQTT did not come back within {SWITCH_WAIT_S:.0f} s with the new credentials; "
                "the previous ones were not retired"
            )
        retired: Any = self._retire(record)
        result: dict[str, Any] = {
            "token_id": record["token_id"],
            "certificate_id": record["certificate_id"],
            "retired": retired,
        }
        if retired is None:
            result["retire_pending"] = record["retire"]
        return result

    def _to_retire(self, previous: dict[str, Any], new: dict[str, Any]) -> dict[str, list[str]]:
        """The ids of the credentials the new ones replace (what the agent knows of them).

        A certificate is retired only when a new one replaces it: MQTT over TLS presents it."""
        tokens = {self.current.token_id}
        if previous.get("kind") == "token":
            tokens.add(previous.get("id"))
        certs: set[str | None] = set()
        if new["certificate_id"] is not None:
            certs.add(self.current.certificate_id)
            if previous.get("kind") == "certificate":
                certs.add(previous.get("id"))
        return {
            "token_ids": sorted(t for t in tokens if t and t != new["token_id"]),
            "certificate_ids": sorted(c for c in certs if c and c != new["certificate_id"]),
        }

    def _retire(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Retire ``record["retire"]`` with the new credential; the server's ``revoked``, or
        None when it failed (kept in credentials.json, tried again on the next connect)."""
        pending = record.get("retire") or {}
        if not pending.get("token_ids") and not pending.get("certificate_ids"):
            answer: Any = {"revoked": {"token_ids": [], "certificate_ids": []}}
        else:
            try:
                answer = self._post(RETIRE_PATH, pending, "retiring the previous credentials")
            except HandlerError as exc:
                log.warning("%s; tried again on the next connect", exc.reason)
                return None
        record.pop("retire", None)
        try:
            write_credentials(self.config.data_dir, record)
        except CredentialError as exc:
            log.warning("%s (the retirement is done)", exc)
        revoked = answer.get("revoked") if isinstance(answer, dict) else None
        log.info("retired the previous credentials: %s", revoked)
        return revoked if isinstance(revoked, dict) else {}

    def retire_pending(self) -> None:
        """Finish a retirement that failed or was cut short (called after every connect)."""
        with self._lock:
            try:
                record = read_credentials(self.config.data_dir)
            except Exception as exc:  # a ConfigError: the agent started with it anyway
                log.warning("credentials.json: %s", exc)
                return
            if record and record.get("retire") and record.get("token") == self.current.token:
                self._retire(record)

    def _post(self, path: str, body: dict[str, Any], doing: str) -> Any:
        current = self.current
        try:
            return post_json(
                self.config,
                path,
                body,
                authorization=current.authorization(),
                client_cert=current.client_cert,
                client_key=current.client_key,
            )
        except ServerRefused as exc:
            raise HandlerError(f"{doing}: the server refused ({exc.status}): {exc.detail}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise HandlerError(f"{doing}: the server cannot be reached ({exc})") from exc


def register_rotation(agent: Agent) -> Rotation:
    """Register ``roost.rotate_credentials`` on ``agent.handlers`` (and finish a retirement cut
    short, after every connect)."""
    rotation = Rotation(agent)
    agent.handlers.command(COMMAND)(rotation.run)
    agent.link.on_connect(lambda: agent.submit(rotation.retire_pending))
    return rotation
