"""``roost serve``: run the API and the MQTT gateway in one process."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import typer

from roost.cli.main import app
from roost.config import load_settings

# Allocations between young-generation collections (CPython's default is 700): the hot paths
# allocate a few short-lived objects per message, and a pass every 700 of them is wasted work.
GC_YOUNG_THRESHOLD = 20_000


@app.command()
def serve(
    host: str = typer.Option(
        None, "--host", help="Address to listen on (env ROOST_HTTP_HOST, default 127.0.0.1)"
    ),
    port: int = typer.Option(None, "--port", help="HTTP port (env ROOST_HTTP_PORT, default 8000)"),
    mqtt_port: int = typer.Option(
        None, "--mqtt-port", help="MQTT port (env ROOST_MQTT_PORT, default 1883; 0: no MQTT)"
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", help="Data directory (env ROOST_DATA_DIR, default ./roost-data)"
    ),
    database_url: str = typer.Option(
        None, "--database-url", help="sqlite:///file or postgresql://… (env ROOST_DATABASE_URL)"
    ),
    demo: bool = typer.Option(
        False, "--demo", help="Load the demo retail fleet when the tenant is empty."
    ),
    log_level: str = typer.Option(
        None, "--log-level", help="debug, info, warning or error (default info)"
    ),
) -> None:
    """Run Roost: upgrade the database, create the admin on first start, serve the API."""
    # Imported here so that other commands start without loading the web stack.
    import uvicorn

    from roost.http.app import create_app
    from roost.runtime import Roost

    settings = load_settings(
        http_host=host,
        http_port=port,
        mqtt_port=mqtt_port,
        data_dir=data_dir,
        database_url=database_url,
        log_level=log_level,
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Alembic narrates every migration step at INFO; Roost logs the one line that matters.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.root.level))
    roost = Roost.build(settings)

    async def run() -> None:
        await roost.start()
        mqtt_server = None
        try:
            if demo:
                from roost.services.demo import load_demo

                summary = await load_demo(roost)
                typer.echo(summary)
            base = f"http://{settings.http_host}:{settings.http_port}"
            typer.echo(f"Roost {base}  (API {base}/api/v1, docs {base}/docs)")
            if roost.generated_admin_password:
                typer.echo(
                    f"Admin login: admin / {roost.generated_admin_password}  (shown once; "
                    "change it with `roost user set-password admin`)"
                )
            elif settings.admin_password:
                typer.echo("Admin login: admin / the password in ROOST_ADMIN_PASSWORD")
            else:
                typer.echo(
                    "Admin login: admin / the password printed at first start "
                    "(reset it with `roost user set-password admin`)"
                )
            if settings.mqtt_port:
                from roost.mqtt.gateway import gateway_for
                from roost.mqtt.server import MQTTServer

                mqtt_server = MQTTServer(gateway_for(roost), settings.http_host, settings.mqtt_port)
                try:
                    await mqtt_server.start()
                except OSError as exc:
                    mqtt_server = None
                    raise typer.BadParameter(
                        f"cannot listen for MQTT on {settings.http_host}:{settings.mqtt_port} "
                        f"({exc.strerror}; another broker?): choose another port with "
                        "--mqtt-port or ROOST_MQTT_PORT (0 turns MQTT off)",
                        param_hint="--mqtt-port",
                    ) from None
                typer.echo(
                    f"MQTT mqtt://{settings.http_host}:{mqtt_server.port}  "
                    f"(over WebSocket ws://{settings.http_host}:{settings.http_port}/mqtt)"
                )
            # What exists now (modules, the app, caches) lives as long as the process: keep it
            # out of the collector's full passes, and run those less often, so that a process
            # holding thousands of connections does not stall ingest for a full collection.
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            config = uvicorn.Config(
                create_app(roost, manage_lifecycle=False),
                host=settings.http_host,
                port=settings.http_port,
                log_level=settings.log_level.lower(),
                loop="uvloop",
                http="httptools",
                access_log=False,
                lifespan="on",
            )
            await uvicorn.Server(config).serve()
        finally:
            if mqtt_server is not None:
                await mqtt_server.close()
            if roost.mqtt_gateway is not None:
                await roost.mqtt_gateway.close()
            await roost.close()

    # uvloop (installed with uvicorn[standard]): the MQTT listener's cost per connection and
    # its throughput depend on it.
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a minimal install without uvicorn[standard]
        asyncio.run(run())
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run())
