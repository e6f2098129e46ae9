"""`weir dags ...`: list, deploy, trigger, test, pause, unpause."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from weir.cli._common import console, duration, fail, parse_conf, server_option, settings, styled
from weir.cli.runs import follow_run
from weir.client import Client
from weir.spec import Schedule
from weir.states import RunState, TaskState


def _schedule(s: Schedule | None) -> str:
    if s is None:
        return "manual"
    if s.cron:
        return s.cron
    return f"every {s.every}"


def _client(ctx: click.Context, server: str | None) -> Client:
    s = settings(ctx)
    return Client(server or s.server, token=s.token.get_secret_value() if s.token else None)


def _load(ctx: click.Context, dags: Path | None) -> tuple[Path, object]:
    from weir._loader import load_folder

    folder = (dags or settings(ctx).dags_folder or Path("dags")).expanduser()
    if not folder.exists():
        fail(f"DAG folder {folder} does not exist (pass --dags or set WEIR_DAGS_FOLDER)")
    return folder, load_folder(folder)


@click.group("dags")
def dags_group() -> None:
    """List, deploy, trigger and test DAGs."""


@dags_group.command("list")
@click.option("--tag", "tags", multiple=True, help="Only DAGs with this tag (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@server_option
@click.pass_context
def list_cmd(ctx: click.Context, tags: tuple[str, ...], as_json: bool, server: str | None) -> None:
    """DAGs registered with the server."""
    with _client(ctx, server) as client:
        found = client.list_dags(tags=tags)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "dag_id": d.dag_id,
                        "paused": d.is_paused,
                        "schedule": _schedule(d.schedule),
                        "tasks": d.task_count,
                        "version": d.latest_version.hash if d.latest_version else None,
                        "tags": list(d.tags),
                    }
                    for d in found
                ],
                indent=2,
            )
        )
        return
    if not found:
        console.print(
            "no DAGs registered yet: start a worker (`weir worker --dags DIR`) or run `weir dags deploy`"
        )
        return
    table = Table(box=None, pad_edge=False)
    for column in ("dag_id", "paused", "schedule", "tasks", "version", "tags", "description"):
        table.add_column(column)
    for d in found:
        table.add_row(
            d.dag_id,
            "yes" if d.is_paused else "no",
            _schedule(d.schedule),
            str(d.task_count),
            d.latest_version.hash[:12] if d.latest_version else "-",
            ",".join(d.tags),
            d.description,
        )
    console.print(table)


@dags_group.command("deploy")
@click.option("--dags", type=click.Path(path_type=Path), help="Folder of DAG files. [env: WEIR_DAGS_FOLDER]")
@server_option
@click.pass_context
def deploy_cmd(ctx: click.Context, dags: Path | None, server: str | None) -> None:
    """Import DAG files and register them with the server (no worker needed)."""
    from weir._loader import DagBag

    folder, bag = _load(ctx, dags)
    assert isinstance(bag, DagBag)
    for path, error in bag.errors.items():
        console.print(f"[red]failed[/] {path}: {error}")
    if not bag.dags:
        fail(f"no DAGs to deploy in {folder}")
    with _client(ctx, server) as client:
        registered = client.register_dags(bag.dags.values())
    for r in registered:
        console.print(
            f"{r.dag_id}: version {r.version.hash[:12]} {'[green](new)[/]' if r.created else '(unchanged)'}"
        )
    if bag.errors:
        fail(f"{len(bag.errors)} file(s) failed to load")


@dags_group.command("trigger")
@click.argument("dag_id")
@click.option("--conf", help="JSON object overriding the DAG params, e.g. '{\"limit\": 10}'.")
@click.option("--run-id", help="Choose the run id (unique). [default: generated]")
@click.option("--wait", is_flag=True, help="Follow the run until it ends; exit 1 if it fails.")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds (exit 2).")
@server_option
@click.pass_context
def trigger_cmd(
    ctx: click.Context,
    dag_id: str,
    conf: str | None,
    run_id: str | None,
    wait: bool,
    timeout: float | None,
    server: str | None,
) -> None:
    """Start a run of DAG_ID now."""
    with _client(ctx, server) as client:
        run = client.trigger(dag_id, parse_conf(conf), run_id=run_id)
        console.print(f"run [bold]{run.run_id}[/] {styled(run.state)}")
        if run.state is RunState.QUEUED:
            console.print("  (queued: the DAG is paused or at max_active_runs)")
        if wait:
            final = follow_run(client, run.run_id, timeout)
            if final.state is not RunState.SUCCESS:
                raise SystemExit(1)


@dags_group.command("test")
@click.argument("dag_id")
@click.option("--dags", type=click.Path(path_type=Path), help="Folder of DAG files. [env: WEIR_DAGS_FOLDER]")
@click.option("--conf", help="JSON object overriding the DAG params.")
@click.pass_context
def test_cmd(ctx: click.Context, dag_id: str, dags: Path | None, conf: str | None) -> None:
    """Run DAG_ID once in this process, without a server; exit 1 if it fails.

    Tasks run one at a time in dependency order with the same trigger rules
    and argument passing as on a server; output goes to the terminal.
    """
    from weir._loader import DagBag
    from weir._local import LocalTaskResult, run_locally

    _, bag = _load(ctx, dags)
    assert isinstance(bag, DagBag)
    if dag_id not in bag.dags:
        for path, error in bag.errors.items():
            console.print(f"[red]failed[/] {path}: {error}")
        try:
            bag.get(dag_id)
        except KeyError as exc:
            fail(str(exc.args[0]))

    def report(task_id: str, result: LocalTaskResult | None) -> None:
        if result is None:
            console.print(f"[bold]▶ {task_id}[/]")
            return
        line = f"  {styled(result.state)} {task_id} in {duration_s(result.seconds)}"
        if result.state is TaskState.SUCCESS:
            line += f" → {json.dumps(result.result)[:200]}"
        console.print(line)
        if result.error and result.state is TaskState.FAILED:
            console.print(result.error, style="red", markup=False)

    run = run_locally(bag.dags[dag_id], conf=parse_conf(conf), report=report)
    console.print(f"DAG {dag_id}: {styled(run.state)}")
    if run.state is not RunState.SUCCESS:
        raise SystemExit(1)


def duration_s(seconds: float) -> str:
    from datetime import timedelta

    return duration(timedelta(seconds=seconds))


def _set_paused(ctx: click.Context, dag_id: str, server: str | None, paused: bool) -> None:
    with _client(ctx, server) as client:
        info = client.pause(dag_id) if paused else client.unpause(dag_id)
    console.print(f"{info.dag_id}: {'paused' if info.is_paused else 'unpaused'}")


@dags_group.command("pause")
@click.argument("dag_id")
@server_option
@click.pass_context
def pause_cmd(ctx: click.Context, dag_id: str, server: str | None) -> None:
    """Stop starting new runs of DAG_ID (running runs carry on)."""
    _set_paused(ctx, dag_id, server, True)


@dags_group.command("unpause")
@click.argument("dag_id")
@server_option
@click.pass_context
def unpause_cmd(ctx: click.Context, dag_id: str, server: str | None) -> None:
    """Start runs of DAG_ID again, beginning with those queued while paused."""
    _set_paused(ctx, dag_id, server, False)


def register(cli: click.Group) -> None:
    cli.add_command(dags_group)
