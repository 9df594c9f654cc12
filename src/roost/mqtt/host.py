"""What a session needs of the gateway that hosts it: its limits and its services.

:class:`~roost.mqtt.session.MQTTSession` (and :mod:`~roost.mqtt.inbound`) talk to their gateway
only through :class:`SessionHost`, so the session never imports the gateway back;
:class:`~roost.mqtt.gateway.Gateway` is the one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from roost.core.devicelink import RouteHandler
from roost.mqtt.decoder import MQTTDecoder
from roost.mqtt.packets import Properties
from roost.mqtt.ports import DeviceAuthenticator, IngestPort
from roost.mqtt.topics import DeviceTopics

if TYPE_CHECKING:
    from roost.config import Settings
    from roost.core.device_identity import DeviceIdentity
    from roost.core.devicelink import DeviceTopic
    from roost.mqtt.session import MQTTSession


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The gateway's limits; :meth:`from_settings` takes the tunable ones from Roost settings."""

    max_packet_size: int = 1024 * 1024
    max_keep_alive_s: int = 1200
    max_session_expiry_s: int = 24 * 3600
    max_queued_messages: int = 100
    # Unacknowledged QoS 1/2 PUBLISHes a client may have in flight to us (v5 Receive Maximum).
    # 256 covers a group commit's few ms at thousands of messages/s per connection, and bounds
    # the acknowledgements one connection can make us hold.
    receive_maximum: int = 256
    # Our in-flight window towards a 3.1.1 client (it cannot tell us its own).
    outbound_inflight_v311: int = 20
    # Topic aliases a v5 client may set up: a handful covers a device's few uplink topics.
    topic_alias_maximum: int = 8
    # Subscriptions per session: a device needs four or five.
    max_subscriptions: int = 32
    # MQTT 3.1.1 asks servers to allow 23 characters; 256 fits any UUID-style scheme.
    max_client_id_length: int = 256
    # A connection that has not sent CONNECT by then is closed (slowloris guard).
    connect_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayConfig:
        """The configuration a Roost process runs with."""
        return cls(
            max_packet_size=settings.mqtt_max_packet_bytes,
            max_keep_alive_s=settings.mqtt_max_keepalive_s,
            max_session_expiry_s=settings.mqtt_max_session_expiry_s,
            max_queued_messages=settings.mqtt_max_queued_messages,
        )


class SessionHost(Protocol):
    """The gateway as its sessions see it."""

    authenticator: DeviceAuthenticator
    ingest: IngestPort
    config: GatewayConfig
    topics: DeviceTopics
    routes: dict[DeviceTopic, RouteHandler]
    clock: Callable[[], float]
    clock_ns: Callable[[], int]
    wall_clock: Callable[[], float]

    def new_decoder(self) -> MQTTDecoder:
        """A server-role decoder with the configured packet size limit."""
        ...

    def new_client_id(self) -> str:
        """A client id for a v5 client that sent an empty one."""
        ...

    def connack_properties(self, **fields: Any) -> Properties:
        """The v5 CONNACK properties: the gateway's limits plus this connection's values."""
        ...

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task the gateway keeps a reference to."""
        ...

    def source_retry_after(self, session: MQTTSession) -> int:
        """Seconds the session's address is refused for failed credential checks (0: not)."""
        ...

    def credential_failed(self, session: MQTTSession) -> None:
        """Count a failed credential check against the session's address."""
        ...

    def admit(self, session: MQTTSession, identity: DeviceIdentity) -> None:
        """Count the session among the device's connections (``RateLimited`` when full)."""
        ...

    def attach(self, session: MQTTSession, clean_start: bool, expiry_s: int) -> bool:
        """Bind an authenticated connection to its session; True when an old one is resumed."""
        ...

    def connected(self, session: MQTTSession) -> None:
        """A connection was accepted (its CONNACK is written)."""
        ...

    def detach(self, session: MQTTSession, *, will: bool) -> None:
        """A connection ended: keep or drop its session, publish or schedule its will."""
        ...

    def subscribed(self, session: MQTTSession, topic_filter: str) -> None:
        """A subscription was granted."""
        ...

    def record_refusal(
        self, ctx: Any, topic: str, errors: list[dict[str, Any]], recv_ns: int
    ) -> None:
        """Record a refused message as an event of the device, and tell the device why."""
        ...
