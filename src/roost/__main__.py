"""``python -m roost`` runs the ``roost`` command."""

from roost.cli.main import app

app(prog_name="roost")
