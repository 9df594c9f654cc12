"""Offline bundles: what devices need to join, in one file (a USB stick carried into a store).

A bundle names the server's endpoints, CA certificate and OTA signing key (an agent pins it from
the stick) and, for each device, a fresh device token and SAS key; devices that do not exist yet
are created. ``roost provision bundle`` and
``POST /api/v1/provisioning/bundles`` (the console's Bundles page) both make it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from roost.core.access import Actor, Role
from roost.credentials.certificates.service import CertificateService
from roost.credentials.keys import sas
from roost.credentials.keys.service import KeyService
from roost.credentials.tokens.service import CredentialService
from roost.errors import InvalidInput, NotFound
from roost.inventory.devices.service import DeviceService
from roost.inventory.service import check_id
from roost.ota.artifacts.service import ArtifactService

BUNDLE_FORMAT = "roost-bundle/1"
# Devices one bundle may hold: a store's worth, and a file an operator can still read.
MAX_BUNDLE_DEVICES = 1000
# The name the credentials of a bundle carry (the device's credential lists show it).
CREDENTIAL_NAME = "offline bundle"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where devices reach a server: its API URL, MQTT host and ports (None: turned off)."""

    api_url: str
    mqtt_host: str
    mqtt_port: int | None
    mqtts_port: int | None
    https_url: str | None


class BundleServices(Protocol):
    """What making a bundle uses of the running Roost."""

    @property
    def devices(self) -> DeviceService: ...

    @property
    def credentials(self) -> CredentialService: ...

    @property
    def keys(self) -> KeyService: ...

    @property
    def certificates(self) -> CertificateService: ...

    @property
    def artifacts(self) -> ArtifactService: ...


def numbered_ids(prefix: str, count: int) -> list[str]:
    """``count`` device ids ``{prefix}001`` … (the number at least 3 digits wide)."""
    if not 1 <= count <= MAX_BUNDLE_DEVICES:
        raise InvalidInput(f"count must be 1 to {MAX_BUNDLE_DEVICES}")
    width = max(3, len(str(count)))
    return [f"{prefix}{n:0{width}d}" for n in range(1, count + 1)]


async def make_bundle(
    roost: BundleServices,
    actor: Actor,
    device_ids: list[str],
    *,
    site_id: str | None,
    group_ids: list[str],
    endpoints: Endpoints,
) -> dict[str, Any]:
    """The bundle of ``device_ids`` (created in ``site_id`` and ``group_ids`` when missing)."""
    actor.require(Role.OPERATOR)
    if not device_ids:
        raise InvalidInput("a bundle needs at least one device")
    if len(device_ids) > MAX_BUNDLE_DEVICES:
        raise InvalidInput(f"a bundle holds at most {MAX_BUNDLE_DEVICES} devices")
    if len(set(device_ids)) != len(device_ids):
        raise InvalidInput("a device is named twice")
    for device_id in device_ids:
        check_id(device_id, "device")
    # Every missing device is made before any credential is issued, so a refused device (an
    # unknown site or group) leaves no fresh secrets behind on the devices before it.
    created: dict[str, bool] = {}
    for device_id in device_ids:
        try:
            await roost.devices.get(actor, device_id)
            created[device_id] = False
        except NotFound:
            await roost.devices.create(
                actor, {"id": device_id, "site_id": site_id, "group_ids": group_ids}
            )
            created[device_id] = True
    entries = []
    for device_id in device_ids:
        token_row, token = await roost.credentials.issue_token(
            actor, device_id, name=CREDENTIAL_NAME
        )
        key_row, key = await roost.keys.create_key(actor, device_id, CREDENTIAL_NAME)
        entries.append(
            {
                "device_id": device_id,
                "created": created[device_id],
                "token_id": token_row["id"],
                "token": token,
                "key_id": key_row["id"],
                "key": key,
                "sas_resource": sas.device_resource(actor.tenant_id, device_id),
            }
        )
    signing_key = await roost.artifacts.signing_key_document()
    return {
        "format": BUNDLE_FORMAT,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "tenant_id": actor.tenant_id,
        "api_url": endpoints.api_url,
        "https_url": endpoints.https_url,
        "mqtt": {
            "host": endpoints.mqtt_host,
            "port": endpoints.mqtt_port,
            "tls_port": endpoints.mqtts_port,
        },
        "ca_certificate": await roost.certificates.ca_pem(),
        "ota_signing_key": {
            "id": signing_key["key_id"],
            "algorithm": signing_key["algorithm"],
            "public_key": signing_key["public_key"],
        },
        "devices": entries,
    }
