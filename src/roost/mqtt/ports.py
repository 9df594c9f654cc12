"""The small interfaces the MQTT gateway depends on, so its state machine runs without sockets.

* :class:`DeviceAuthenticator` checks a CONNECT's credentials and reports revocations
  (``roost.device_auth`` in a running Roost).
* :class:`IngestPort` takes telemetry and events (``roost.ingest``, see
  :mod:`roost.core.ingest` for the contract of ``try_submit`` / ``submit``).
* :class:`Link` is the byte pipe of one connection: an asyncio transport, a WebSocket, or a
  recording fake in the tests.
* Route handlers (:data:`roost.core.devicelink.RouteHandler`) handle a device PUBLISH on a topic
  a capability declared (:class:`roost.core.devicelink.DeviceTopic`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from roost.core.device_identity import DeviceIdentity
from roost.core.ingest import IngestKind, IngestOutcome


class DeviceAuthenticator(Protocol):
    """Turns MQTT credentials into a device identity."""

    async def authenticate_mqtt(
        self,
        username: str | None,
        password: bytes | None,
        client_certificate: bytes | None = None,
    ) -> DeviceIdentity:
        """The device, or raise AuthenticationFailed (bad credential) / PermissionDenied.

        ``client_certificate`` is the DER certificate the TLS layer verified, if any."""
        ...

    def on_revoked(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(credential_id)`` for each revoked credential; answer an unsubscriber."""
        ...


class IngestPort(Protocol):
    """The ingest service as the gateway uses it."""

    async def device_context(self, identity: DeviceIdentity) -> Any:
        """The device's ingest context, fetched once per connection."""
        ...

    def try_submit(
        self, ctx: Any, kind: IngestKind, payload: bytes, recv_ns: int, msg_id: str | None = None
    ) -> IngestOutcome | None:
        """Take a message synchronously, or None when :meth:`submit` must do slow work."""
        ...

    async def submit(
        self, ctx: Any, kind: IngestKind, payload: bytes, recv_ns: int, msg_id: str | None = None
    ) -> IngestOutcome:
        """Take a message, doing the slow work first."""
        ...

    async def wait_for_capacity(self) -> None:
        """Return once the writer takes messages again (after a ``busy`` outcome)."""
        ...

    async def record_refusal(
        self, ctx: Any, topic: str, errors: list[dict[str, Any]], recv_ns: int
    ) -> None:
        """Record a refused message as an event of the device, so it is visible in the API, and
        tell the device why (the ingest room publishes the reasons on a topic it declared)."""
        ...


class Link(Protocol):
    """One connection's byte pipe, as the session state machine drives it."""

    def write(self, data: bytes) -> None:
        """Queue bytes for the peer."""
        ...

    def close(self) -> None:
        """Flush what is queued, then close; the owner later reports the connection lost."""
        ...

    def pause_reading(self) -> None:
        """Stop delivering received bytes (push back on the peer)."""
        ...

    def resume_reading(self) -> None:
        """Deliver received bytes again."""
        ...

    def peer_certificate(self) -> bytes | None:
        """The client certificate (DER) the TLS layer verified, or None."""
        ...
