"""`weir runs ...`: list, show, wait."""

from __future__ import annotations

import time

import click
from rich.table import Table

from weir.cli._common import console, duration, server_option, settings, styled, when
from weir.client import Client
from weir.models import DagRun, TaskInstance
from weir.states import RunState, TaskState

_SHOWN = {
    TaskState.RUNNING,
    TaskState.SUCCESS,
    TaskState.FAILED,
    TaskState.UP_FOR_RETRY,
    TaskState.UPSTREAM_FAILED,
    TaskState.SKIPPED,
    TaskState.REMOVED,
}


def _client(ctx: click.Context, server: str | None) -> Client:
    s = settings(ctx)
    return Client(server or s.server, token=s.token.get_secret_value() if s.token else None)


def _task_line(ti: TaskInstance) -> str:
    line = f"  {styled(ti.state, 15)} {ti.task_id}"
    if ti.state is TaskState.RUNNING:
        line += f" (try {ti.try_number}/{ti.max_tries}{', on ' + ti.worker_id if ti.worker_id else ''})"
    elif ti.state in (TaskState.SUCCESS, TaskState.FAILED) and ti.duration is not None:
        line += f" in {duration(ti.duration)}"
    if ti.error and ti.state in (TaskState.FAILED, TaskState.UP_FOR_RETRY):
        line += f": [red]{ti.error}[/]"
    return line


def follow_run(client: Client, run_id: str, timeout: float | None) -> DagRun:
    """Print task state changes until the run ends (TimeoutError after `timeout`)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: dict[str, tuple[TaskState, int]] = {}
    while True:
        try:
            run = client.wait(run_id, timeout=1.0)
        except TimeoutError:
            run = client.get_run(run_id)
        for ti in client.task_instances(run_id):
            key = (ti.state, ti.try_number)
            if ti.state in _SHOWN and seen.get(ti.task_id) != key:
                console.print(_task_line(ti))
            seen[ti.task_id] = key
        if run.state.finished:
            console.print(f"run [bold]{run.run_id}[/] {styled(run.state)} in {duration(run.duration)}")
            return run
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"run {run_id} is still {run.state.value} after {timeout:g}s")


@click.group("runs")
def runs_group() -> None:
    """Inspect and wait for DAG runs."""


@runs_group.command("list")
@click.option("--dag", "dag_id", help="Only runs of this DAG.")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in RunState]),
    help="Only runs in this state (repeatable).",
)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@server_option
@click.pass_context
def list_cmd(
    ctx: click.Context, dag_id: str | None, states: tuple[str, ...], limit: int, server: str | None
) -> None:
    """Recent runs, newest first."""
    with _client(ctx, server) as client:
        found = client.list_runs(dag_id, states=[RunState(s) for s in states], limit=limit)
    if not found:
        console.print("no runs")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("run_id", "dag_id", "state", "type", "queued", "duration"):
        table.add_column(column)
    for r in found:
        table.add_row(
            r.run_id, r.dag_id, styled(r.state), r.run_type.value, when(r.queued_at), duration(r.duration)
        )
    console.print(table)


@runs_group.command("show")
@click.argument("run_id")
@server_option
@click.pass_context
def show_cmd(ctx: click.Context, run_id: str, server: str | None) -> None:
    """A run and the state of each of its tasks."""
    with _client(ctx, server) as client:
        run = client.get_run(run_id)
        tis = client.task_instances(run_id)
    console.print(f"run [bold]{run.run_id}[/]  dag {run.dag_id}  {styled(run.state)}")
    console.print(
        f"  type {run.run_type.value}  version {run.version.hash[:12] if run.version else '-'}  "
        f"queued {when(run.queued_at)}  started {when(run.started_at)}  ended {when(run.ended_at)}  "
        f"duration {duration(run.duration)}"
    )
    if run.conf:
        console.print(f"  conf {run.conf}")
    table = Table(box=None, pad_edge=False)
    for column in ("task", "state", "try", "duration", "worker", "error"):
        table.add_column(column, overflow="fold")
    for ti in tis:
        table.add_row(
            ti.task_id,
            styled(ti.state),
            f"{ti.try_number}/{ti.max_tries}",
            duration(ti.duration),
            ti.worker_id or "-",
            str(ti.error) if ti.error else "",
        )
    console.print(table)


@runs_group.command("wait")
@click.argument("run_id")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 2).")
@server_option
@click.pass_context
def wait_cmd(ctx: click.Context, run_id: str, timeout: float | None, server: str | None) -> None:
    """Follow RUN_ID until it ends: exit 0 on success, 1 on failure, 2 on timeout."""
    with _client(ctx, server) as client:
        run = follow_run(client, run_id, timeout)
    if run.state is not RunState.SUCCESS:
        raise SystemExit(1)


@runs_group.command("cancel")
@click.argument("run_id")
@server_option
@click.pass_context
def cancel_cmd(ctx: click.Context, run_id: str, server: str | None) -> None:
    """End RUN_ID now: waiting tasks are removed, running ones are killed by their workers."""
    with _client(ctx, server) as client:
        run = client.cancel(run_id)
    console.print(f"run [bold]{run.run_id}[/] cancelled: {styled(run.state)}")


def register(cli: click.Group) -> None:
    cli.add_command(runs_group)
