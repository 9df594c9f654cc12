"""The DDI ports (:mod:`roost.ota.ddi.ports`) over the artifact service.

The deployment service is the action port as it is (its device side was made for every door);
artifacts need their stored rows (sha1, md5, module id), which the device view leaves out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request, Response

from roost.core.device_identity import DeviceIdentity
from roost.errors import NotFound
from roost.ota.artifacts.service import ArtifactService


class RoostArtifacts:
    """:class:`~roost.ota.ddi.ports.ArtifactPort` over the artifact service."""

    def __init__(self, artifacts: ArtifactService) -> None:
        self.artifacts = artifacts

    async def for_device(
        self, identity: DeviceIdentity, artifact_ids: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The rows of the artifacts, in order (an artifact deleted since is left out)."""
        rows = []
        for artifact_id in artifact_ids:
            try:
                rows.append(await self.artifacts.row(identity.tenant_id, artifact_id))
            except NotFound:
                continue
        return rows

    async def by_module(self, identity: DeviceIdentity, module_id: int) -> dict[str, Any]:
        """The artifact numbered ``module_id`` in the device's tenant, if it was sent to the
        device (404 otherwise, as for an unknown module)."""
        row = await self.artifacts.row_by_module(identity.tenant_id, module_id)
        try:
            await self.artifacts.check_sent(identity.tenant_id, row["id"], identity.device_id)
        except NotFound as exc:
            raise NotFound(f"no software module {module_id}") from exc
        return row

    async def stream(
        self, request: Request, tenant_id: str, artifact_id: str, device_id: str | None
    ) -> Response:
        """The artifact's bytes, through the one download path of every door."""
        return await self.artifacts.stream(request, tenant_id, artifact_id, device_id)
