"""The agent's MQTT connection to Roost (paho-mqtt 2.x, MQTT 5, its own network thread).

It connects in the background and stays connected: after a refusal or a lost connection it
waits with exponential backoff and jitter (so a fleet that lost its server does not come back in
one wave) and tries again, logging one line per attempt that says why the last one failed — a
certificate that does not chain to the bundle's CA, a refused token, an unreachable host.

Subscriptions are remembered and made again on every connect (the agent starts clean sessions:
the server resends what is pending, the delta, commands and jobs, to a device that connects).
Callbacks run on the network thread and must not block: hand work to ``Agent.submit``.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from roost_agent.config import Config, ConfigError

logger = logging.getLogger(__name__)

# Reconnect delays: the first retry after about a second, doubling up to a minute (``[mqtt]
# reconnect_max_s``); each delay is drawn from [half, all] of that (jitter) so devices that lost
# the server together spread out.
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
# A connection that lived this long was a success: the next failure starts the backoff afresh.
STABLE_AFTER_S = 30.0
# Seconds the TCP connect and TLS handshake may take before the attempt counts as failed.
CONNECT_TIMEOUT_S = 10.0
# QoS 1 messages paho keeps on the wire unacknowledged (the server allows 256); the forwarder
# keeps its own window below this.
MAX_INFLIGHT = 64
# What to tell the operator for the CONNACK reasons a device can fix.
HINTS = {
    "Bad user name or password": "check the device token ([device] token or the bundle)",
    "Not authorized": "the credential was revoked, or the device deleted, on the server",
    "Quota exceeded": "the device holds its most connections: is another agent running?",
    "Connection rate exceeded": "this address failed too many logins; it waits",
}

Callback = Callable[[str, bytes], None]


def backoff_delay(attempt: int, most: float = BACKOFF_MAX_S) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based): exponential, jittered."""
    base: float = min(most, BACKOFF_MIN_S * float(1 << min(attempt, 16)))
    return base * (0.5 + random.random() / 2)


