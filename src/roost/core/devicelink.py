"""The path between services and devices, whichever door a device uses.

Services never talk to the MQTT gateway or to HTTP requests directly; they use the process's
:class:`DeviceLink`:

* **device → services.** ``route(topic, handler)`` handles a device's message on a
  :class:`DeviceTopic` its room declared (a state report, a command response, a job update: MQTT;
  the HTTP device routes call the same service functions);
  ``on_subscribe(hook)`` runs after a device subscribes (to send it the current delta or its
  pending jobs); ``on_connection(hook)`` runs when a device's first connection in this process
  opens (``up=True``) and when its last one closes (``up=False``): MQTT and the WebSocket ingest
  door both report (:meth:`connection`).
* **services → device.** ``send(device_pk, topic, payload, qos, on_ack)`` publishes to the
  device's MQTT sessions whose subscriptions match; QoS 1 copies wait in a persistent session
  while the device is away. ``on_ack`` runs once the device acknowledged (PUBACK).
  ``notify(device_pk)`` wakes the device's HTTP long-polls (``await wait(device_pk, timeout)``),
  in this process and, through the bus, in every other one.

A gateway process delivers to the connections it holds. In scale mode a device's connection may
live in another process than the service that sends to it, so two more calls cross the bus
(subject :data:`RELAY_SUBJECT`, one notice to every process, acted on only by the one that holds
the device): ``send_anywhere(device_pk, topic, payload)`` delivers a message there (a state
delta), and ``relay(name, device_pks, args)`` runs the handler a room registered with
``on_relay(name, handler)`` there, for the devices it holds (commands flush their queue, jobs send
the pending list; both read the store, which stays the truth). Delivery over the bus is best
effort: what a lost notice leaves undelivered stays queued in the store and reaches the device
when it next connects, subscribes or polls. A device connected to this process is served here
without any bus hop; on ``memory://`` (one process) nothing is relayed.

This module also holds the contract between capabilities and the MQTT gateway, which knows no
capability: the topics a room declares (:class:`DeviceTopic`), the message its handler gets
(:class:`DevicePublish`), and what the link needs of a gateway (:class:`DeviceGateway`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from roost.bus.base import Bus, Subscription
from roost.core.device_identity import DeviceIdentity
from roost.core.ingest import IngestKind

log = logging.getLogger(__name__)

WAKE_SUBJECT = "roost.devices.wake"
#: Deliveries for a device connected to another process: a JSON header line (``origin``,
#: ``name``, ``pks``, ``args``), a newline, then the raw payload of a relayed MQTT message.
RELAY_SUBJECT = "roost.devices.relay"
#: The relay name of :meth:`DeviceLink.send_anywhere` (rooms use their own dotted names).
SEND_RELAY = "link.send"
#: Devices named per relay notice: 8 bytes each in JSON at most, so a notice stays far under the
#: bus's 1 MiB payload limit even for a job released to a whole fleet.
RELAY_CHUNK = 10_000


@dataclass(frozen=True, slots=True, eq=False)
class DeviceTopic:
    """A topic a device may publish to, declared by the room that handles it.

    Each template is the topic with ``{id}`` for the device's own id and ``+`` for any one
    non-empty level (``devices/{id}/commands/+/response``); one route may have several shapes
    (the default and the named state document). A topic with an ``ingest`` kind carries telemetry
    or events to the ingest service; any other is handled by the handler its service routes to
    it. Topics compare by identity: each is declared once.
    """

    templates: tuple[str, ...]
    ingest: IngestKind | None = None

    @property
    def template(self) -> str:
        """The first shape (for messages and logs)."""
        return self.templates[0]

    @property
    def is_ingest(self) -> bool:
        """True for the telemetry/events topics, which go to the ingest service."""
        return self.ingest is not None


@dataclass(frozen=True, slots=True)
class DevicePublish:
    """A device's PUBLISH on a routed (non-ingest) topic, as a route handler receives it."""

    identity: DeviceIdentity
    topic: str
    payload: bytes
    qos: int
    recv_ns: int


#: ``await handler(message)``; returning means handled (the device gets its acknowledgement),
#: raising ``roost.errors.InvalidInput`` refuses the payload (v5 reason 0x99), ``PermissionDenied``
#: refuses as not authorized (0x87), anything else is an unspecified error (0x80).
RouteHandler = Callable[[DevicePublish], Awaitable[None]]
SubscribeHook = Callable[[DeviceIdentity, str], None]
ActivityHook = Callable[[DeviceIdentity], None]
ConnectionHook = Callable[[DeviceIdentity, bool], Coroutine[Any, Any, None]]
#: ``await handler(device_pks, args)`` in the process holding those devices' connections.
RelayHandler = Callable[[list[int], dict[str, Any]], Coroutine[Any, Any, None]]


