"""`weir db ...`: schema migrations (alembic)."""

from __future__ import annotations

from typing import Any

import click

from weir.cli._common import console, fail, settings


def _migrate() -> Any:
    try:
        from weir.server import migrate
    except ImportError as exc:
        fail(f"this command needs the server extra ({exc.name} is missing): pip install 'weir[server]'")
    return migrate


def _url(ctx: click.Context, db: str | None) -> str:
    return db or settings(ctx).database_url


_db_option = click.option("--db", metavar="URL", help="Database URL. [env: WEIR_DATABASE_URL]")


@click.group("db")
def db_group() -> None:
    """Create and migrate the metadata database."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@_db_option
@click.pass_context
def upgrade_cmd(ctx: click.Context, revision: str, db: str | None) -> None:
    """Create the schema or bring it up to date. Never loses data."""
    migrate = _migrate()
    url = _url(ctx, db)
    status = migrate.upgrade(url, revision)
    console.print(status.describe(url))


@db_group.command("downgrade")
@click.argument("revision")
@_db_option
@click.pass_context
def downgrade_cmd(ctx: click.Context, revision: str, db: str | None) -> None:
    """Go back to REVISION (use "base" to drop everything Weir created)."""
    migrate = _migrate()
    url = _url(ctx, db)
    status = migrate.downgrade(url, revision)
    console.print(f"database at revision {status.current or 'base'}")


@db_group.command("check")
@_db_option
@click.pass_context
def check_cmd(ctx: click.Context, db: str | None) -> None:
    """Exit 0 when the schema is current, 1 otherwise (with the command that fixes it)."""
    migrate = _migrate()
    from weir.server.store.db import make_engine

    url = _url(ctx, db)
    engine = make_engine(url)
    try:
        status = migrate.status(engine)
    finally:
        engine.dispose()
    if status.state is not migrate.SchemaState.CURRENT:
        fail(status.describe(url))
    console.print(status.describe(url))


def register(cli: click.Group) -> None:
    cli.add_command(db_group)
