"""The asyncio MQTT listener: moves bytes between sockets and the sans-IO sessions, nothing more.

Built for density: one :class:`MQTTConnection` (an ``asyncio.BufferedProtocol`` with
``__slots__``) per socket, no task and no timer per connection (the gateway sweeps keep alives
once a second), and the transport's own flow control (``pause_writing``) pauses reading when a
client does not read what we send (:mod:`roost.mqtt.flow` says when else reading pauses). The
listener is created in one place, :meth:`MQTTServer.start`, which takes an ``ssl.SSLContext``
for MQTT over TLS (8883) when client certificates arrive.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from typing import TYPE_CHECKING, Any, Final, cast

from roost.mqtt.flow import READ_BUFFER_BYTES

if TYPE_CHECKING:
    from roost.mqtt.gateway import Gateway
    from roost.mqtt.session import MQTTSession

log = logging.getLogger(__name__)

#: Pending connections the kernel queues for accept(): a fleet reconnecting after an outage
#: arrives in bursts of thousands.
LISTEN_BACKLOG: Final = 4096
#: Outgoing bytes buffered per connection before reading from it pauses; a few hundred
#: acknowledgements or one large command, and small enough that 10,000 slow readers stay cheap.
WRITE_HIGH_WATER: Final = 64 * 1024


class _ReadBuffer(threading.local):
    """The buffer sockets are read into, one per event loop thread: a loop reads one socket at a
    time and its bytes are copied out before the next read, so its connections share it (a
    buffer per connection would cost 10,000 idle connections 320 MB)."""

    def __init__(self) -> None:
        self.view = memoryview(bytearray(READ_BUFFER_BYTES))


_READ_BUFFER: Final = _ReadBuffer()


def tls_server_context(cert_file: str, key_file: str, ca_pem: str) -> ssl.SSLContext:
    """The TLS context of MQTT over TLS: our server certificate, and client certificates asked
    for but optional (``CERT_OPTIONAL``), checked against the platform CA when sent.

    A device may then connect with a client certificate alone, or with a token or SAS token as
    its password over an encrypted connection. A certificate from another CA fails the
    handshake; revocation and the device's identity are the authenticator's (at CONNECT).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=ca_pem)
    return context


class MQTTConnection(asyncio.BufferedProtocol):
    """One socket: feeds its session and is the session's :class:`~roost.mqtt.ports.Link`.

    A buffered protocol, so that a read takes at most ``READ_BUFFER_BYTES`` (see
    :mod:`roost.mqtt.flow`: that is what a paused connection may hold decoded).
    """

    __slots__ = ("_gateway", "_session", "_transport")

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._transport: asyncio.Transport | None = None
        self._session: MQTTSession | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer: Any = transport.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self._session = self._gateway.open(self, where)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_BUFFER.view

    def buffer_updated(self, nbytes: int) -> None:
        session = self._session
        if session is not None:
            session.feed(_READ_BUFFER.view[:nbytes].tobytes())

    def eof_received(self) -> bool:
        return False  # half-closed by the peer: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.connection_lost()

    def pause_writing(self) -> None:
        if self._session is not None:
            self._session.writing_paused(True)

    def resume_writing(self) -> None:
        if self._session is not None:
            self._session.writing_paused(False)

    # -- Link ---------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue bytes on the socket."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        """Close once what is queued has been sent."""
        if self._transport is not None:
            self._transport.close()

    def pause_reading(self) -> None:
        """Stop reading from the socket."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_reading(self) -> None:
        """Read from the socket again."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def peer_certificate(self) -> bytes | None:
        """The client certificate TLS verified (DER), or None (plain TCP, or none sent)."""
        transport = self._transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is None:
            return None
        der: bytes | None = ssl_object.getpeercert(binary_form=True)
        return der or None


class MQTTServer:
    """The MQTT listener of one address and port (TCP, or TLS given an ``ssl.SSLContext``)."""

    def __init__(
        self, gateway: Gateway, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and listen (port 0 picks a free port; :attr:`port` then tells which)."""
        self.gateway.start()
        loop = asyncio.get_running_loop()
        gateway = self.gateway
        self._server = await loop.create_server(
            lambda: MQTTConnection(gateway),
            self.host,
            self.port,
            ssl=self.ssl_context,
            backlog=LISTEN_BACKLOG,
            reuse_address=True,
        )
        sockets = self._server.sockets
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info(
            "MQTT listening on %s:%s%s", self.host, self.port, " (TLS)" if self.ssl_context else ""
        )

    async def close(self) -> None:
        """Stop accepting connections (the gateway closes the live ones)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
