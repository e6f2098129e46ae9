"""Long-running processes: `weir server`, `weir worker`, `weir standalone`."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import click

from weir.cli._common import console, fail, server_option, settings, setup_logging
from weir.config import Settings
from weir.config import load as load_settings


def _server_modules() -> Any:
    try:
        from weir.server import app, migrate
    except ImportError as exc:
        fail(f"this command needs the server extra ({exc.name} is missing): pip install 'weir[server]'")
    return app, migrate


def _overrides(ctx: click.Context, **values: Any) -> Settings:
    base = settings(ctx)
    changed = {k: v for k, v in values.items() if v is not None}
    if not changed:
        return base
    try:
        return load_settings(**{**base.model_dump(), **changed})
    except Exception as exc:
        fail(f"invalid option: {exc}")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


@click.command("server")
@click.option("--db", "database_url", metavar="URL", help="Metadata database. [env: WEIR_DATABASE_URL]")
@click.option("--port", "grpc_port", type=int, help="gRPC port. [env: WEIR_GRPC_PORT; default: 50051]")
@click.option("--bind", "grpc_bind", help="Interface to listen on. [env: WEIR_GRPC_BIND; default: 0.0.0.0]")
@click.pass_context
def server_cmd(
    ctx: click.Context, database_url: str | None, grpc_port: int | None, grpc_bind: str | None
) -> None:
    """Run the control plane: gRPC API, scheduler and lease queue.

    The database must be migrated first (`weir db upgrade`); the server
    refuses to start on an older or newer schema. SIGTERM stops it
    gracefully: in-flight calls finish, then it exits 0.
    """
    s = _overrides(ctx, database_url=database_url, grpc_port=grpc_port, grpc_bind=grpc_bind)
    setup_logging(s.log_level)
    app, _ = _server_modules()
    asyncio.run(app.Server(s).serve())


def worker_options(
    s: Settings,
    dags: Path | None,
    queues: str | None,
    concurrency: int | None,
    server: str | None,
    worker_id: str | None,
    prefetch: int | None = None,
) -> Any:
    from weir.worker.worker import WorkerOptions, default_worker_id

    folder = (dags or s.dags_folder or Path("dags")).expanduser()
    if not folder.exists():
        fail(f"DAG folder {folder} does not exist (pass --dags or set WEIR_DAGS_FOLDER)")
    return WorkerOptions(
        server=server or s.server,
        dags_folder=folder,
        queues=[q.strip() for q in (queues or s.worker_queues).split(",") if q.strip()],
        concurrency=concurrency or s.worker_concurrency,
        prefetch=prefetch if prefetch is not None else s.worker_prefetch,
        poll_wait=s.poll_wait_seconds,
        token=s.token.get_secret_value() if s.token else None,
        worker_id=worker_id or default_worker_id(),
        shutdown_grace=s.shutdown_grace_seconds,
    )


@click.command("worker")
@click.option("--dags", type=click.Path(path_type=Path), help="Folder of DAG files. [env: WEIR_DAGS_FOLDER]")
@click.option("--queues", help="Comma-separated queues to claim from. [default: default]")
@click.option("--concurrency", type=click.IntRange(1, 1000), help="Tasks run at once. [default: 8]")
@click.option(
    "--prefetch",
    type=click.IntRange(0, 100_000),
    help="Tasks claimed ahead of idle runners while tasks are short (under 50 ms), so one poll "
    "serves many; never more than the runners get through in 0.25 s; 0 claims only for idle "
    "runners. [default: 16 per slot; env: WEIR_WORKER_PREFETCH]",
)
@click.option("--worker-id", help="Stable name for this worker. [default: host-pid-random]")
@server_option
@click.pass_context
def worker_cmd(
    ctx: click.Context,
    dags: Path | None,
    queues: str | None,
    concurrency: int | None,
    prefetch: int | None,
    worker_id: str | None,
    server: str | None,
) -> None:
    """Claim tasks from the server and run them.

    Imports the DAG files, registers them with the server, then long-polls
    for work, running each task in a separate process. SIGTERM stops claiming
    and lets running tasks finish.
    """
    s = settings(ctx)
    setup_logging(s.log_level)
    options = worker_options(s, dags, queues, concurrency, server, worker_id, prefetch)
    from weir.worker.worker import Worker

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await Worker(options).run(stop)

    asyncio.run(main())


@click.command("standalone")
@click.option(
    "--dags", type=click.Path(path_type=Path), help="Folder of DAG files. [default: $WEIR_HOME/dags]"
)
@click.option("--port", "grpc_port", type=int, help="gRPC port. [default: 50051]")
@click.option("--concurrency", type=click.IntRange(1, 1000), help="Worker slots. [default: 8]")
@click.pass_context
def standalone_cmd(
    ctx: click.Context, dags: Path | None, grpc_port: int | None, concurrency: int | None
) -> None:
    """Run server and worker in one process on an embedded SQLite database.

    The quickest way to try Weir on one machine: the database lives in
    $WEIR_HOME (default ~/.weir) and is created or migrated on start.
    """
    base = settings(ctx)
    local_bind = base.grpc_bind if "WEIR_GRPC_BIND" in os.environ else "127.0.0.1"
    s = _overrides(ctx, grpc_port=grpc_port, grpc_bind=local_bind)
    setup_logging(s.log_level)
    app, migrate = _server_modules()
    status = migrate.upgrade(s.database_url)
    console.print(f"[bold]weir standalone[/]: {status.describe(s.database_url)}")
    from weir.worker.worker import Worker

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        server = app.Server(s)
        bound = await server.start()
        address = f"127.0.0.1:{bound.port}"
        options = worker_options(s, dags, None, concurrency, address, None)
        worker = Worker(options)
        console.print(
            f"  server   {address}  (database {s.database_url})\n"
            f"  worker   {options.concurrency} slots, DAGs from {options.dags_folder}\n"
            f"  try      weir dags list   |   weir dags trigger <dag_id> --wait\n"
            "  stop     Ctrl+C"
        )
        try:
            await worker.run(stop)
        finally:
            await server.stop()

    asyncio.run(main())


def register(cli: click.Group) -> None:
    cli.add_command(server_cmd)
    cli.add_command(worker_cmd)
    cli.add_command(standalone_cmd)