def tls_context(config: Config) -> ssl.SSLContext:
    """TLS that trusts only the bundle's CA (a certificate of any other CA is refused)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.ca_certificate:
        try:
            context.load_verify_locations(cadata=config.ca_certificate)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"the CA certificate (bundle or [mqtt] ca_file) is unusable: {exc}"
            ) from exc
    else:
        logger.warning("TLS without a CA certificate of the bundle: trusting the system's CAs")
        context.load_default_certs()
    if config.client_cert is not None:
        key = None if config.client_key is None else str(config.client_key)
        try:
            context.load_cert_chain(str(config.client_cert), key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"[mqtt] client_cert/client_key cannot be loaded: {exc}") from exc
    return context


class Link:
    """One MQTT connection for the whole agent, kept up in the background."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._subscriptions: dict[str, tuple[Callback, int]] = {}
        self._connect_hooks: list[Callable[[], None]] = []
        self._puback_hooks: list[Callable[[int, int, str], None]] = []
        self._refusal: str | None = None
        self._switching = False  # use_credentials() asked for a reconnect: no backoff for it
        self._tls: ssl.SSLContext | None = None
        client_id = f"roost-agent-{config.device_id}"[:256]
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        if config.token:
            self._client.username_pw_set(config.device_id, config.token)
        if config.tls:
            self._tls = tls_context(config)
            self._client.tls_set_context(self._tls)
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.max_queued_messages_set(0)
        self._client.connect_timeout = CONNECT_TIMEOUT_S
        # Writes happen on our network thread only: publish() from another thread queues the
        # packet and wakes the loop (paho would otherwise write from the caller's thread too).
        self._client.on_socket_register_write = lambda client, userdata, sock: None
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

    @property
    def where(self) -> str:
        scheme = "mqtts" if self.config.tls else "mqtt"
        return f"{scheme}://{self.config.mqtt_host}:{self.config.mqtt_port}"

    def topic(self, suffix: str) -> str:
        """The device's topic ``devices/{id}/{suffix}``."""
        return f"devices/{self.config.device_id}/{suffix}"

    # -- what the rest of the agent uses -------------------------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> Any:
        """Publish (queued by paho while offline, sent on connect); paho's MQTTMessageInfo."""
        return self._client.publish(topic, payload, qos)

    def subscribe(self, topic_filter: str, callback: Callback, qos: int = 1) -> None:
        """Call ``callback(topic, payload)`` for messages matching ``topic_filter``, from now on
        and after every reconnect."""
        with self._lock:
            self._subscriptions[topic_filter] = (callback, qos)
        if self.connected.is_set():
            self._client.subscribe(topic_filter, qos)

    def on_connect(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every successful (re)connect, subscriptions made (must not block)."""
        with self._lock:
            self._connect_hooks.append(fn)

    def on_puback(self, fn: Callable[[int, int, str], None]) -> None:
        """Call ``fn(mid, reason code, reason string)`` for every PUBACK (must not block)."""
        with self._lock:
            self._puback_hooks.append(fn)

    def use_credentials(
        self, token: str, client_cert: Path | None = None, client_key: Path | None = None
    ) -> None:
        """Connect with new credentials from now on (a rotation): reconnect at once with them.

        ``client_cert``/``client_key`` replace the TLS client certificate (None: keep it)."""
        with self._lock:
            if token:
                self._client.username_pw_set(self.config.device_id, token)
            if client_cert is not None and self._tls is not None:
                try:
                    self._tls.load_cert_chain(str(client_cert), str(client_key or client_cert))
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigError(
                        f"the new client certificate cannot be loaded: {exc}"
                    ) from exc
            self._switching = True
        if self.connected.is_set():
            self.connected.clear()
            self._client.disconnect()  # the network thread connects again, with them
        logger.info("MQTT %s: reconnecting with new credentials", self.where)

    def start(self) -> None:
        """Connect in the background (and keep reconnecting until :meth:`stop`)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="roost-mqtt", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Disconnect and end the network thread."""
        self._stopping.set()
        if self.connected.is_set():
            self._client.disconnect()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)
        self.connected.clear()

    # -- the network thread --------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            self._refusal = None
            reason = self._connect_once()
            if self._stopping.is_set():
                break
            if reason is None:  # a connection that lived: start the backoff again
                attempt = 0
            with self._lock:
                switching, self._switching = self._switching, False
            if switching and self._refusal is None:
                continue  # closed to use new credentials: connect again at once
            delay = backoff_delay(attempt, self.config.reconnect_max_s)
            attempt += 1
            # A refusal (certificate, credentials) needs the operator: an error, not a warning.
            logger.log(
                logging.ERROR if self._refusal else logging.WARNING,
                "MQTT %s: %s; next attempt in %.1f s",
                self.where,
                self._refusal or reason or "connection lost",
                delay,
            )
            self._stopping.wait(delay)
        try:
            self._client.loop(timeout=0.1)  # flush our DISCONNECT
        except Exception as exc:  # closing: nothing left to report to
            logger.debug("final loop: %s", exc)

    def _connect_once(self) -> str | None:
        """One connection: connect, run until it ends; why it failed, or None if it lived."""
        try:
            self._client.connect(
                self.config.mqtt_host,
                self.config.mqtt_port,
                keepalive=self.config.keepalive_s,
                clean_start=True,
            )
        except ssl.SSLCertVerificationError as exc:
            self._refusal = (
                "TLS refused: the server's certificate does not match the bundle's CA "
                f"(certificate verify failed: {exc.verify_message or exc}); not connecting to it"
            )
            return self._refusal
        except ssl.SSLError as exc:
            self._refusal = (
                f"TLS handshake failed: {exc.reason or exc} (client certificate refused?)"
            )
            return self._refusal
        except OSError as exc:
            return f"cannot connect: {exc}"
        start = time.monotonic()
        try:
            rc = self._serve()
        except ssl.SSLError as exc:
            self._client.disconnect()
            return f"TLS error: {exc.reason or exc}"
        except OSError as exc:
            return f"connection error: {exc}"
        finally:
            self.connected.clear()
        if self._stopping.is_set():
            return None
        lived = time.monotonic() - start >= STABLE_AFTER_S and self._refusal is None
        return None if lived else f"connection ended ({mqtt.error_string(rc)})"

    def _serve(self) -> int:
        """Run paho's loop until the connection ends or :meth:`stop`; paho's last result."""
        rc = mqtt.MQTT_ERR_SUCCESS
        while not self._stopping.is_set() and rc == mqtt.MQTT_ERR_SUCCESS:
            rc = self._client.loop(timeout=1.0)
        return int(rc)

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            hint = HINTS.get(str(reason), "")
            self._refusal = f"the server refused the connection: {reason}" + (
                f" ({hint})" if hint else ""
            )
            return  # logged by the network thread with the next attempt's delay
        with self._lock:
            subscriptions = [(f, qos) for f, (_, qos) in self._subscriptions.items()]
            hooks = list(self._connect_hooks)
        if subscriptions:
            self._client.subscribe(subscriptions)
        logger.info("MQTT %s: connected as %s", self.where, self.config.device_id)
        self.connected.set()
        for hook in hooks:
            _guarded(hook, "an on-connect hook")

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._stopping.is_set():
            logger.warning("MQTT %s: disconnected (%s)", self.where, reason)

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            matches = [
                callback
                for topic_filter, (callback, _) in self._subscriptions.items()
                if mqtt.topic_matches_sub(topic_filter, message.topic)
            ]
        for callback in matches:
            _guarded(callback, f"the handler of {message.topic}", message.topic, message.payload)

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        text = ""
        if props is not None and getattr(props, "ReasonString", None):
            text = str(props.ReasonString)
        code = int(reason.value) if isinstance(reason, ReasonCode) else int(reason or 0)
        with self._lock:
            hooks = list(self._puback_hooks)
        for hook in hooks:
            _guarded(hook, "a PUBACK hook", mid, code, text or str(reason))


def _guarded(fn: Callable[..., Any], what: str, *args: Any) -> None:
    """Call a callback on the network thread; its exception is logged, the thread goes on."""
    try:
        fn(*args)
    except Exception:
        logger.exception("%s failed", what)
