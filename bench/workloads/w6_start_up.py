"""W6 start-up: `weir standalone` from cold to its first task running; idle memory of each process."""

from __future__ import annotations

import socket
import statistics
import time
import uuid

from bench.cluster import bench_dags_folder, process_env
from bench.harness import Harness
from bench.model import Case, Metric, Target, Values, Workload
from bench.procs import Proc, free_port, pss_mb, rss_mb
from weir import Client
from weir.errors import WeirError

DAG = "bench_single"


def _wait_for_port(port: int, proc: Proc, timeout: float = 60) -> None:
    """Until the port accepts connections (a gRPC channel that failed once backs off for a second)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"standalone did not listen on {port}:\n{proc.tail()}") from None
            time.sleep(0.002)


def standalone(h: Harness, idle: float) -> Values:
    folder = h.env.workdir / f"w6-standalone-{uuid.uuid4().hex[:6]}"
    home = folder / "home"  # fresh: no database yet, standalone creates and migrates it
    home.mkdir(parents=True)
    port = free_port()
    argv = [
        str(h.env.repo / ".venv" / "bin" / "weir"),
        "standalone",
        "--dags",
        str(bench_dags_folder(h.env)),
        "--port",
        str(port),
        "--concurrency",
        str(h.env.concurrency),
    ]
    began = time.time()
    proc = Proc(
        "standalone", argv, env=process_env(h.env, home, []), log_path=folder / "standalone.log", cwd=folder
    )
    try:
        _wait_for_port(port, proc)
        listening = time.time() - began
        with Client(f"127.0.0.1:{port}", timeout=10) as client:
            while True:
                try:
                    client.get_dag(DAG)  # registered by the worker once it has imported the DAG files
                    break
                except WeirError:
                    if not proc.alive():
                        raise RuntimeError(f"standalone exited:\n{proc.tail()}") from None
                    time.sleep(0.002)
            registered = time.time() - began
            run = client.trigger(DAG)
            client.wait(run.run_id, timeout=60)
            [ti] = client.task_instances(run.run_id)
            assert ti.started_at is not None
            first = ti.started_at.timestamp() - began
        time.sleep(idle)
        pids = [proc.pid, *proc.descendants()]
        return {
            "first_task": first,
            "listening": listening,
            "registered": registered,
            "standalone_rss": sum(rss_mb(p) for p in pids),
            "standalone_pss": sum(pss_mb(p) for p in pids),
            "standalone_main": rss_mb(proc.pid),
        }
    finally:
        proc.stop()


def separate(h: Harness, idle: float) -> Values:
    with h.cluster("w6-idle", [], workers=1) as c:
        time.sleep(idle)
        assert c.server is not None
        [worker] = c.workers
        runners = worker.descendants()
        return {
            "server_rss": rss_mb(c.server.pid),
            "worker_rss": rss_mb(worker.pid),
            "runner_rss": statistics.median(rss_mb(p) for p in runners),
            "worker_all_pss": pss_mb(worker.pid) + sum(pss_mb(p) for p in runners),
        }


def case(*, smoke: bool) -> Case:
    idle = 1.0 if smoke else 10.0
    metrics = (
        Metric("first_task", "standalone: start → first task running", "s", target=Target("<", 2)),
        Metric("listening", "standalone: start → gRPC port open", "s"),
        Metric("registered", "standalone: start → DAGs registered", "s"),
        Metric(
            "standalone_rss",
            "standalone idle RSS, process + runners (sum)",
            "MiB",
            target=Target("<", 250),
        ),
        Metric("standalone_pss", "standalone idle PSS, process + runners (sum)", "MiB"),
        Metric("standalone_main", "standalone idle RSS, main process", "MiB"),
        Metric("server_rss", "`weir server` idle RSS", "MiB"),
        Metric("worker_rss", "`weir worker` idle RSS, main process", "MiB"),
        Metric("runner_rss", "runner process idle RSS, each", "MiB"),
        Metric("worker_all_pss", "`weir worker` idle PSS, process + runners (sum)", "MiB"),
    )

    def measure(h: Harness) -> Values:
        return {**standalone(h, idle), **separate(h, idle)}

    return Case("cold start, then idle", metrics, measure)


WORKLOAD = Workload(
    id="W6",
    title="start-up and idle memory",
    method=(
        "`weir standalone --dags bench/dags` is started with a fresh `WEIR_HOME` (no database yet: "
        "it creates and migrates its SQLite file). As soon as its port accepts connections and "
        "the worker has registered the DAGs, a one-task run is triggered; the figure is that task's "
        "`started_at` minus the moment the process was spawned (one host clock). After 10 s idle, "
        "RSS and PSS (from /proc) are summed over the process and its runner processes (one per "
        "slot); RSS counts shared pages once per process, PSS splits them. Then `weir server` on "
        "Postgres and one `weir worker` are started separately and measured idle the same way. "
        'Page caches are warm (the harness cannot drop them): "cold" means new processes and a '
        "new database."
    ),
    cases=lambda smoke: [case(smoke=smoke)],
)
