"""Debian's swupdate, in its suricatta hawkBit mode, updates a device through Roost's DDI.

The operator uploads a signed ``.swu`` and deploys it to a device through the API; the real
``swupdate`` polls Roost as that device (its TargetToken), downloads the image, installs its file
and reports each step; then, as after the restart an update ends with, a second run with
``-c 2`` (suricatta's "the update is confirmed" for devices without a bootloader environment)
reports the success. Roost's action ends SUCCEEDED with the image's version, with the client's
messages kept, and the device's identify attributes are its ``ddi`` state (configData).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.ota.ddi.conftest import action_of, deploy, upload_artifact
from tests.ota.ddi.swu import BOARD, REVISION, build_swu
from tests.support import Api, Device, RoostServer, eventually

SWUPDATE = shutil.which("swupdate") or "/usr/bin/swupdate"
# A download, install and report take about a second here; CI machines are slower.
TIMEOUT = 60

pytestmark = pytest.mark.skipif(
    not Path(SWUPDATE).exists(), reason="swupdate is not installed (Debian package swupdate)"
)


@contextmanager
def swupdate(
    work: Path, server: RoostServer, device: Device, cert: Path, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``swupdate`` in suricatta mode against Roost as ``device``; stop it at the end.

    The tenant, device id, URL and token go on the command line (the configuration file's
    fields are cut at 127 characters, shorter than a device token); the file gives the
    ``identify`` attributes that suricatta sends as configData. TMPDIR keeps its sockets and
    scratch files apart from any other swupdate on the machine.
    """
    config = work / "swupdate.cfg"
    config.write_text(
        "globals : { verbose = true; };\n"
        'identify : (\n\t{ name = "serial"; value = "SN-4711"; },\n'
        '\t{ name = "board"; value = "' + BOARD + '"; }\n);\n'
    )
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)
    suricatta = (
        f"-t default -u {server.url} -i {device.id} -k {device.token} -p 1 -r 2 -w 1 "
        + " ".join(extra)
    )
    log = (work / "swupdate.log").open("ab")
    proc = subprocess.Popen(
        [SWUPDATE, "-v", "-f", str(config), "-H", f"{BOARD}:{REVISION}", "-k", str(cert)]
        + ["-u", suricatta.strip()],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": str(tmp)},
        cwd=work,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def output(work: Path) -> str:
    """The end of swupdate's output (for failure messages)."""
    text = (work / "swupdate.log").read_text(errors="replace")[-12_000:]
    return f"--- swupdate output ---\n{text}"


def wait_for(check: Any, work: Path, what: str) -> Any:
    """``eventually(check)``, failing with swupdate's own output when it does not happen."""
    try:
        return eventually(check, timeout=TIMEOUT, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}\n{output(work)}") from None


def test_swupdate_installs_a_deployment_and_reports_success(
    ddi_server: RoostServer, admin: Api, device: Device, tmp_path: Path
) -> None:
    installed = tmp_path / "installed" / "app.bin"
    installed.parent.mkdir()
    image = build_swu("3.1.4", installed, b"roost over the air\n" * 100)
    cert = tmp_path / "signer.pem"
    cert.write_bytes(image.certificate_pem)
    artifact = upload_artifact(admin, image.swu, version=image.version, filename="app-3.1.4.swu")
    deployment = deploy(admin, artifact["id"], [device.id])

    with swupdate(tmp_path, ddi_server, device, cert) as proc:
        wait_for(lambda: installed.exists() or proc.poll() is not None, tmp_path, "no install")
        assert proc.poll() is None, output(tmp_path)
        assert installed.read_bytes() == image.payload
        # Every chunk installed: the client waits for the restart to confirm it.
        wait_for(
            lambda: action_of(admin, deployment["id"], device.id)["step"] == "REBOOTING",
            tmp_path,
            "the installed update was not reported",
        )
        action = action_of(admin, deployment["id"], device.id)
        assert action["execution_status"] == "IN_PROGRESS"

    # "After the restart": suricatta reports the update as tested and good.
    with swupdate(tmp_path, ddi_server, device, cert, "-c 2"):

        def succeeded() -> dict[str, Any] | None:
            action = action_of(admin, deployment["id"], device.id)
            return action if action["step"] == "SUCCEEDED" else None

        done = wait_for(succeeded, tmp_path, "the success was not reported")
    assert done["execution_status"] == "SUCCEEDED"
    assert done["version_reported"] == "3.1.4"
    messages = done["step_details"]["messages"]
    assert "Update Installed." in messages, messages

    resp = admin.get(f"/api/v1/deployments/{deployment['id']}")
    assert resp.status_code == 200, resp.text
    # The artifact was downloaded by the device (the download counts are per device).
    downloads = admin.get(f"/api/v1/artifacts/{artifact['id']}/downloads")
    assert downloads.status_code == 200, downloads.text
    assert device.id in downloads.text
    # suricatta sent its identify attributes (configData): the device's "ddi" state.
    state = admin.get(f"/api/v1/devices/{device.id}/states/ddi")
    assert state.status_code == 200, state.text
    assert state.json()["reported"] == {"serial": "SN-4711", "board": BOARD}
