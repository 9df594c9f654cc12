"""A real MQTT device for tests: paho-mqtt connected to a running ``roost serve``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from tests.support import Device, RoostServer, eventually, unique

TIMEOUT = 10


class MqttDevice:
    """A paho device with what it received kept for the test (messages as (topic, JSON)).

    Shared by the suites that need a real MQTT device (state, the console's browser tests).
    """

    def __init__(self, server: RoostServer, device: Device, protocol: int = mqtt.MQTTv311,
                 client_id: str = "", clean: bool = True) -> None:  # fmt: skip
        self.server = server
        self.device = device
        self.protocol = protocol
        self.clean = clean
        # MQTT 3.1.1 takes clean session when the client is made, MQTT 5 clean start at CONNECT.
        v311 = {"clean_session": clean} if protocol == mqtt.MQTTv311 else {}
        self.paho = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or unique("c"),
            protocol=protocol,
            **v311,  # type: ignore[arg-type]
        )
        self.paho.username_pw_set(device.id, device.token)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack: Any = None
        self.session_present: bool | None = None
        self.acks: dict[int, Any] = {}
        self.subacks: dict[int, Any] = {}
        self.messages: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_publish = lambda c, u, mid, reason, props: self.acks.__setitem__(mid, reason)
        self.paho.on_subscribe = lambda c, u, mid, codes, p: self.subacks.__setitem__(mid, codes)
        self.paho.on_message = self._on_message

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connack = reason
        self.session_present = flags.session_present
        self.connected.set()

    def _on_disconnect(self, client: Any, _: Any, flags: Any, reason: Any, props: Any) -> None:
        self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def connect(self, *, expiry: int | None = None) -> None:
        port = self.server.mqtt_port
        if self.protocol == mqtt.MQTTv5:
            props = PahoProperties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry or 0
            self.paho.connect(
                "127.0.0.1", port, keepalive=30, clean_start=self.clean, properties=props
            )
        else:
            self.paho.connect("127.0.0.1", port, keepalive=30)
        self.paho.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"
        assert self.connack == 0, self.connack

    def subscribe(self, *suffixes: str) -> None:
        """Subscribe (QoS 1) to ``devices/{id}/{suffix}`` filters and wait for the SUBACK."""
        filters = [(f"devices/{self.device.id}/{s}", 1) for s in suffixes]
        _, mid = self.paho.subscribe(filters)
        assert eventually(lambda: mid in self.subacks), "no SUBACK"
        codes = self.subacks[mid]
        assert all(int(getattr(c, "value", c)) == 1 for c in codes), codes

    def publish(self, suffix: str, payload: bytes | str) -> Any:
        """Publish at QoS 1 to ``devices/{id}/{suffix}``; answer the PUBACK's reason."""
        info = self.paho.publish(f"devices/{self.device.id}/{suffix}", payload, 1)
        info.wait_for_publish(TIMEOUT)
        assert eventually(lambda: info.mid in self.acks), "no PUBACK"
        return self.acks[info.mid]

    def received(self, suffix: str) -> list[Any]:
        topic = f"devices/{self.device.id}/{suffix}"
        with self._lock:
            return [payload for t, payload in self.messages if t == topic]

    def wait_for(self, suffix: str, check: Callable[[Any], bool] = bool) -> Any:
        """The first message on ``suffix`` that passes ``check`` (waiting for it)."""
        found = eventually(lambda: [m for m in self.received(suffix) if check(m)])
        assert found, f"nothing on {suffix} passing the check; got {self.messages}"
        return found[0]

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def close(self) -> None:
        self.paho.disconnect()
        assert self.disconnected.wait(TIMEOUT)
        self.paho.loop_stop()
