"""``roost sim``: a simulated fleet of retail displays, and the load generator of the benchmarks."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from roost.cli.main import app
from roost.sim.mqtt_client import Stats
from roost.sim.runner import SimConfig, provision, run

console = Console(highlight=False)


def _line(stats: Stats, elapsed: float) -> Text:
    rate = stats.acked / elapsed if elapsed > 0 else 0.0
    p50, p99 = stats.latency_ms(0.5), stats.latency_ms(0.99)
    latency = f"p50 {p50:.1f} ms · p99 {p99:.1f} ms" if p50 is not None and p99 is not None else ""
    return Text(
        f"{elapsed:6.1f}s  sent {stats.sent:,} · acked {stats.acked:,} ({rate:,.0f}/s) · "
        f"refused {stats.refused:,} · errors {stats.errors:,} · connected {stats.connected:,}"
        + (f" · {latency}" if latency else "")
    )


@app.command()
def sim(
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="The Roost server's API URL."),
    mqtt_url: str = typer.Option(
        "", "--mqtt-url", help="mqtt://host:port of the MQTT gateway (default: API host, 1883)."
    ),
    api_key: str = typer.Option(
        None, "--api-key", envvar="ROOST_API_KEY", help="API key (operator) to provision devices."
    ),
    password: str = typer.Option(
        None,
        "--password",
        envvar="ROOST_ADMIN_PASSWORD",
        help="The admin password, when no API key is given.",
    ),
    devices: int = typer.Option(10, "--devices", "-n", min=1, help="Simulated devices."),
    prefix: str = typer.Option("sim", "--prefix", help="Device ids are <prefix>-00000, …"),
    protocol: str = typer.Option("mqtt", "--protocol", help="mqtt or http."),
    rate: float = typer.Option(
        10.0, "--rate", min=0, help="Messages per second for the whole fleet; 0 = as fast as acked."
    ),
    duration: float = typer.Option(10.0, "--duration", "-d", min=0.1, help="Seconds to send."),
    qos: int = typer.Option(1, "--qos", min=0, max=2, help="MQTT QoS of each message."),
    mqtt_version: int = typer.Option(4, "--mqtt-version", help="4 (MQTT 3.1.1) or 5."),
    points: int = typer.Option(1, "--points", min=1, help="Telemetry points per message."),
    events: float = typer.Option(
        0.1, "--events", min=0, max=1, help="Share of messages that are shopper events."
    ),
    inflight: int = typer.Option(
        32, "--inflight", min=1, help="Unacknowledged messages allowed per connection."
    ),
    site: str = typer.Option(None, "--site", help="Put the simulated devices in this site."),
) -> None:
    """Simulate a fleet of retail displays sending telemetry and shopper events to a server.

    The devices are created (or reused) through the REST API and get fresh tokens; then each
    sends over MQTT or HTTP at the given rate while a progress line shows what was sent and
    acknowledged. Example: roost sim --password … --devices 100 --rate 500 --duration 30
    """
    if protocol not in {"mqtt", "http"}:
        raise typer.BadParameter("--protocol must be mqtt or http")
    if mqtt_version not in {4, 5}:
        raise typer.BadParameter("--mqtt-version must be 4 or 5")
    config = SimConfig(
        url=url,
        mqtt_url=mqtt_url,
        api_key=api_key,
        password=password,
        devices=devices,
        prefix=prefix,
        protocol=protocol,
        rate=rate,
        duration=duration,
        qos=qos,
        mqtt_version=mqtt_version,
        points_per_message=points,
        events_share=events,
        inflight=inflight,
        site_id=site,
    )

    async def main() -> Stats:
        fleet = await provision(config, log=lambda message: console.print(message))
        with Live(Text("connecting…"), console=console, refresh_per_second=4) as live:
            result = await run(config, fleet, lambda s, t: live.update(_line(s, t)))
        console.print(
            f"done: {result.stats.acked:,} messages acknowledged in {result.elapsed:.1f}s "
            f"({result.rate:,.0f}/s) from {result.devices} devices; "
            f"{result.stats.refused:,} refused, {result.stats.errors:,} errors"
            + (f" (last: {result.stats.last_error})" if result.stats.last_error else "")
        )
        return result.stats

    stats = asyncio.run(main())
    if stats.errors or stats.refused:
        raise typer.Exit(1)
