"""``roost provision``: offline bundles, what a device needs to join, for a USB stick."""

from __future__ import annotations

import logging
import os
import socket
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
from roost.config import Settings
from roost.errors import InvalidInput
from roost.provisioning.bundles import MAX_BUNDLE_DEVICES, Endpoints, make_bundle, numbered_ids

logger = logging.getLogger(__name__)

app = group("provision", "Provisioning: offline bundles of device credentials.")

# What ``roost serve`` writes into its data dir at start: where it listens, for bundles.
ENDPOINTS_FILE = "endpoints.json"
# Listen addresses that name every interface: no device can dial them.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


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
    return numbered_ids(prefix, count)


def record_endpoints(
    data_dir: Path,
    *,
    host: str,
    http_port: int,
    mqtt_port: int | None,
    mqtts_port: int | None,
    https_port: int | None,
) -> None:
    """Write where a starting ``roost serve`` listens into its data dir, for bundles to read."""
    document = {
        "written_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "host": host,
        "http_port": http_port,
        "mqtt_port": mqtt_port or None,
        "mqtts_port": mqtts_port or None,
        "https_port": https_port or None,
    }
    path = data_dir / ENDPOINTS_FILE
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        temporary.replace(path)
    except OSError as exc:  # a read-only data dir: bundles then need the flags
        logger.warning("cannot record the endpoints in %s: %s", path, exc)


def _recorded(data_dir: Path) -> dict[str, Any]:
    """What the last ``roost serve`` of this data dir listened on (empty when unknown)."""
    try:
        document = orjson.loads((data_dir / ENDPOINTS_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return document if isinstance(document, dict) else {}


def _reachable(host: str) -> str:
    """A host devices can dial: a wildcard listen address becomes this machine's name."""
    if host in WILDCARD_HOSTS:
        return socket.getfqdn()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def resolve_endpoints(
    settings: Settings,
    *,
    api_url: str | None,
    mqtt_host: str | None,
    mqtt_port: int | None,
    mqtts_port: int | None,
) -> Endpoints:
    """The server's endpoints: the flags, else what its ``roost serve`` recorded, else settings."""
    recorded = _recorded(settings.data_dir)

    def port(flag: int | None, name: str, configured: int) -> int | None:
        if flag is not None:
            return flag or None
        if name in recorded:
            value = recorded[name]
            return value if isinstance(value, int) and value > 0 else None
        return configured or None

    host = _reachable(str(recorded.get("host") or settings.http_host))
    http_port = port(None, "http_port", settings.http_port)
    url = api_url or f"http://{host}:{http_port}"
    name = mqtt_host or urlsplit(url).hostname
    if not name:
        raise InvalidInput(f"cannot tell the MQTT host from {url!r}: give --mqtt-host")
    https_port = port(None, "https_port", settings.https_port)
    return Endpoints(
        api_url=url,
        mqtt_host=name,
        mqtt_port=port(mqtt_port, "mqtt_port", settings.mqtt_port),
        mqtts_port=port(mqtts_port, "mqtts_port", settings.mqtts_port),
        https_url=None if https_port is None else f"https://{host}:{https_port}",
    )


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
            help="The API the devices reach (default: where the `roost serve` of this data"
            " directory listens, else http://HTTP_HOST:HTTP_PORT of the settings).",
            show_default=False,
        ),
    ] = None,
    mqtt_host: Annotated[
        str | None,
        typer.Option(
            "--mqtt-host", help="MQTT host (default: the API URL's host).", show_default=False
        ),
    ] = None,
    mqtt_port: Annotated[
        int | None,
        typer.Option(
            "--mqtt-port",
            min=0,
            max=65535,
            help="MQTT port (default: the server's, as for --api-url; 0: none).",
            show_default=False,
        ),
    ] = None,
    mqtts_port: Annotated[
        int | None,
        typer.Option(
            "--mqtts-port",
            min=0,
            max=65535,
            help="MQTT over TLS port (default: the server's, as for --api-url; 0: none).",
            show_default=False,
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
            endpoints = resolve_endpoints(
                roost.settings,
                api_url=api_url,
                mqtt_host=mqtt_host,
                mqtt_port=mqtt_port,
                mqtts_port=mqtts_port,
            )
            actor = await tenant_actor(roost, tenant)
            return await make_bundle(
                roost,
                actor,
                ids,
                site_id=site,
                group_ids=list(group_ids or []),
                endpoints=endpoints,
            )

    document = run(work())
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(output, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    os.chmod(output, 0o600)  # an existing file keeps its mode through O_TRUNC
    made = sum(1 for d in document["devices"] if d["created"])
    mqtt = document["mqtt"]
    out.print(
        f"Wrote {output}: {len(ids)} device(s), {made} created; API {document['api_url']}, "
        f"MQTT {mqtt['host']}:{mqtt['port'] or '-'} (TLS {mqtt['tls_port'] or '-'})."
    )
