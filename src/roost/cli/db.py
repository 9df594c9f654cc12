"""``roost db``: the database schema (Alembic migrations)."""

from __future__ import annotations

from roost.cli.common import DatabaseUrlOption, DataDirOption, group, open_roost, out, run
from roost.store import migrate

app = group("db", "Database schema: upgrade it, or show its revision.")


@app.command(
    epilog="Examples:\n\n"
    "  roost db upgrade\n\n"
    "  roost db upgrade --database-url postgresql://roost@db.internal/roost"
)
def upgrade(data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Upgrade the database schema to this version of Roost (creates it when empty).

    `roost serve` does this on start too; run it by hand before starting several servers.
    """

    async def work() -> tuple[str | None, str | None]:
        async with open_roost(data_dir, database_url, start=False) as roost:
            return await migrate.upgrade(roost.db)

    before, after = run(work())
    if before == after:
        out.print(f"database already at revision {after} (the newest)")
    else:
        out.print(f"database upgraded: {before or '(empty)'} → {after}")


@app.command()
def current(data_dir: DataDirOption = None, database_url: DatabaseUrlOption = None) -> None:
    """Show the database's schema revision and whether it is the newest this Roost knows."""

    async def work() -> str | None:
        async with open_roost(data_dir, database_url, start=False) as roost:
            return await migrate.current_revision(roost.db)

    revision = run(work())
    head = migrate.head_revision()
    if revision == head:
        out.print(f"{revision} (head)")
    else:
        shown = revision or "(empty)"
        out.print(f"{shown} (the newest is {head}: run `roost db upgrade`)")
