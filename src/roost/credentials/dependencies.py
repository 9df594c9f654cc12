"""The device side of every HTTP door: which device is calling, under the brute-force limit.

Every device route (telemetry and events, state, commands, jobs, the WebSocket ingest stream)
takes its caller from :data:`DeviceDep` (or :func:`authenticate_device` at a WebSocket upgrade):
a bearer token, a SAS token or a client certificate, checked by the device authenticator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from roost.core.device_identity import (
    CLIENT_CERTIFICATE_SCOPE_KEY,
    SAS_PREFIX,
    BearerToken,
    ClientCertificate,
    DeviceIdentity,
    PresentedCredential,
    SasToken,
)
from roost.core.devicelink import DeviceLink
from roost.core.limits import DeviceLimits
from roost.credentials.authenticator import DeviceAuthenticator
from roost.errors import AuthenticationFailed, PermissionDenied
from roost.http.deps import get_roost

_device_bearer = HTTPBearer(
    auto_error=False,
    description="A device token (POST …/tokens); or send `Authorization: SharedAccessSignature "
    "sr=…&sig=…&se=…`, or a client certificate",
)


class DeviceDoors(Protocol):
    """What the device doors use of the running Roost."""

    @property
    def device_auth(self) -> DeviceAuthenticator: ...

    @property
    def limits(self) -> DeviceLimits: ...

    @property
    def link(self) -> DeviceLink: ...


def presented_credential(
    authorization: str | None, scope: Mapping[str, Any], query_token: str | None = None
) -> PresentedCredential:
    """What a device presents over HTTP: a bearer token, a SAS token, or a client certificate
    (verified by the HTTPS listener or a trusted proxy, see CLIENT_CERTIFICATE_SCOPE_KEY)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return BearerToken(value.strip())
        if authorization.startswith(SAS_PREFIX):
            return SasToken(authorization)
        raise AuthenticationFailed(
            "Authorization must be 'Bearer <device token>' or 'SharedAccessSignature sr=…'"
        )
    if query_token:
        return BearerToken(query_token)
    der = scope.get(CLIENT_CERTIFICATE_SCOPE_KEY)
    if isinstance(der, bytes) and der:
        return ClientCertificate(der)
    raise AuthenticationFailed(
        "send Authorization: Bearer <device token> (or a SharedAccessSignature), "
        "or connect with a client certificate"
    )


def websocket_credential(websocket: WebSocket) -> PresentedCredential:
    """A device's credential at upgrade: the Authorization header, ?token= (browsers), or a
    client certificate."""
    return presented_credential(
        websocket.headers.get("authorization"),
        websocket.scope,
        websocket.query_params.get("token") or None,
    )


async def authenticate_device(
    roost: DeviceDoors, presented: Callable[[], PresentedCredential], address: str
) -> DeviceIdentity:
    """Check a device credential from ``address`` under the brute-force limit: refused (429)
    while the address is over it, and a refusal (401/403) counts against the address."""
    roost.limits.check_source(address)
    try:
        return await roost.device_auth.authenticate(presented())
    except (AuthenticationFailed, PermissionDenied):
        roost.limits.credential_failed(address)
        raise


async def device_identity(
    roost: Annotated[DeviceDoors, Depends(get_roost)],
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_device_bearer)],
) -> DeviceIdentity:
    """The calling device, from its credential (see :func:`presented_credential`).

    An address over its failed-credential limit gets 429 without its credential being looked
    at; every refused credential counts against its address (see :mod:`roost.core.limits`).
    """
    identity = await authenticate_device(
        roost,
        lambda: presented_credential(request.headers.get("authorization"), request.scope),
        request.client.host if request.client else "",
    )
    roost.link.activity(identity)  # presence: any device call is a sign of life
    return identity


DeviceDep = Annotated[DeviceIdentity, Depends(device_identity)]
