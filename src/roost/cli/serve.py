"""``roost serve``: run the API and the MQTT gateway in one process."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from roost.cli.logs import configure_logging, one_line_errors
from roost.cli.main import app
from roost.config import Settings, load_settings
from roost.errors import ConfigError

if TYPE_CHECKING:
    import uvicorn
    from starlette.types import ASGIApp

    from roost.http.server import HttpLimits
    from roost.mqtt.server import MQTTServer
    from roost.runtime import Roost

# Allocations between young-generation collections (CPython's default is 700): the hot paths
# allocate a few short-lived objects per message, and a pass every 700 of them is wasted work.
GC_YOUNG_THRESHOLD = 20_000


async def _start_mqtts(roost: Roost) -> MQTTServer:
    """Listen for MQTT over TLS (client certificates of the platform CA, or tokens)."""
    from roost.mqtt.server import MQTTServer, tls_server_context

    settings = roost.settings
    cert_file, key_file = await roost.certificates.server_credentials()
    context = tls_server_context(str(cert_file), str(key_file), await roost.certificates.ca_pem())
    server = MQTTServer(roost.gateway(), settings.http_host, settings.mqtts_port, context)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(
            f"cannot listen for MQTT over TLS on {settings.http_host}:{settings.mqtts_port} "
            f"({exc.strerror}; another broker?): choose another port with ROOST_MQTTS_PORT "
            "(0 turns it off)"
        ) from None
    typer.echo(
        f"MQTTS mqtts://{settings.http_host}:{server.port}  (CA certificate: "
        f"{settings.data_dir / 'ca' / 'ca.pem'}, or GET /api/v1/ca)"
    )
    return server


async def _start_https(
    roost: Roost, app: ASGIApp, limits: HttpLimits
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """A second, direct HTTPS listener whose requests carry the TLS client certificate (devices
    with a certificate of the platform CA; everyone else as on HTTP). Answers the server and the
    task that keeps its Date header current and ends when it is told to exit."""
    import uvicorn

    from roost.credentials.certificates.client_certs import ClientCertificateHttpProtocol

    settings = roost.settings
    cert_file, key_file = await roost.certificates.server_credentials()
    ca_file = cert_file.parent / "ca.pem"
    ca_file.write_text(await roost.certificates.ca_pem())
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.https_port,
        log_level=settings.log_level.lower(),
        http=ClientCertificateHttpProtocol.with_limits(limits),
        timeout_keep_alive=limits.keepalive_timeout_s,
        access_log=False,
        log_config=None,
        lifespan="off",  # the HTTP listener's app runs the lifespan
        ssl_certfile=str(cert_file),
        ssl_keyfile=str(key_file),
        ssl_cert_reqs=ssl.CERT_OPTIONAL,
        ssl_ca_certs=str(ca_file),
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    protocol = config.http_protocol_class
    # Listening here rather than in uvicorn's startup, which has no TLS handshake timeout (asyncio
    # waits a minute): a client gets as long for the handshake as it then gets for its head.
    try:
        listener = await asyncio.get_running_loop().create_server(
            lambda: protocol(
                config=config,  # type: ignore[call-arg]
                server_state=server.server_state,
                app_state=server.lifespan.state,
            ),
            host=settings.http_host,
            port=settings.https_port,
            ssl=config.ssl,
            backlog=config.backlog,
            ssl_handshake_timeout=limits.head_timeout_s,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot listen for HTTPS on {settings.http_host}:{settings.https_port} "
            f"({exc.strerror}): choose another port with ROOST_HTTPS_PORT (0 turns it off)"
        ) from None
    server.servers = [listener]
    server.started = True
    typer.echo(f"HTTPS https://{settings.http_host}:{settings.https_port}  (client certificates)")
    return server, asyncio.create_task(server.main_loop(), name="roost-https-ticks")


def _check_http_port(settings: Settings) -> None:
    """Fail with one line, before anything starts, when the HTTP port cannot be listened on
    (uvicorn would find out only after the store, the services and the MQTT listener are up)."""
    try:
        infos = socket.getaddrinfo(
            settings.http_host, settings.http_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen for HTTP on {settings.http_host}:{settings.http_port} "
            f"({exc.strerror or exc}): choose another address or port with --host / --port "
            "(ROOST_HTTP_HOST, ROOST_HTTP_PORT)"
        ) from None


def _private_data_dir(settings: Settings) -> None:
    """Everything the server creates is its user's alone (umask 077: the SQLite database and
    its -wal/-shm, keys, certificates); a data directory made before is tightened."""
    from roost.credentials.certificates.service import CA_DIR, TLS_DIR
    from roost.runtime import SECRET_FILE
    from roost.store.files import private_directory, tighten_data_dir

    os.umask(0o077)
    db_files = ("roost.db", "roost.db-wal", "roost.db-shm")
    if settings.data_dir.exists():
        tighten_data_dir(settings.data_dir, (*db_files, SECRET_FILE, CA_DIR, TLS_DIR))
    else:
        private_directory(settings.data_dir)


@app.command()
@one_line_errors
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

    from roost.app import create_app
    from roost.http.server import HeadLimitedHttpProtocol, HttpLimits
    from roost.runtime import Roost

    settings = load_settings(
        http_host=host,
        http_port=port,
        mqtt_port=mqtt_port,
        data_dir=data_dir,
        database_url=database_url,
        log_level=log_level,
    )
    limits = HttpLimits.from_settings(settings)
    configure_logging(settings)
    _check_http_port(settings)
    try:
        _private_data_dir(settings)
        roost = Roost.build(settings)
    except OSError as exc:
        raise ConfigError(f"cannot use the data directory {settings.data_dir}: {exc}") from None

    async def run() -> None:
        await roost.start()
        mqtt_server = None
        mqtts_server = None
        https_server: tuple[uvicorn.Server, asyncio.Task[None]] | None = None
        try:
            if demo:
                from roost.cli.demo import load_demo

                summary = await load_demo(roost)
                typer.echo(summary)
            base = f"http://{settings.http_host}:{settings.http_port}"
            typer.echo(f"Console {base}/  (API {base}/api/v1, docs {base}/docs)")
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
                from roost.mqtt.server import MQTTServer

                mqtt_server = MQTTServer(roost.gateway(), settings.http_host, settings.mqtt_port)
                try:
                    await mqtt_server.start()
                except OSError as exc:
                    mqtt_server = None
                    raise ConfigError(
                        f"cannot listen for MQTT on {settings.http_host}:{settings.mqtt_port} "
                        f"({exc.strerror}; another broker?): choose another port with "
                        "--mqtt-port or ROOST_MQTT_PORT (0 turns MQTT off)"
                    ) from None
                typer.echo(
                    f"MQTT mqtt://{settings.http_host}:{mqtt_server.port}  "
                    f"(over WebSocket ws://{settings.http_host}:{settings.http_port}/mqtt)"
                )
            if settings.mqtts_port:
                mqtts_server = await _start_mqtts(roost)
            # What exists now (modules, the app, caches) lives as long as the process: keep it
            # out of the collector's full passes, and run those less often, so that a process
            # holding thousands of connections does not stall ingest for a full collection.
            app: ASGIApp = create_app(roost, manage_lifecycle=False)
            # The routes and their OpenAPI document are as long-lived as the modules: made now,
            # they are frozen with the rest.
            app.openapi()  # type: ignore[attr-defined]
            gc.collect()
            gc.freeze()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            if settings.client_cert_header:
                from roost.credentials.certificates.client_certs import ForwardedClientCertificate

                app = ForwardedClientCertificate(app, settings.client_cert_header)
            if settings.https_port:
                https_server = await _start_https(roost, app, limits)
            from roost.cli.provision import record_endpoints

            # `roost provision bundle` writes these endpoints, not the defaults.
            record_endpoints(
                settings.data_dir,
                host=settings.http_host,
                http_port=settings.http_port,
                mqtt_port=None if mqtt_server is None else mqtt_server.port,
                mqtts_port=None if mqtts_server is None else mqtts_server.port,
                https_port=settings.https_port,
            )
            config = uvicorn.Config(
                app,
                host=settings.http_host,
                port=settings.http_port,
                log_level=settings.log_level.lower(),
                loop="uvloop",
                http=HeadLimitedHttpProtocol.with_limits(limits),
                timeout_keep_alive=limits.keepalive_timeout_s,
                access_log=False,  # Roost's own (ROOST_ACCESS_LOG), with durations
                log_config=None,  # uvicorn logs through Roost's handler and format
                lifespan="on",
            )
            await uvicorn.Server(config).serve()
        finally:
            if https_server is not None:
                server, ticking = https_server
                server.should_exit = True
                await ticking
                await server.shutdown()
            if mqtts_server is not None:
                await mqtts_server.close()
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
