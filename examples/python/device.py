#!/usr/bin/env python3
"""A Roost device in plain Python with paho-mqtt 2.x: no Roost code, only the MQTT topics.

It connects with its device id as the MQTT username and its token as the password, publishes a
``boot`` event and then telemetry in the key/value form every ``--interval`` seconds (QoS 1, each
one awaited until the server's PUBACK, which Roost sends once the message is committed), answers
commands on ``devices/{id}/commands/+`` and reports the state it applied when the desired state
changes (``devices/{id}/state/delta``). It stops after ``--rounds`` telemetry messages, or runs
until SIGINT/SIGTERM with ``--forever``.

Settings come from the environment (see examples/README.md):
ROOST_DEVICE_ID, ROOST_DEVICE_TOKEN (required); ROOST_MQTT_HOST (else the host of ROOST_URL, else
127.0.0.1); ROOST_MQTT_PORT (1884, the demo's, or 8883 with TLS); ROOST_CA_FILE (the platform CA
in PEM: connect over TLS and trust only it).

Runs on Python 3.9 and later: ``pip install 'paho-mqtt>=2,<3'``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import ssl
import sys
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger("roost-example")

CLIENT = "python-paho"
#: The server's PUBACK comes once the message is committed; a wait past this means trouble.
PUBACK_TIMEOUT_S = 30.0
#: Seconds of silence before a PINGREQ; the server drops the session after 1.5 times that.
KEEPALIVE_S = 30
#: paho reconnects by itself, doubling the wait from the first figure up to the second.
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 60
#: Commands are delivered at least once: answers to the last ids are kept to answer a repeat alike.
REMEMBERED_COMMANDS = 100
#: Connection refusals that no retry can cure (MQTT 3.1.1 return codes 4 and 5 and their v5 twins).
FATAL_CONNACK = {"Bad user name or password", "Not authorized"}


class Settings:
    """Where to connect and who to be, from the environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.device_id = env.get("ROOST_DEVICE_ID", "")
        self.token = env.get("ROOST_DEVICE_TOKEN", "")
        missing = [n for n in ("ROOST_DEVICE_ID", "ROOST_DEVICE_TOKEN") if not env.get(n)]
        if missing:
            raise SystemExit(f"error: set {' and '.join(missing)} (see examples/README.md)")
        self.ca_file = env.get("ROOST_CA_FILE", "")
        url_host = urlsplit(env.get("ROOST_URL", "")).hostname
        self.host = env.get("ROOST_MQTT_HOST") or url_host or "127.0.0.1"
        self.port = int(env.get("ROOST_MQTT_PORT") or (8883 if self.ca_file else 1884))


