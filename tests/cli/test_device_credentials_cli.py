"""``roost device token`` and ``roost device sas``, run as real subprocesses; what they print
opens a ``roost serve`` of the same store."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from tests.support import ADMIN_PASSWORD, SECRET_KEY, RoostServer, admin_client


def roost(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env.update(
        ROOST_DATA_DIR=str(data_dir),
        ROOST_ADMIN_PASSWORD=ADMIN_PASSWORD,
        ROOST_SECRET_KEY=SECRET_KEY,
        COLUMNS="250",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "roost", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def ok(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = roost(data_dir, *args)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_printed_tokens_and_sas_tokens_open_the_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "device", "create", "kiosk-1")
    issued = ok(data, "device", "token", "kiosk-1", "--name", "factory")
    token = issued.stdout.strip()
    assert token and "\n" not in token  # the token alone on stdout: DEV=$(roost device token …)
    assert re.search(r"token \S+ for kiosk-1", issued.stderr)

    made = ok(data, "device", "sas", "kiosk-1", "--ttl", "600")
    fresh_sas = made.stdout.strip()
    assert fresh_sas.startswith("SharedAccessSignature sr=default%2Fdevices%2Fkiosk-1&sig=")
    found = re.search(r"made key (key_\w+): (\S+)", made.stderr)
    assert found, made.stderr
    key_id, key = found.groups()
    assert f"&skn={key_id}" in fresh_sas
    # Signing with a key the operator already holds makes no new key.
    signed = ok(data, "device", "sas", "kiosk-1", "--key-id", key_id, "--key", key)
    own_sas = signed.stdout.strip()
    assert own_sas.startswith("SharedAccessSignature ") and "made key" not in signed.stderr

    server = RoostServer(data).start()
    try:

        def post(authorization: str, value: float) -> int:
            return httpx.post(
                f"{server.url}/api/v1/telemetry",
                content=orjson.dumps({"sensor_id": "t", "value": value}),
                headers={"Authorization": authorization, "Content-Type": "application/json"},
            ).status_code

        assert post(f"Bearer {token}", 1.0) == 200
        assert post(fresh_sas, 2.0) == 200
        assert post(own_sas, 3.0) == 200
        assert post(fresh_sas.replace("&sig=", "&sig=A"), 4.0) == 401
        with admin_client(server) as admin:
            resp = admin.get("/api/v1/devices/kiosk-1/telemetry", params={"sensor": "t"})
            assert sorted(i["value"] for i in resp.json()["items"]) == [1.0, 2.0, 3.0]
            tokens = admin.get("/api/v1/devices/kiosk-1/tokens").json()["items"]
            assert [t["name"] for t in tokens] == ["factory"]
    finally:
        server.stop()


def test_bad_requests_get_clear_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ok(data, "device", "create", "kiosk-1")
    missing = roost(data, "device", "token", "nobody")
    assert missing.returncode == 1 and "no device 'nobody'" in missing.stderr
    missing = roost(data, "device", "sas", "nobody")
    assert missing.returncode == 1 and "no device 'nobody'" in missing.stderr
    lone = roost(data, "device", "sas", "kiosk-1", "--key", "a2V5a2V5a2V5a2V5a2V5a2V5")
    assert lone.returncode == 2 and "--key and --key-id go together" in lone.stderr
    bad = roost(data, "device", "sas", "kiosk-1", "--key-id", "key_x", "--key", "not base64!")
    assert bad.returncode == 2 and "Base64" in bad.stderr
    short = roost(data, "device", "sas", "kiosk-1", "--key-id", "key_x", "--key", "c2hvcnQ=")
    assert short.returncode == 2 and "at least 16 bytes" in short.stderr
    forever = roost(data, "device", "sas", "kiosk-1", "--ttl", "99999999")
    assert forever.returncode == 2 and "--ttl" in forever.stderr
