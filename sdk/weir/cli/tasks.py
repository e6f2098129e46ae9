"""`weir tasks ...`: logs."""

from __future__ import annotations

import sys

import click

from weir.cli._common import server_option, settings
from weir.client import Client


@click.group("tasks")
def tasks_group() -> None:
    """Inspect task instances."""


@tasks_group.command("logs")
@click.argument("run_id")
@click.argument("task_id")
@click.option(
    "--try", "try_number", type=click.IntRange(0), default=0, help="Which try. [default: the latest]"
)
@click.option("--map-index", type=int, default=-1, help="Map index of a mapped task.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing output until the try ends.")
@server_option
@click.pass_context
def logs_cmd(
    ctx: click.Context,
    run_id: str,
    task_id: str,
    try_number: int,
    map_index: int,
    follow: bool,
    server: str | None,
) -> None:
    """Print what TASK_ID of RUN_ID wrote to stdout and stderr."""
    s = settings(ctx)
    with Client(server or s.server, token=s.token.get_secret_value() if s.token else None) as client:
        for data in client.iter_logs(
            run_id, task_id, try_number=try_number, map_index=map_index, follow=follow
        ):
            sys.stdout.buffer.write(data)
            sys.stdout.flush()


def register(cli: click.Group) -> None:
    cli.add_command(tasks_group)
