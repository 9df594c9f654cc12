"""``roost provision``: offline bundles, what a device needs to join, for a USB stick."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
import typer

from roost.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    TenantOption,
    group,
    open_roost,
    out,
    run,
    tenant_actor,
)
from roost.credentials.keys import sas
from roost.errors import InvalidInput, NotFound
from roost.runtime import Roost

app = group("provision", "Provisioning: offline bundles of device credentials.")

BUNDLE_FORMAT = "roost-bundle/1"
# Devices one bundle may hold: a store's worth, and a file an operator can still read.
MAX_BUNDLE_DEVICES = 1000


def _device_ids(device_id: str | None, count: int | None, prefix: str | None) -> list[str]:
    """One named device, or ``count`` devices ``{prefix}001`` … (width at least 3)."""
    if count is None:
        if device_id is None:
            raise typer.BadParameter("give a DEVICE_ID, or --count and --prefix")
        if prefix is not None:
            raise typer.BadParameter("--prefix goes with --count", param_hint="--prefix")
        return [device_id]
    if device_id is not None:
        raise typer.BadParameter("give a DEVICE_ID or --count, not both", param_hint="--count")
    if not prefix:
        raise typer.BadParameter("--count needs --prefix", param_hint="--prefix")
    width = max(3, len(str(count)))
    return [f"{prefix}{n:0{width}d}" for n in range(1, count + 1)]


async def _bundle(
    roost: Roost,
    tenant: str,
    ids: list[str],
    site: str | None,
    group_ids: list[str],
    api_url: str,
    mqtt_host: str,
) -> dict[str, Any]:
    actor = await tenant_actor(roost, tenant)
    entries = []
    for device_id in ids:
        try:
            await roost.devices.get(actor, device_id)
            created = False
        except NotFound:
            await roost.devices.create(
                actor, {"id": device_id, "site_id": site, "group_ids": group_ids}
            )
            created = True
        token_row, token = await roost.credentials.issue_token(
            actor, device_id, name="offline bundle"
        )
        key_row, key = await roost.keys.create_key(actor, device_id, "offline bundle")
        entries.append(
            {
                "device_id": device_id,
                "created": created,
                "token_id": token_row["id"],
                "token": token,
                "key_id": key_row["id"],
                "key": key,
                "sas_resource": sas.device_resource(actor.tenant_id, device_id),
            }
        )
    settings = roost.settings
    return {
        "format": BUNDLE_FORMAT,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "tenant_id": actor.tenant_id,
        "api_url": api_url,
        "mqtt": {
            "host": mqtt_host,
            "port": settings.mqtt_port or None,
            "tls_port": settings.mqtts_port or None,
        },
        "ca_certificate": await roost.certificates.ca_pem(),
        "devices": entries,
    }


@app.command(
    epilog="Examples:\n\n"
    "  roost provision bundle till-07 --site paris-12 --output till-07.json\n\n"
    "  roost provision bundle --count 20 --prefix paris-12-till- --group tills "
    "--output tills.json"
)
def bundle(
    device_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[DEVICE_ID]", help="The device (created when missing); or use --count."
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The bundle file to write (JSON, mode 600).")
    ] = Path("bundle.json"),
    count: Annotated[
        int | None,
        typer.Option(
            "--count", min=1, max=MAX_BUNDLE_DEVICES, help="Make this many devices: PREFIX001…"
        ),
    ] = None,
    prefix: Annotated[
        str | None, typer.Option("--prefix", help="Id prefix of the devices --count makes.")
    ] = None,
    site: Annotated[
        str | None, typer.Option("--site", help="Site of the devices this creates.")
    ] = None,
    group_ids: Annotated[
        list[str] | None,
        typer.Option("--group", help="Static group the created devices join. Repeatable."),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            help="The API the devices reach (default: http://HTTP_HOST:HTTP_PORT of the settings).",
            show_default=False,
        ),
    ] = None,
    mqtt_host: Annotated[
        str | None,
        typer.Option(
            "--mqtt-host", help="MQTT host (default: the API URL's host).", show_default=False
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    tenant: TenantOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Write an offline bundle: endpoints, CA certificate, and for each device a fresh device
    token and SAS key (it holds secrets: keep the file safe; revoke them if it is lost)."""
    ids = _device_ids(device_id, count, prefix)
    if output.exists() and not force:
        raise typer.BadParameter(f"{output} exists (use --force)", param_hint="--output")

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            url = api_url or f"http://{roost.settings.http_host}:{roost.settings.http_port}"
            host = mqtt_host or urlsplit(url).hostname
            if not host:
                raise InvalidInput(f"cannot tell the MQTT host from {url!r}: give --mqtt-host")
            return await _bundle(roost, tenant, ids, site, list(group_ids or []), url, host)

    document = run(work())
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(output, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    os.chmod(output, 0o600)  # an existing file keeps its mode through O_TRUNC
    made = sum(1 for d in document["devices"] if d["created"])
    out.print(f"Wrote {output}: {len(ids)} device(s), {made} created.")
