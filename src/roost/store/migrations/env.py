"""Alembic environment: Roost always hands Alembic an open connection (see roost.store.migrate)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `roost db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    # Only autogenerate needs it (roost.store.migrate.make_revision passes every room's tables).
    target_metadata=context.config.attributes.get("target_metadata"),
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
