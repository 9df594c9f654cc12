"""``roost user``: people who log in, with a role in a tenant."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from roost.cli.common import (
    DatabaseUrlOption,
    DataDirOption,
    JsonOption,
    TenantOption,
    every_page,
    group,
    new_password,
    new_table,
    open_roost,
    out,
    print_json,
    run,
    tenant_actor,
    when,
)
from roost.core.access import local_admin

app = group("user", "Users: create them, list them, reset their passwords.")

PasswordOption = Annotated[
    str | None,
    typer.Option(
        "--password",
        help="The password (at least 8 characters). Without it: prompted for on a terminal, "
        "otherwise generated and printed once.",
        show_default=False,
    ),
]


@app.command(
    epilog="Examples:\n\n"
    "  roost user create olivia --role operator\n\n"
    "  roost user create ci-bot --role viewer --tenant acme --password 'long random secret'"
)
def create(
    username: Annotated[str, typer.Argument(help="Login name, unique across all tenants.")],
    role: Annotated[
        Literal["viewer", "operator", "admin"],
        typer.Option("--role", help="The user's role in the tenant: viewer, operator or admin."),
    ],
    tenant: TenantOption = "default",
    password: PasswordOption = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Create a user with a role in a tenant."""
    secret, generated = new_password(password, f"Password for {username}")

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            return await roost.identity.create_user(local_admin(), username, secret, role, tenant)

    user = run(work())
    out.print(f"created user {user['username']} ({user['role']} in {user['tenant_id']})")
    if generated:
        out.print(f"password for {username}: {secret}  (shown once)")


@app.command("list")
def list_(
    tenant: TenantOption = "default",
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """List the users of a tenant."""

    async def work() -> list[dict[str, Any]]:
        async with open_roost(data_dir, database_url) as roost:
            actor = await tenant_actor(roost, tenant)
            return await every_page(lambda page: roost.identity.list_users(actor, page))

    users = run(work())
    if as_json:
        print_json(users)
        return
    table = new_table("username", "role", "superuser", "disabled", "last login")
    for user in users:
        table.add_row(
            user["username"],
            user["role"],
            "yes" if user["is_superuser"] else "",
            "yes" if user["disabled"] else "",
            when(user["last_login_at"]),
        )
    out.print(table)


@app.command(
    "set-password",
    epilog="Examples:\n\n"
    "  roost user set-password admin\n\n"
    "  roost user set-password olivia --password 'correct horse battery'",
)
def set_password(
    username: Annotated[str, typer.Argument(help="The user whose password to set.")],
    password: PasswordOption = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Set a user's password (for example the superuser's, when it is lost)."""
    secret, generated = new_password(password, f"New password for {username}")

    async def work() -> dict[str, Any]:
        async with open_roost(data_dir, database_url) as roost:
            return await roost.identity.set_password_by_username(local_admin(), username, secret)

    run(work())
    out.print(f"password of {username} changed")
    if generated:
        out.print(f"new password for {username}: {secret}  (shown once)")
