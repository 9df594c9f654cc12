"""MQTT over WebSocket at ``/mqtt``: a Starlette endpoint feeding the same sans-IO sessions.

The client offers the ``mqtt`` subprotocol (MQTT 5.0 spec section 6; the old ``mqttv3.1`` is
accepted too); each binary WebSocket message carries any slice of the MQTT byte stream. A text
message is a protocol violation and closes the connection. ASGI gives every WebSocket its own
task anyway, so here reading is a loop; writes are gathered by a small sender task so that
acknowledgements completing together leave in one message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from starlette.websockets import WebSocket, WebSocketDisconnect

from roost.core.device_identity import CLIENT_CERTIFICATE_SCOPE_KEY

if TYPE_CHECKING:
    from roost.mqtt.gateway import Gateway
    from roost.mqtt.session import MQTTSession

log = logging.getLogger(__name__)

SUBPROTOCOLS: Final = ("mqtt", "mqttv3.1")
#: Outgoing bytes queued for one WebSocket before reading from it pauses (as for TCP).
WRITE_HIGH_WATER: Final = 64 * 1024
#: WebSocket close code for a peer that broke the protocol (RFC 6455).
CLOSE_PROTOCOL_ERROR: Final = 1002


class WebSocketLink:
    """A WebSocket as a session's :class:`~roost.mqtt.ports.Link`."""

    __slots__ = ("_closing", "_pending", "_queued", "_readable", "_wakeup", "session", "websocket")

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.session: MQTTSession | None = None
        self._pending: list[bytes] = []
        self._queued = 0
        self._closing = False
        self._wakeup = asyncio.Event()
        self._readable = asyncio.Event()
        self._readable.set()

    def write(self, data: bytes) -> None:
        """Queue bytes for the sender task."""
        if self._closing:
            return
        self._pending.append(data)
        self._queued += len(data)
        self._wakeup.set()
        if self._queued > WRITE_HIGH_WATER and self.session is not None:
            self.session.writing_paused(True)

    def close(self) -> None:
        """Send what is queued, then close the WebSocket."""
        self._closing = True
        self._wakeup.set()
        self._readable.set()

    def pause_reading(self) -> None:
        """Stop taking messages from the WebSocket."""
        self._readable.clear()

    def resume_reading(self) -> None:
        """Take messages again."""
        self._readable.set()

    def peer_certificate(self) -> bytes | None:
        """The client certificate of the HTTPS connection, when the HTTP door verified one."""
        der = self.websocket.scope.get(CLIENT_CERTIFICATE_SCOPE_KEY)
        return der if isinstance(der, bytes) else None

    async def sender(self) -> None:
        """Send queued bytes, one WebSocket message per batch; close when asked to."""
        websocket = self.websocket
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                if self._pending:
                    data = b"".join(self._pending)
                    self._pending.clear()
                    self._queued = 0
                    await websocket.send_bytes(data)
                    if self.session is not None:
                        self.session.writing_paused(False)
                if self._closing:
                    await websocket.close()
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the peer is gone; the reader sees it too

    async def reader(self, session: MQTTSession) -> None:
        """Feed received binary messages to the session until either side closes."""
        websocket = self.websocket
        while not self._closing:
            await self._readable.wait()
            if self._closing:
                return
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                log.info("%r: text frame on MQTT over WebSocket; closing", session)
                self._closing = True
                await websocket.close(CLOSE_PROTOCOL_ERROR)
                return
            session.feed(data)


def mqtt_websocket(gateway_of: Callable[[], Gateway]) -> Callable[[WebSocket], Awaitable[None]]:
    """The ``/mqtt`` endpoint (MQTT 3.1.1 / 5.0 over WebSocket) of ``gateway_of()``'s gateway."""

    async def endpoint(websocket: WebSocket) -> None:
        await serve_websocket(gateway_of(), websocket)

    return endpoint


async def serve_websocket(gateway: Gateway, websocket: WebSocket) -> None:
    """Serve one MQTT-over-WebSocket connection with ``gateway``."""
    offered = websocket.scope.get("subprotocols") or []
    chosen = next((name for name in offered if name in SUBPROTOCOLS), None)
    if chosen is None:
        await websocket.close(CLOSE_PROTOCOL_ERROR)
        return
    gateway.start()
    await websocket.accept(subprotocol=chosen)
    client = websocket.client
    link = WebSocketLink(websocket)
    session = gateway.open(link, f"ws:{client.host}:{client.port}" if client else "ws")
    link.session = session
    sender = asyncio.get_running_loop().create_task(link.sender())
    try:
        await link.reader(session)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        session.connection_lost()
        link.close()
        try:
            await asyncio.wait_for(sender, timeout=5)
        except (TimeoutError, asyncio.CancelledError):
            sender.cancel()
