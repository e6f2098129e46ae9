"""`weir config show`."""

from __future__ import annotations

import click
from rich.table import Table

from weir.cli._common import console, settings
from weir.config import config_file


@click.group("config")
def config_group() -> None:
    """Inspect configuration (WEIR_* variables over weir.toml)."""


@config_group.command("show")
@click.pass_context
def show(ctx: click.Context) -> None:
    """Print every setting, its value and where it came from."""
    s = settings(ctx)
    path = config_file()
    where = path if path else "none (looked for $WEIR_CONFIG, ./weir.toml, $WEIR_HOME/weir.toml)"
    console.print(f"config file: {where}")
    table = Table(box=None, pad_edge=False)
    for column in ("setting", "value", "from", "meaning"):
        table.add_column(column, overflow="fold")
    for name, value, source, description in s.describe():
        # An unset optional setting has a meaning its description gives ("unset: 4 per slot").
        table.add_row(f"WEIR_{name.upper()}", "unset" if value is None else str(value), source, description)
    console.print(table)


def register(cli: click.Group) -> None:
    cli.add_command(config_group)