class DeviceGateway(Protocol):
    """What the link needs of the process's MQTT gateway (:class:`roost.mqtt.gateway.Gateway`)."""

    def route(self, topic: DeviceTopic, handler: RouteHandler) -> None:
        """Handle device PUBLISHes on ``topic`` with ``handler``."""
        ...

    def on_subscribe(self, hook: SubscribeHook) -> None:
        """Call ``hook(identity, topic_filter)`` after each granted subscription."""
        ...

    def on_connection(self, hook: Callable[[DeviceIdentity, bool], None]) -> None:
        """Call ``hook(identity, up)`` after each CONNACK (up) and when a connection ends."""
        ...

    def deliver(
        self,
        device_pk: int,
        topic: str,
        payload: bytes,
        qos: int,
        on_ack: Callable[[], None] | None = None,
    ) -> bool:
        """Publish to the device's matching sessions; True when one took it."""
        ...

    def would_receive(self, device_pk: int, topic: str) -> bool:
        """Whether a session of the device (connected or kept) would receive ``topic``."""
        ...


class DeviceLink:
    """Services ↔ devices (see the module docstring)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.gateway: DeviceGateway | None = None
        self._origin = secrets.token_hex(6)
        self._routes: dict[DeviceTopic, RouteHandler] = {}
        self._subscribe_hooks: list[SubscribeHook] = []
        self._connection_hooks: list[ConnectionHook] = []
        self._activity_hooks: list[ActivityHook] = []
        self._live: dict[int, int] = {}
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake_sub: Subscription | None = None
        self._relays: dict[str, RelayHandler] = {}
        self._relay_sub: Subscription | None = None

    # -- wiring -------------------------------------------------------------------------------

    def attach(self, gateway: DeviceGateway) -> None:
        """Connect the process's MQTT gateway (done when the gateway is made)."""
        self.gateway = gateway
        for topic, handler in self._routes.items():
            gateway.route(topic, handler)
        gateway.on_subscribe(self._subscribed)
        gateway.on_connection(self.connection)

    def route(self, topic: DeviceTopic, handler: RouteHandler) -> None:
        """Handle device messages on ``topic`` (a state report, command response, job update)."""

        async def handle(message: DevicePublish) -> None:
            self.activity(message.identity)
            await handler(message)

        self._routes[topic] = handle
        if self.gateway is not None:
            self.gateway.route(topic, handle)

    def on_activity(self, hook: ActivityHook) -> None:
        """Call ``hook(identity)`` whenever a device is heard from outside telemetry ingest."""
        self._activity_hooks.append(hook)

    def activity(self, identity: DeviceIdentity) -> None:
        """The device called a door just now (an HTTP device route, an MQTT routed message)."""
        for hook in self._activity_hooks:
            hook(identity)

    def on_subscribe(self, hook: SubscribeHook) -> None:
        """Call ``hook(identity, topic_filter)`` after a device's granted subscription."""
        self._subscribe_hooks.append(hook)

    def on_connection(self, hook: ConnectionHook) -> None:
        """Await ``hook(identity, up)`` when a device's first connection opens / last closes."""
        self._connection_hooks.append(hook)

    def on_relay(self, name: str, handler: RelayHandler) -> None:
        """Run ``handler(device_pks, args)`` here when another process relays ``name`` for
        devices connected to this one (see :meth:`relay`)."""
        self._relays[name] = handler

    async def start(self) -> None:
        """Listen for wake-ups and relayed deliveries from other processes."""
        if self._wake_sub is None:
            self._wake_sub = await self.bus.subscribe(WAKE_SUBJECT, self._on_wake)
        if self._relay_sub is None and not self.bus.in_process:
            self._relay_sub = await self.bus.subscribe(RELAY_SUBJECT, self._on_relay)

    async def close(self) -> None:
        """Stop listening; cancel hook work still running."""
        for sub in (self._wake_sub, self._relay_sub):
            if sub is not None:
                await sub.stop()
        self._wake_sub = self._relay_sub = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- device → services --------------------------------------------------------------------

    def connection(self, identity: DeviceIdentity, up: bool) -> None:
        """A connection of the device opened (``up``) or closed, on any door of this process."""
        pk = identity.device_pk
        count = self._live.get(pk, 0) + (1 if up else -1)
        if count > 0:
            self._live[pk] = count
        else:
            self._live.pop(pk, None)
        if (up and count == 1) or (not up and count <= 0):
            for hook in self._connection_hooks:
                self.spawn(hook(identity, up))

    def is_connected(self, device_pk: int) -> bool:
        """Whether the device holds a connection (MQTT or WebSocket) to this process."""
        return device_pk in self._live

    def subscribed(self, device_pk: int, topic: str) -> bool:
        """Whether an MQTT session of the device here would receive ``topic`` (a cheap check
        before reading the store on a connection: a clean session has no subscription yet)."""
        return self.gateway is not None and self.gateway.would_receive(device_pk, topic)

    def connected_devices(self) -> set[int]:
        """Every device holding a connection to this process."""
        return set(self._live)

    def _subscribed(self, identity: DeviceIdentity, topic_filter: str) -> None:
        for hook in self._subscribe_hooks:
            try:
                hook(identity, topic_filter)
            except Exception:
                log.exception("subscribe hook failed for %s", topic_filter)

    # -- services → device --------------------------------------------------------------------

    def send(
        self,
        device_pk: int,
        topic: str,
        payload: bytes | dict[str, Any],
        qos: int = 1,
        on_ack: Callable[[], None] | None = None,
    ) -> bool:
        """Publish to the device's matching MQTT sessions here; True when one took it."""
        if self.gateway is None:
            return False
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        return self.gateway.deliver(device_pk, topic, data, qos, on_ack)

    def send_anywhere(
        self, device_pk: int, topic: str, payload: bytes | dict[str, Any], qos: int = 1
    ) -> bool:
        """Publish to the device's matching sessions here, or, when it holds no connection
        here, in the process that holds it (over the bus); True when a session here took it."""
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        if self.send(device_pk, topic, data, qos):
            return True
        if device_pk not in self._live:
            self.relay(SEND_RELAY, [device_pk], {"topic": topic, "qos": qos}, data)
        return False

    def relay(
        self, name: str, device_pks: list[int], args: dict[str, Any], payload: bytes = b""
    ) -> None:
        """Ask the processes holding connections of ``device_pks`` (those not connected here)
        to run the ``name`` handler they registered with :meth:`on_relay` for them."""
        if self.bus.in_process:
            return
        remote = [pk for pk in device_pks if pk not in self._live]
        for start in range(0, len(remote), RELAY_CHUNK):
            header = {
                "origin": self._origin,
                "name": name,
                "pks": remote[start : start + RELAY_CHUNK],
                "args": args,
            }
            self.spawn(self._publish_relay(orjson.dumps(header) + b"\n" + payload))

    def notify(self, device_pk: int) -> None:
        """Wake the device's HTTP long-polls, here and in every other process."""
        self._wake(device_pk)
        data = orjson.dumps({"origin": self._origin, "device_pk": device_pk})
        self.spawn(self._publish_wake(data))

    async def wait(self, device_pk: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until :meth:`notify` for the device, or ``timeout``; True when woken."""
        event = asyncio.Event()
        waiters = self._waiters.setdefault(device_pk, set())
        waiters.add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(device_pk, None)

    def _wake(self, device_pk: int) -> None:
        for event in self._waiters.get(device_pk, ()):
            event.set()

    async def _publish_wake(self, data: bytes) -> None:
        try:
            await self.bus.publish(WAKE_SUBJECT, data)
        except Exception as exc:  # the local wake-up happened; others poll again within seconds
            log.warning("could not publish a device wake-up: %s", exc)

    async def _on_wake(self, subject: str, data: bytes) -> None:
        try:
            notice = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if notice.get("origin") != self._origin and isinstance(notice.get("device_pk"), int):
            self._wake(notice["device_pk"])

    async def _publish_relay(self, data: bytes) -> None:
        try:
            await self.bus.publish(RELAY_SUBJECT, data)
        except Exception as exc:  # the store keeps the work; the device gets it on reconnect
            log.warning("could not relay a delivery to another process: %s", exc)

    async def _on_relay(self, subject: str, data: bytes) -> None:
        head, _, payload = data.partition(b"\n")
        try:
            header = orjson.loads(head)
            origin, name, args = header["origin"], header["name"], header["args"]
            pks = [pk for pk in header["pks"] if isinstance(pk, int)]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignored a malformed relayed delivery: %r", data[:200])
            return
        if origin == self._origin or not isinstance(args, dict):
            return
        if name == SEND_RELAY:
            topic, qos = args.get("topic"), args.get("qos")
            if isinstance(topic, str) and qos in (0, 1, 2):
                for pk in pks:
                    self.send(pk, topic, payload, qos)
            return
        handler = self._relays.get(name)
        held = [pk for pk in pks if pk in self._live]
        if handler is not None and held:
            self.spawn(handler(held, args))

    # -- tasks --------------------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, keeping a reference and logging a failure."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("device link task failed", exc_info=task.exception())
