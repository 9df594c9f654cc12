"""``roost-agent``: run the device agent, or check its configuration file.

``roost-agent run --config FILE`` runs until SIGTERM or SIGINT (systemd's stop, Ctrl-C); a device
without credentials joins first (``[join]``, see :mod:`roost_agent.joining`).
``roost-agent check --config FILE`` reads the file (and the offline bundle it names) and prints
what the agent would use, secrets masked, and whether it would join or has credentials; or the
error that would stop it. Exit status: 0 fine, 2 a configuration error or a refused join, 1
anything else that stopped the agent.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from roost_agent import __version__
from roost_agent.config import Config, ConfigError, load_config

logger = logging.getLogger("roost_agent")

DEFAULT_CONFIG = "/etc/roost-agent/agent.toml"
SECRET_FIELDS = frozenset({"token", "key"})
#: Keys of extra sections shown masked ([join] group_key, attestation_hash …).
SECRET_WORDS = ("token", "key", "secret", "password", "hash")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EPILOG = """\
examples:
  roost-agent check --config /etc/roost-agent/agent.toml
  roost-agent run --config /etc/roost-agent/agent.toml

A minimal configuration names the offline bundle `roost provision bundle` wrote:

  [device]
  bundle = "/boot/roost/till-07.json"
  [agent]
  data_dir = "/var/lib/roost-agent"

or lets the device join by itself (an enrollment group, or an attestation hash):

  [join]
  api_url = "https://roost.example:8443"
  enrollment_id = "store-displays"
  group_key = "…"

See agent/README.md for every key.
"""


def describe(config: Config) -> dict[str, Any]:
    """The configuration as JSON-able values, secrets masked."""
    shown: dict[str, Any] = {}
    for item in fields(config):
        value = getattr(config, item.name)
        if item.name in SECRET_FIELDS and value:
            value = "***"
        elif item.name == "ca_certificate" and value:
            value = f"<PEM, {value.count('BEGIN CERTIFICATE')} certificate(s)>"
        elif isinstance(value, Path):
            value = str(value)
        elif item.name == "extra":
            value = _masked(value)
        shown[item.name] = value
    return shown


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "***" if any(w in str(k).lower() for w in SECRET_WORDS) else _masked(v)
            for k, v in value.items()
        }
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roost-agent",
        description="Roost's device agent: store-and-forward of telemetry and events, a local "
        "API and metadata service on 127.0.0.1, and command, desired-state and job handlers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"roost-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, text in (
        ("run", "Run the agent until SIGTERM or SIGINT (logs on stderr, one line per event)."),
        ("check", "Read the configuration and print it (secrets masked), or say what is wrong."),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument(
            "--config",
            "-c",
            type=Path,
            default=Path(DEFAULT_CONFIG),
            metavar="FILE",
            help=f"The agent's TOML configuration (default: {DEFAULT_CONFIG}).",
        )
        if name == "run":
            sub.add_argument(
                "--log-level",
                default="info",
                choices=("debug", "info", "warning", "error"),
                help="The least important log lines shown (default: info).",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``roost-agent`` command."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"roost-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        from roost_agent.link import tls_context

        try:
            if config.tls:
                tls_context(config)
        except ConfigError as exc:
            print(f"roost-agent: configuration error: {exc}", file=sys.stderr)
            return 2
        from roost_agent.joining import plan

        print(
            json.dumps({**describe(config), "credentials": plan(config)}, indent=2, sort_keys=True)
        )
        return 0
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    if not config.joined:
        from roost_agent.joining import JoinRefused, join

        try:
            config = join(config)
        except JoinRefused as exc:
            logger.error("cannot join: %s", exc)
            return 2
        except ConfigError as exc:
            logger.error("configuration error: %s", exc)
            return 2
        except KeyboardInterrupt:
            logger.info("SIGINT: stopped before the device joined")
            return 1
    from roost_agent.agent import Agent

    try:
        agent = Agent(config)
        agent.run()
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return 2
    except OSError as exc:
        logger.error("cannot run: %s", exc)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
