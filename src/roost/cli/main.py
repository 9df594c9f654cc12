"""The ``roost`` command line (typer)."""

from __future__ import annotations

import typer

from roost import __version__

app = typer.Typer(
    name="roost",
    help="Roost: a self-hosted IoT device-fleet platform. Run `roost serve --demo` to try it.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"roost {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Roost: a self-hosted IoT device-fleet platform."""


from roost.cli import db, devices, ota, provision, reference, rules, serve, tenants, users  # noqa: E402,F401

app.add_typer(db.app)
app.add_typer(tenants.app)
app.add_typer(users.app)
app.add_typer(devices.app)
app.add_typer(provision.app)
from roost.cli import sim  # noqa: E402,F401  (registers roost sim)
