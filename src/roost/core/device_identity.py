"""Who a device is once a gateway has checked its credential."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """An authenticated device: what every door knows about the caller after auth.

    ``credential_id`` names the token or certificate used, so that revoking it can close the
    sessions that were opened with it.
    """

    tenant_id: str
    device_id: str
    device_pk: int
    credential_id: str
    expires_at: datetime | None = None


# -- credentials as a device presents them ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BearerToken:
    """A device token (signed JWT) from ``Authorization: Bearer`` or an MQTT password."""

    text: str


@dataclass(frozen=True, slots=True)
class SasToken:
    """``SharedAccessSignature sr=…&sig=…&se=…`` signed with a device's symmetric key."""

    text: str


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The X.509 certificate (DER) a TLS client presented and the TLS layer checked."""

    der: bytes


PresentedCredential = BearerToken | SasToken | ClientCertificate

SAS_PREFIX = "SharedAccessSignature "
#: Where the HTTP door finds a verified client certificate (DER bytes) in an ASGI scope: put there
#: by the HTTPS listener, or from a trusted proxy's header (see roost.http).
CLIENT_CERTIFICATE_SCOPE_KEY = "roost.client_certificate"
