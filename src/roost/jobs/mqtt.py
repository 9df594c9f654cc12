"""The MQTT door of jobs: updates and requests up, notifications and answers down.

Device side (DESIGN.md §3 "Message formats"); the HTTP device routes call the same service
functions:

* ``devices/{id}/jobs/notify`` ← ``{"jobs": [{job_id, status, document, version, attempt, …}]}``,
  the device's pending executions (IN_PROGRESS, then released QUEUED), sent on every change, on
  connect, on a subscription covering the topic, and as the answer to ``devices/{id}/jobs/get``.
* ``devices/{id}/jobs/start-next`` → ``…/start-next/accepted`` ``{"execution": {…} | null}``.
* ``devices/{id}/jobs/{job_id}/update`` → ``…/update/accepted`` or ``…/update/rejected``
  ``{"code", "message"}``. A malformed update is also refused with MQTT 5 PUBACK 0x99; a refusal
  by the state machine, a version mismatch or an unknown job is acknowledged normally.

Notifications for devices connected to another process (scale mode) are relayed over the bus
(:data:`NOTIFY_RELAY`): the process holding the connection reads the pending lists and sends them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import orjson
import sqlalchemy as sa

from roost.core.device_identity import DeviceIdentity
from roost.core.devicelink import DevicePublish, DeviceTopic
from roost.core.json import IntegerOutOfRange
from roost.core.json import loads as load_json
from roost.errors import Conflict, InvalidInput, NotFound, RoostError
from roost.inventory.tables import devices
from roost.jobs import store
from roost.mqtt.topics import topic_matches

if TYPE_CHECKING:
    from roost.jobs.service import JobService

#: An update of the device's execution of job ``+``.
UPDATE: Final = DeviceTopic(("devices/{id}/jobs/+/update",))
#: A request for the pending list (answered on ``jobs/notify``).
GET: Final = DeviceTopic(("devices/{id}/jobs/get",))
#: Start the next pending execution (answered on ``jobs/start-next/accepted``).
START_NEXT: Final = DeviceTopic(("devices/{id}/jobs/start-next",))

TOPICS: Final = (UPDATE, GET, START_NEXT)
#: The relay asking the process that holds devices' connections to send their pending lists.
NOTIFY_RELAY: Final = "jobs.notify"
#: Where the server publishes notifications and the answers to updates and requests.
DOWNLINK: Final = "devices/{id}/jobs"


class JobsOverMQTT:
    """Jobs over the device link (see the module docstring); built by the service."""

    def __init__(self, service: JobService) -> None:
        self.service = service
        self.db = service.db
        self.link = service.deps.link

    def register(self) -> None:
        """Handle updates, requests, subscriptions and (re)connections on the link (server only)."""
        self.link.route(UPDATE, self._on_update)
        self.link.route(GET, self._on_get)
        self.link.route(START_NEXT, self._on_start_next)
        self.link.on_subscribe(self._on_subscribe)
        self.link.on_connection(self._on_connection)
        self.link.on_relay(NOTIFY_RELAY, self._on_notify_relay)

    # -- notifications down -------------------------------------------------------------------

    async def notify(self, pks: Iterable[int]) -> None:
        """Send each connected device its pending list (here, or relayed to the process that
        holds its connection); wake HTTP long-polls of all of them."""
        wanted = sorted(set(pks))
        link = self.link
        for pk in wanted:
            link.notify(pk)
        connected = [pk for pk in wanted if link.is_connected(pk)]
        if len(connected) < len(wanted):
            link.relay(NOTIFY_RELAY, [pk for pk in wanted if not link.is_connected(pk)], {})
        await self._send_lists(connected)

    async def _on_notify_relay(self, pks: list[int], args: dict[str, Any]) -> None:
        await self._send_lists(pks)

    async def _send_lists(self, connected: list[int]) -> None:
        """Send each of these devices (connected here) its pending list."""
        link = self.link
        if not connected:
            return
        async with self.db.read() as conn:
            ids: dict[int, str] = {}
            for chunk in store.chunks(connected):
                ids.update(
                    (pk, device_id)
                    for pk, device_id in await conn.execute(
                        sa.select(devices.c.pk, devices.c.id).where(devices.c.pk.in_(chunk))
                    )
                )
            lists = await store.pending_lists(conn, connected)
        for pk, device_id in ids.items():
            link.send(pk, f"devices/{device_id}/jobs/notify", {"jobs": lists.get(pk, [])}, qos=1)

    def _on_subscribe(self, identity: DeviceIdentity, topic_filter: str) -> None:
        if topic_matches(topic_filter, f"devices/{identity.device_id}/jobs/notify"):
            self.link.spawn(self.notify([identity.device_pk]))

    async def _on_connection(self, identity: DeviceIdentity, up: bool) -> None:
        # Only a session that resumed with a subscription to its notify topic needs the list
        # now; a new one gets it when it subscribes (no store read per connection otherwise).
        topic = f"devices/{identity.device_id}/jobs/notify"
        if up and self.link.subscribed(identity.device_pk, topic):
            await self.notify([identity.device_pk])

    # -- updates and requests up --------------------------------------------------------------

    async def _on_update(self, message: DevicePublish) -> None:
        identity = message.identity
        job_id = message.topic.split("/")[3]
        base = f"devices/{identity.device_id}/jobs/{job_id}/update"
        refusal: InvalidInput | None = None
        try:
            raw = load_json(message.payload)
        except orjson.JSONDecodeError:
            raw, refusal = None, InvalidInput("the update is not JSON")
        except IntegerOutOfRange as exc:
            raw, refusal = None, exc
        token = raw.get("client_token") if isinstance(raw, dict) else None
        try:
            if refusal is not None:
                raise refusal
            answer = await self.service.update(identity, job_id, raw)
        except (InvalidInput, Conflict, NotFound) as exc:
            self._reject(identity, base, exc, token if isinstance(token, str) else None)
            if isinstance(exc, InvalidInput):
                raise
            return
        self.link.send(identity.device_pk, f"{base}/accepted", answer)

    async def _on_start_next(self, message: DevicePublish) -> None:
        identity = message.identity
        base = f"devices/{identity.device_id}/jobs/start-next"
        raw: Any = None
        try:
            if message.payload.strip():
                try:
                    raw = load_json(message.payload)
                except orjson.JSONDecodeError:
                    raise InvalidInput("the start-next request is not JSON") from None
            answer = await self.service.start_next(identity, raw)
        except (InvalidInput, Conflict, NotFound) as exc:
            token = raw.get("client_token") if isinstance(raw, dict) else None
            self._reject(identity, base, exc, token if isinstance(token, str) else None)
            if isinstance(exc, InvalidInput):
                raise
            return
        self.link.send(identity.device_pk, f"{base}/accepted", answer)

    async def _on_get(self, message: DevicePublish) -> None:
        await self.notify([message.identity.device_pk])

    def _reject(
        self, identity: DeviceIdentity, base: str, exc: RoostError, token: str | None
    ) -> None:
        if isinstance(exc, NotFound):
            code = "ResourceNotFound"
        elif isinstance(exc, Conflict):
            code = str(exc.extra.get("code") or "Conflict")
        else:
            code = "InvalidRequest"
        body: dict[str, Any] = {"code": code, "message": exc.detail}
        if token is not None:
            body["client_token"] = token
        self.link.send(identity.device_pk, f"{base}/rejected", body)