class Device:
    """One device's MQTT session: telemetry and events up, commands and state deltas down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefix = f"devices/{settings.device_id}"
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.fatal: str | None = None
        self.started = time.monotonic()
        self.interval_s = 5.0
        self.applied: dict[str, Any] = {}
        self.delta_version: Any = None
        self.answers: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.device_id,
            protocol=mqtt.MQTTv311,
        )
        self.client.username_pw_set(settings.device_id, settings.token)
        if settings.ca_file:
            # Trust only the platform CA; the server's certificate must name the host we dial.
            self.client.tls_set(ca_certs=settings.ca_file)
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.on_connect = self.on_connect
        self.client.on_disconnect = self.on_disconnect
        self.client.on_connect_fail = self.on_connect_fail
        self.client.on_message = self.on_message

    # -- connection -------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in paho's network thread, which also reconnects after a loss."""
        s = self.settings
        log.info(
            "connecting to %s:%s as %s%s", s.host, s.port, s.device_id, " (TLS)" * bool(s.ca_file)
        )
        try:
            # The first attempt in the foreground, so that a certificate problem is said plainly.
            self.client.connect(s.host, s.port, keepalive=KEEPALIVE_S)
        except ssl.SSLCertVerificationError as exc:
            raise SystemExit(
                f"error: the server at {s.host}:{s.port} is not the one {s.ca_file} vouches for"
                f" ({exc.verify_message}); refusing to connect"
            ) from None
        except OSError as exc:  # the server is not there yet: paho's thread keeps trying
            log.warning("cannot reach %s:%s (%s); retrying with backoff", s.host, s.port, exc)
            self.client.connect_async(s.host, s.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.error("connection refused: %s", reason)
            if str(reason) in FATAL_CONNACK:
                self.fatal = f"the server refused the device's credentials: {reason}"
                self.connected.set()  # wakes the main thread, which sees self.fatal
            return
        log.info("connected")
        # Subscribed again on every connect: the session starts clean. The server then sends
        # the commands queued while we were away and the current state delta.
        client.subscribe(
            [
                (f"{self.prefix}/commands/+", 1),
                (f"{self.prefix}/state/delta", 1),
                # Why the server refused something we sent (MQTT 3.1.1 has no negative PUBACK).
                (f"{self.prefix}/telemetry/rejected", 0),
                (f"{self.prefix}/events/rejected", 0),
                (f"{self.prefix}/state/rejected", 0),
                (f"{self.prefix}/commands/+/response/rejected", 0),
            ]
        )
        # What this device runs, in its reported state (the server merges reports field by field).
        client.publish(f"{self.prefix}/state/reported", json.dumps({"client": CLIENT}), qos=1)
        self.connected.set()

    def on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning("could not connect to %s:%s; retrying", self.settings.host, self.settings.port)

    def on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        if reason.is_failure:
            log.warning("connection lost (%s); paho reconnects with backoff", reason)

    # -- up: telemetry and events -----------------------------------------------------------

    def publish(self, suffix: str, items: list[dict[str, Any]], msg_id: str) -> bool:
        """Publish at QoS 1 and wait for the server's PUBACK (the message is then stored).

        The items go in the wrapped form with a message id: when the connection drops before
        the PUBACK, paho resends the message and the caller publishes it again; the server
        stores a message id once, so either way it is stored exactly once.
        """
        payload = json.dumps({"msg_id": msg_id, "items": items})
        info = self.client.publish(f"{self.prefix}/{suffix}", payload, qos=1)
        deadline = time.monotonic() + PUBACK_TIMEOUT_S
        try:
            # In short steps, so that a signal need not wait for the PUBACK.
            while not info.is_published():
                if self.stopping.is_set():
                    return False
                if time.monotonic() > deadline:
                    log.warning("no PUBACK for %s within %s s", suffix, PUBACK_TIMEOUT_S)
                    return False
                info.wait_for_publish(timeout=0.5)
        except (RuntimeError, ValueError) as exc:  # the connection dropped just now / queue full
            log.warning("%s not sent yet: %s", suffix, exc)
            return False
        log.info("%s stored: %s", suffix, items)
        return True

    # -- down: commands and state -----------------------------------------------------------

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/rejected"):
            log.error("the server refused a message: %s %s", msg.topic, msg.payload.decode())
            return
        try:
            body = json.loads(msg.payload)
        except ValueError:
            log.warning("not JSON on %s: %r", msg.topic, msg.payload[:100])
            return
        if msg.topic == f"{self.prefix}/state/delta":
            self.on_delta(body)
        elif msg.topic.startswith(f"{self.prefix}/commands/"):
            self.on_command(body)

    def on_command(self, command: dict[str, Any]) -> None:
        """Run a command and answer it; runs on paho's thread, so it must be quick."""
        cmd_id, name = str(command.get("id", "")), command.get("name")
        params = command.get("params") or {}
        with self.lock:
            answer = self.answers.get(cmd_id)
            if answer is None:
                answer = self.run_command(name, params)
                self.answers[cmd_id] = answer
                while len(self.answers) > REMEMBERED_COMMANDS:
                    self.answers.pop(next(iter(self.answers)))
        log.info("command %s %s(%s) -> %s", cmd_id, name, params, answer)
        # Not awaited here: waiting for a PUBACK inside paho's own thread would block it.
        self.client.publish(f"{self.prefix}/commands/{cmd_id}/response", json.dumps(answer), qos=1)

    def run_command(self, name: Any, params: dict[str, Any]) -> dict[str, Any]:
        if name == "ping":
            uptime = round(time.monotonic() - self.started, 1)
            result = {"pong": params.get("echo", True), "uptime_s": uptime, "client": CLIENT}
            return {"status": "SUCCEEDED", "result": result}
        if name == "set_interval":
            seconds = params.get("seconds")
            if not isinstance(seconds, (int, float)) or not 0.1 <= seconds <= 3600:
                return {"status": "FAILED", "result": {"error": "seconds: a number, 0.1 to 3600"}}
            self.interval_s = float(seconds)
            return {"status": "SUCCEEDED", "result": {"interval_s": self.interval_s}}
        return {"status": "FAILED", "result": {"error": f"unknown command {name!r}"}}

    def on_delta(self, message: dict[str, Any]) -> None:
        """Apply the desired fields that differ from what we reported, then report them."""
        delta = message.get("delta") or {}
        if not isinstance(delta, dict) or not delta:
            return
        # The server sends the current delta on connect and again on subscribing: apply it once.
        version = message.get("version")
        if version is not None and version == self.delta_version:
            return
        self.delta_version = version
        interval = delta.get("interval_s")
        if isinstance(interval, (int, float)) and 0.1 <= interval <= 3600:
            self.interval_s = float(interval)
        with self.lock:
            self.applied.update(delta)  # a real device would switch its light, volume, … here
        log.info("desired state v%s applied: %s", message.get("version"), delta)
        self.client.publish(f"{self.prefix}/state/reported", json.dumps(delta), qos=1)


def telemetry_reading(n: int) -> dict[str, Any]:
    """One reading in the key/value form (the demo fleet's sensors; the values are made up)."""
    return {
        "ts": int(time.time() * 1000),  # epoch milliseconds: the server tells units by magnitude
        "values": {
            "temperature": round(random.uniform(20.0, 26.0), 2),
            "cpu_load": round(random.uniform(5.0, 60.0), 1),
            "pickups": n,
            "presence": random.random() < 0.5,
        },
    }


def boot_event() -> dict[str, Any]:
    """The event sent once at start (read back with GET …/events?type=boot)."""
    return {"event": "boot", "ts": int(time.time() * 1000), "client": CLIENT}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "A Roost device over MQTT (paho-mqtt): sends a boot event and telemetry, answers "
            "the commands 'ping' and 'set_interval', reports the desired state it applies."
        ),
        epilog=(
            "environment: ROOST_DEVICE_ID, ROOST_DEVICE_TOKEN (required), ROOST_MQTT_HOST "
            "(else ROOST_URL's host, else 127.0.0.1), ROOST_MQTT_PORT (1884; 8883 with TLS), "
            "ROOST_CA_FILE (PEM of the platform CA: use TLS)"
        ),
    )
    parser.add_argument("--rounds", type=int, default=5, help="telemetry messages to send (5)")
    parser.add_argument("--forever", action="store_true", help="run until SIGINT or SIGTERM")
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between telemetry messages (5)"
    )
    parser.add_argument("--verbose", action="store_true", help="log paho's own messages too")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    device = Device(Settings(dict(os.environ)))
    device.interval_s = args.interval
    if args.verbose:
        device.client.enable_logger(log)

    stopping = device.stopping

    def request_stop(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stopping.set()
        device.connected.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    device.start()
    # Each message is built once, with its id, and published until the server acknowledges it.
    outbox: list[tuple[str, list[dict[str, Any]], str]] = [
        ("events", [boot_event()], str(uuid.uuid4()))
    ]
    sent = 0
    try:
        while not stopping.is_set():
            device.connected.wait()
            if device.fatal:
                log.error("%s", device.fatal)
                return 1
            if stopping.is_set():
                break
            if not outbox:
                if not args.forever and sent >= args.rounds:
                    break
                outbox.append(("telemetry", [telemetry_reading(sent + 1)], str(uuid.uuid4())))
            kind, items, msg_id = outbox[0]
            if not device.publish(kind, items, msg_id):
                stopping.wait(RECONNECT_MIN_S)
                continue
            outbox.pop(0)
            if kind == "telemetry":
                sent += 1
                if args.forever or sent < args.rounds:
                    stopping.wait(device.interval_s)
    finally:
        device.stop()
    log.info("done: %d telemetry messages stored", sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
