"""Client certificates forwarded by a trusted TLS proxy (``ROOST_CLIENT_CERT_HEADER``).

A proxy in front of Roost ends TLS, asks devices for a client certificate, and passes it on in a
header as URL-encoded PEM (nginx: ``proxy_set_header X-Client-Cert $ssl_client_escaped_cert;``).
:class:`ForwardedClientCertificate` puts its DER into the ASGI scope under
:data:`~roost.core.device_identity.CLIENT_CERTIFICATE_SCOPE_KEY`, where the device doors look for
it; the certificate verifier then checks the CA signature, validity and revocation itself, so a
header that a client made up proves nothing. The proxy must always set (or clear) the header, so
that a client cannot send its own through it.

Without a proxy, ``ROOST_HTTPS_PORT`` opens a direct HTTPS listener (uvicorn with TLS and optional
client certificates); :class:`ClientCertificateHttpProtocol` puts the certificate TLS verified into
the scope in the same place.
"""

from __future__ import annotations

import asyncio
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from roost.core.device_identity import CLIENT_CERTIFICATE_SCOPE_KEY
from roost.credentials.certificates.ca import MAX_CERTIFICATE_BYTES, pem_to_der
from roost.errors import InvalidInput
from roost.http.server import HeadLimitedHttpProtocol


def forwarded_certificate_der(value: bytes) -> bytes:
    """The DER of a forwarded header value (URL-encoded PEM); what cannot be read is passed on
    as it is, so that the verifier refuses it as a malformed certificate (401)."""
    raw = unquote_to_bytes(value)[: MAX_CERTIFICATE_BYTES * 2]
    try:
        return pem_to_der(raw)
    except InvalidInput:
        return raw


class ForwardedClientCertificate:
    """ASGI middleware: the trusted proxy's certificate header into the scope (as DER)."""

    def __init__(self, app: ASGIApp, header: str) -> None:
        self.app = app
        self.header = header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            for name, value in scope.get("headers", ()):
                if name == self.header:
                    if value and value != b"-":  # nginx sends "" without a certificate
                        scope = {
                            **scope,
                            CLIENT_CERTIFICATE_SCOPE_KEY: forwarded_certificate_der(value),
                        }
                    break
        await self.app(scope, receive, send)


def peer_certificate_der(transport: asyncio.BaseTransport) -> bytes | None:
    """The client certificate a TLS transport verified (DER), or None."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    return der or None


class ClientCertificateHttpProtocol(HeadLimitedHttpProtocol):
    """Roost's HTTP/1.1 protocol (uvicorn's, with request-head limits) that puts the TLS client
    certificate into every request's scope (the direct HTTPS listener, ``ROOST_HTTPS_PORT``).

    Only plain HTTP requests carry it: WebSocket upgrades on this listener are handed to
    uvicorn's WebSocket protocol, which builds its own scope (devices on WebSocket with a
    certificate go through a proxy, or use MQTT over TLS).
    """

    _peer_der: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Remember the connection's client certificate (the handshake is done by now)."""
        self._peer_der = peer_certificate_der(transport)
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        """Start a request's scope, with the certificate in it."""
        super().on_message_begin()
        if self._peer_der is not None:
            self.scope[CLIENT_CERTIFICATE_SCOPE_KEY] = self._peer_der  # type: ignore[literal-required]
