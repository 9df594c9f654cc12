"""The agent's configuration: every mistake is named with its key (``ConfigError``), and an
offline bundle written by ``roost provision bundle`` is all a device needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from roost_agent.config import ConfigError, load_config
from roost_agent.ota_install import OtaSettings, ServerApi, TrustedKeys

from tests.support import ADMIN_PASSWORD, SECRET_KEY

INLINE = """\
[device]
id = "till-07"
token = "secret-token"
api_url = "http://roost.example:8000"
[mqtt]
host = "roost.example"
"""


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value)


def provision(tmp_path: Path, *args: str) -> Path:
    """``roost provision bundle`` on a data dir of its own (no server running), as an operator."""
    output = tmp_path / "bundle.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env.update(
        ROOST_DATA_DIR=str(tmp_path / "roost-data"),
        ROOST_ADMIN_PASSWORD=ADMIN_PASSWORD,
        ROOST_SECRET_KEY=SECRET_KEY,
    )
    done = subprocess.run(
        [sys.executable, "-m", "roost", "provision", "bundle", *args, "--output", str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return output


def test_an_inline_config_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, INLINE))
    assert config.device_id == "till-07" and config.token == "secret-token"
    assert (config.mqtt_host, config.mqtt_port, config.tls) == ("roost.example", 1883, False)
    assert config.queue_max_bytes == 100_000_000 and config.queue_when_full == "drop_oldest"
    assert config.batch_points == 500 and config.reconnect_max_s == 60.0
    assert (config.local_host, config.local_port) == ("127.0.0.1", 7090)
    assert config.data_dir == (tmp_path / "roost-agent-data").resolve()
    assert config.queue_path == config.data_dir / "queue.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[device\nid = 1", "is not valid TOML"),
        (INLINE.replace('token = "secret-token"\n', ""), "[device] token is missing"),
        (INLINE.replace('host = "roost.example"\n', ""), "[mqtt] host is missing"),
        (INLINE + "[queue]\nwhen_full = 'block'\n", "[queue] when_full must be one of"),
        (INLINE + "[queue]\nmax_bytes = 1000\n", "[queue] max_bytes must be an integer >= "),
        (INLINE + "[queue]\nbatch_points = 0\n", "[queue] batch_points must be an integer"),
        (INLINE + "port = 'x'\n", "[mqtt] port must be an integer"),
        (INLINE + "reconnect_max_s = 0\n", "[mqtt] reconnect_max_s must be a number >= 1"),
        (INLINE + "ca_file = 'missing.pem'\n", "[mqtt] ca_file"),
        (INLINE + "[local_api]\ntoken_ttl_s = 1\n", "[local_api] token_ttl_s must be"),
        (INLINE + "[health]\ninterval_s = -1\n", "[health] interval_s must be a number"),
        ("queue = 3\n" + INLINE, "[queue] must be a table"),
        ('[device]\nbundle = "nowhere.json"\n', "[device] bundle"),
    ],
    ids=[
        "bad-toml",
        "no-token",
        "no-host",
        "when-full",
        "max-bytes-floor",
        "batch-points",
        "port-type",
        "reconnect",
        "ca-file",
        "token-ttl",
        "health",
        "not-a-table",
        "no-bundle-file",
    ],
)
def test_a_bad_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert message in error_of(write(tmp_path, text))


def test_a_file_that_is_missing_is_named(tmp_path: Path) -> None:
    assert "cannot read" in error_of(tmp_path / "nowhere.toml")


def test_a_bundle_that_is_not_a_bundle_is_refused(tmp_path: Path) -> None:
    write(tmp_path, json.dumps({"format": "something-else"}), "fake.json")
    config = write(tmp_path, '[device]\nbundle = "fake.json"\n')
    assert "is not a roost-bundle/1 file" in error_of(config)


@pytest.fixture(scope="module")
def bundle_of_two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle: two devices of a server reached at store.example."""
    return provision(
        tmp_path_factory.mktemp("stick"),
        "--count",
        "2",
        "--prefix",
        "kiosk-",
        "--api-url",
        "http://store.example:8000",
    )


def test_the_config_comes_from_an_offline_bundle(bundle_of_two: Path, tmp_path: Path) -> None:
    document: dict[str, Any] = json.loads(bundle_of_two.read_text())
    config = load_config(
        write(tmp_path, f'[device]\nbundle = "{bundle_of_two}"\nid = "kiosk-002"\n')
    )
    [entry] = [d for d in document["devices"] if d["device_id"] == "kiosk-002"]
    assert config.device_id == "kiosk-002" and config.tenant_id == document["tenant_id"]
    assert config.token == entry["token"] and config.key == entry["key"]
    assert config.sas_resource == entry["sas_resource"]
    assert config.api_url == "http://store.example:8000"
    assert config.mqtt_host == "store.example"
    # The server's settings have MQTT over TLS on: the bundle says so, with its CA.
    assert config.tls and config.mqtt_port == document["mqtt"]["tls_port"]
    assert config.ca_certificate == document["ca_certificate"]
    assert document["ca_certificate"].startswith("-----BEGIN CERTIFICATE-----")
    # Roost's OTA signing key comes on the stick too: the agent trusts it without asking the
    # network (trust on first use is for agents configured without a bundle).
    key = document["ota_signing_key"]
    assert config.ota_signing_key == key["public_key"]
    settings = OtaSettings.from_config(config)
    assert settings.signing_keys == [key["public_key"]]
    unreachable = ServerApi(replace(config, api_url="http://127.0.0.1:9"))
    trusted = TrustedKeys(tmp_path / "pin.json", settings.signing_keys, unreachable)
    assert list(trusted.configured) == [key["id"]]
    assert trusted.pinned() is None  # configured keys: nothing fetched, nothing pinned
    assert not (tmp_path / "pin.json").exists()


def test_a_bundle_of_several_devices_needs_an_id(bundle_of_two: Path, tmp_path: Path) -> None:
    message = error_of(write(tmp_path, f'[device]\nbundle = "{bundle_of_two}"\n'))
    assert "[device] id must name one of the bundle's devices" in message
    assert "kiosk-001" in message
    other = write(tmp_path, f'[device]\nbundle = "{bundle_of_two}"\nid = "kiosk-9"\n', "b.toml")
    assert "has no device 'kiosk-9'" in error_of(other)


def test_the_file_overrides_the_bundle(bundle_of_two: Path, tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            f'[device]\nbundle = "{bundle_of_two}"\nid = "kiosk-001"\n'
            '[mqtt]\nhost = "10.0.0.5"\nport = 1883\ntls = false\n',
        )
    )
    assert (config.mqtt_host, config.mqtt_port, config.tls) == ("10.0.0.5", 1883, False)
