"""What the DDI controller needs of the other rooms, as small Protocols.

The deployments room answers actions (:class:`ActionPort`), the artifacts room artifacts and
their bytes (:class:`ArtifactPort`), the state room the ``ddi`` attributes (:class:`StatePort`).

An *action* is a dictionary with at least ``action_id`` (int), ``deployment_id``,
``execution_status``, ``artifacts`` (each with its ``id``), ``step``, ``step_details`` (dict or
None), ``maintenance`` (the deployment's windows, or None) and ``cancel_requested`` (True while a
cancellation waits for the device's acknowledgement): what
:meth:`roost.ota.deployments.service.DeploymentService.action_for_device` answers.

An *artifact row* has ``id``, ``module_id``, ``name``,
``version``, ``type``, ``filename``, ``size``, ``sha1``, ``md5`` and ``sha256``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from fastapi import Request, Response

from roost.core.device_identity import DeviceIdentity


class ActionPort(Protocol):
    """A device's deployment actions (the deployments room)."""

    async def device_actions(self, identity: DeviceIdentity) -> list[dict[str, Any]]:
        """The device's open actions, oldest first (released, not finished, or canceled and not
        acknowledged)."""
        ...

    async def action_for_device(self, identity: DeviceIdentity, action_id: int) -> dict[str, Any]:
        """One of the device's actions; NotFound for an unknown one or another device's."""
        ...

    async def report(
        self,
        identity: DeviceIdentity,
        action_id: int,
        status: str,
        *,
        step: str | None = None,
        details: Mapping[str, Any] | None = None,
        version: str | None = None,
        progress: float | None = None,
    ) -> dict[str, Any]:
        """Apply a device's report: IN_PROGRESS (with a step), SUCCEEDED (with the version),
        FAILED, REJECTED, or CANCELED (acknowledges a cancellation)."""
        ...


class ArtifactPort(Protocol):
    """Artifacts as a device of their tenant sees them (the artifacts room)."""

    async def for_device(
        self, identity: DeviceIdentity, artifact_ids: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The artifact rows, in the order given (missing ones left out)."""
        ...

    async def by_module(self, identity: DeviceIdentity, module_id: int) -> dict[str, Any]:
        """The artifact of a module id in the device's tenant; NotFound otherwise."""
        ...

    async def stream(
        self, request: Request, tenant_id: str, artifact_id: str, device_id: str | None
    ) -> Response:
        """The artifact's bytes (Range, ETag, HEAD), counted for the device."""
        ...


class StatePort(Protocol):
    """A device's named states (the state room)."""

    async def device_get(self, identity: DeviceIdentity, name: str = ...) -> dict[str, Any]:
        """The device's document of that name; NotFound when it has none."""
        ...

    async def report(
        self, identity: DeviceIdentity, fields: Any, name: str = ...
    ) -> dict[str, Any]:
        """Merge reported fields (``None`` deletes one)."""
        ...
