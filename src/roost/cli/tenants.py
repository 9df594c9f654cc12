"""``roost tenant``: the customer organisations that own everything else."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from roost.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    JsonOption,
    every_page,
    group,
    new_password,
    new_table,
    open_roost,
    out,
    print_json,
    run,
    when,
)
from roost.core.access import local_admin

app = group("tenant", "Tenants: the organisations that own devices, users and everything else.")


@app.command(
    epilog="Examples:\n\n"
    "  roost tenant create acme --name 'ACME Retail'\n\n"
    "  roost tenant create acme --name 'ACME Retail' --admin-user acme-admin"
)
def create(
    tenant_id: Annotated[
        str, typer.Argument(metavar="ID", help="Tenant id: lower-case letters, digits and -.")
    ],
    name: Annotated[str, typer.Option("--name", help="Display name of the tenant.")],
    description: Annotated[str, typer.Option("--description", help="Free text.")] = "",
    admin_user: Annotated[
        str | None,
        typer.Option("--admin-user", help="Also create this user as the tenant's first admin."),
    ] = None,
    admin_password: Annotated[
        str | None,
        typer.Option(
            "--admin-password",
            help="Password of --admin-user (prompted for on a terminal, else generated).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create a tenant, optionally with its first admin user."""
    password, generated = None, False
    if admin_user is not None:
        password, generated = new_password(admin_password, f"Password for {admin_user}")
    elif admin_password is not None:
        raise typer.BadParameter(
            "--admin-password needs --admin-user", param_hint="--admin-password"
        )

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            return await roost.identity.create_tenant(
                local_admin(),
                tenant_id,
                name,
                description,
                admin_username=admin_user,
                admin_password=password,
            )

    tenant = run(work())
    out.print(f"created tenant {tenant['id']} ({tenant['name']})")
    if admin_user is not None:
        out.print(f"created admin user {admin_user}")
        if generated:
            out.print(f"password for {admin_user}: {password}  (shown once)")


@app.command("list")
def list_(
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List every tenant."""

    async def work() -> list[dict[str, Any]]:
        async with open_roost(data_dir, database_url) as roost:
            return await every_page(lambda page: roost.identity.list_tenants(local_admin(), page))

    tenants = run(work())
    if as_json:
        print_json(tenants)
        return
    table = new_table("id", "name", "created")
    for tenant in tenants:
        table.add_row(tenant["id"], tenant["name"], when(tenant["created_at"]))
    out.print(table)
