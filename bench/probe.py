"""`python -m bench.probe`: look inside one workload run, to explain a figure.

- `tx DAG`: runs the server in this process with hooks on its database
  layer, then one run of DAG on real workers; prints, per store function,
  how long transactions waited for a database thread and how long they ran,
  and how many statements and commits each task cost.
- `hop DAG`: one run of a chain; splits each task's time using the
  server's timestamps and the worker's log lines (same host clock, 1 ms).

For CPU profiles, attach py-spy to the processes of a normal run instead:
`py-spy record --gil --format raw -o out.txt --pid <server pid>`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cli import DEFAULT_PG, REPO
from bench.cluster import Cluster
from bench.database import seconds
from bench.harness import Harness
from bench.model import Env, percentile


def _env(workdir: Path, pg: str) -> Env:
    return Env(backend="postgres", pg_admin=pg, smoke=False, workdir=workdir, repo=REPO, concurrency=8)


def _line(values: list[float]) -> str:
    return f"p50 {percentile(values, 50):7.2f}  p99 {percentile(values, 99):8.2f} ms  (n={len(values)})"


def tx(env: Env, dag_id: str, workers: int) -> None:
    from sqlalchemy import event

    from weir.config import load as load_settings
    from weir.server.app import Server
    from weir.server.store import db as store_db

    waited: dict[str, list[float]] = defaultdict(list)
    ran: dict[str, list[float]] = defaultdict(list)
    statements: Counter[str] = Counter()
    on = threading.Event()
    original = store_db.Database._submit

    async def timed_submit(self: Any, runner: Callable[..., Any], fn: Any, *args: Any, **kwargs: Any) -> Any:
        queued, began = time.perf_counter(), [0.0]

        def run(*a: Any, **k: Any) -> Any:
            began[0] = time.perf_counter()
            return runner(*a, **k)

        result = await original(self, run, fn, *args, **kwargs)
        if on.is_set():
            name = f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__qualname__}"
            waited[name].append((began[0] - queued) * 1000)
            ran[name].append((time.perf_counter() - began[0]) * 1000)
        return result

    store_db.Database._submit = timed_submit  # type: ignore[method-assign]
    harness = Harness(env)
    try:
        with harness.databases.fresh() as db:
            cluster = Cluster(env, db, name="probe", dags=[dag_id])
            settings = load_settings(
                database_url=db.url, grpc_port=cluster.port, grpc_bind="127.0.0.1", log_level="WARNING"
            )
            server = Server(settings)

            @event.listens_for(server.db.engine, "before_cursor_execute")
            def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
                if on.is_set():
                    statements[" ".join(statement.split())[:100]] += 1

            @event.listens_for(server.db.engine, "commit")
            def commit(conn: Any) -> None:
                if on.is_set():
                    statements["COMMIT"] += 1

            loop = asyncio.new_event_loop()
            started = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.run_until_complete(server.start())
                started.set()
                loop.run_forever()

            threading.Thread(target=serve, daemon=True).start()
            started.wait(60)
            try:
                cluster.start_workers(workers)
                cluster.warm_up()
                on.set()
                run = cluster.run(dag_id)
                on.clear()
                n = len(db.tasks(run_ids=[run.run_id]))
            finally:
                cluster.stop()
                asyncio.run_coroutine_threadsafe(server.stop(), loop).result(60)
                loop.call_soon_threadsafe(loop.stop)
    finally:
        harness.databases.close()
        store_db.Database._submit = original  # type: ignore[method-assign]

    print(f"{dag_id}: {n} tasks, {workers} worker(s) x {env.concurrency} slots")
    print("transactions by store function: wait for a database thread | run (ms)")
    for name in sorted(ran, key=lambda k: -sum(ran[k])):
        print(f"  {name:32s} wait {_line(waited[name])} | run {_line(ran[name])}")
    print(f"per task: {statements['COMMIT'] / n:.2f} commits, {sum(statements.values()) / n:.2f} statements")
    for sql, k in statements.most_common(12):
        print(f"  {k / n:7.3f}  {sql}")


def hop(env: Env, dag_id: str) -> None:
    harness = Harness(env)
    try:
        with harness.cluster("probe-hop", [dag_id], workers=1) as c:
            run = c.run(dag_id)
            tasks = sorted(c.db.tasks(run_ids=[run.run_id]), key=lambda t: t.task_id)
            log = c.workers[0].output()
    finally:
        harness.databases.close()

    def at(stamp: str) -> datetime:
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)

    seen: dict[str, dict[str, datetime]] = {"start": {}, "success": {}}
    pattern = rf"^(\S+ \S+) INFO\s+weir\.worker: (start|success) \S+?\.(\w+) \(run {re.escape(run.run_id)}"
    for m in re.finditer(pattern, log, re.MULTILINE):
        seen[m.group(2)][m.group(3)] = at(m.group(1))
    parts: dict[str, list[float]] = defaultdict(list)
    for prev, t in zip([None, *tasks], tasks, strict=False):
        start, done = seen["start"].get(t.task_id), seen["success"].get(t.task_id)
        if t.started_at is None or t.ended_at is None or start is None or done is None:
            continue
        if prev is not None and prev.ended_at is not None:
            parts["hop: upstream ended_at -> claimed"].append(
                (t.started_at - prev.ended_at).total_seconds() * 1000
            )
        parts["claimed -> worker starts it"].append((start - t.started_at).total_seconds() * 1000)
        parts["worker starts -> runner replied"].append((done - start).total_seconds() * 1000)
        parts["runner replied -> ended_at (report)"].append((t.ended_at - done).total_seconds() * 1000)
    span = seconds(tasks[-1].ended_at, tasks[0].started_at)
    print(f"{dag_id}: {len(tasks)} tasks, {span / len(tasks) * 1000:.2f} ms per task")
    for name, values in parts.items():
        print(f"  {name:38s} {_line(values)}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__)
    p.add_argument("--pg", default=DEFAULT_PG, help="Postgres URL to create and drop databases")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tx", help="transaction timing and statements per task")
    t.add_argument("dag_id")
    t.add_argument("--workers", type=int, default=1)
    h = sub.add_parser("hop", help="where a chain task's time goes")
    h.add_argument("dag_id", nargs="?", default="bench_chain_200")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="weir-probe-") as tmp:
        env = _env(Path(tmp), args.pg)
        if args.command == "tx":
            tx(env, args.dag_id, args.workers)
        else:
            hop(env, args.dag_id)


if __name__ == "__main__":
    main()
