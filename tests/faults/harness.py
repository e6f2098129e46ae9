"""Fault-injection harness: a private PostgreSQL, real weir processes, a side table.

The suite restarts Postgres and kills connections, so it runs its own
cluster (initdb into a temporary folder) instead of the shared one. Task
bodies record every execution in a side table, so losses and duplicates are
counted, not assumed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.conftest import free_port
from tests.helpers import WEIR, Proc, spawn, wait_until
from weir import Client

PG_ROOT = Path("/usr/lib/postgresql")

#: Short leases so a dead worker's tasks come back within seconds.
FAST_FAILOVER = {
    "WEIR_LEASE_SECONDS": "3",
    "WEIR_HEARTBEAT_SECONDS": "1",
    "WEIR_SWEEP_SECONDS": "0.5",
    "WEIR_SAFETY_POLL_SECONDS": "0.5",
    "WEIR_POLL_WAIT_SECONDS": "5",
    "WEIR_SHUTDOWN_GRACE_SECONDS": "5",
    "WEIR_DB_UNAVAILABLE_EXIT_SECONDS": "120",
}


def _pg_bin() -> Path | None:
    for version in sorted(PG_ROOT.glob("*"), reverse=True):
        if (version / "bin" / "initdb").exists():
            return version / "bin"
    return None


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port (fsync and synchronous commit on)."""

    def __init__(self) -> None:
        bindir = _pg_bin()
        if bindir is None:
            pytest.skip(f"fault tests need PostgreSQL server binaries under {PG_ROOT}")
        self.bin = bindir
        # Not under pytest's tmp folder: that is private to the test user, and
        # the cluster runs as the postgres user when the tests run as root.
        base = Path(tempfile.mkdtemp(prefix="weir-pg-"))
        self.base = base
        self.data = base / "data"
        self.sock = base / "sock"
        self.port = free_port()
        self.log = base / "postgres.log"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> PrivatePostgres:
        self.sock.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self.start()

    def start(self) -> PrivatePostgres:
        options = (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c max_connections=300 "
            "-c fsync=on -c synchronous_commit=on -c shared_buffers=128MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def execute(self, sql: str, db: str = "postgres") -> list[tuple[object, ...]]:
        with psycopg.connect(self.dsn(db), autocommit=True) as conn:
            cur = conn.execute(sql)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []


BURST_DAG = textwrap.dedent(
    """
    import os, time
    import psycopg
    from weir import dag, task, get_current_context

    N = int(os.environ.get("WEIR_FAULT_TASKS", "2000"))
    _conn = None

    def record(kind: str) -> None:
        global _conn
        if _conn is None or _conn.closed:
            _conn = psycopg.connect(os.environ["WEIR_FAULT_DSN"], autocommit=True)
        ctx = get_current_context()
        try:
            _conn.execute(
                "INSERT INTO executions (run_id, task_id, try_number, pid, kind) VALUES (%s, %s, %s, %s, %s)",
                (ctx.run_id, ctx.task_id, ctx.try_number, os.getpid(), kind),
            )
        except psycopg.OperationalError:
            _conn = None
            raise

    @dag(max_active_runs=4)
    def burst():
        @task(retries=10, retry_delay=0)
        def work(i: int) -> int:
            record("start")
            time.sleep(float(os.environ.get("WEIR_FAULT_SLEEP", "0.05")))
            record("end")
            return i

        for i in range(N):
            work.override(task_id=f"w{i}")(i)

    burst()

    @dag
    def poison():
        @task(retries=2, retry_delay=0)
        def kill_my_worker() -> None:
            record("start")
            os.kill(os.getppid(), 9)
            time.sleep(30)

        @task(retries=10, retry_delay=0)
        def bystander(i: int) -> int:
            record("start")
            time.sleep(0.2)
            record("end")
            return i

        kill_my_worker()
        for i in range(20):
            bystander.override(task_id=f"b{i}")(i)

    poison()

    @dag
    def slow_one():
        @task(retries=1, retry_delay=0)
        def slow() -> int:
            record("start")
            time.sleep(float(os.environ.get("WEIR_FAULT_SLOW", "4")))
            record("end")
            return os.getpid()

        slow()

    slow_one()
    """
)

SIDE_TABLE = """
CREATE TABLE IF NOT EXISTS executions (
    id bigserial PRIMARY KEY, run_id text, task_id text, try_number int, pid int, kind text,
    at timestamptz DEFAULT clock_timestamp()
)
"""


@dataclass
class Figures:
    tasks: int
    succeeded: int
    lost: int
    duplicates: int
    reexecuted: int
    interrupted: int

    def line(self, **extra: object) -> str:
        parts = [f"lost={self.lost}", f"duplicates={self.duplicates}", f"tasks={self.tasks}"]
        parts += [f"{k}={v}" for k, v in extra.items()]
        parts.append(f"interrupted={self.interrupted} reexecuted={self.reexecuted}")
        return " ".join(parts)


@dataclass
class FaultCluster:
    pg: PrivatePostgres
    tmp: Path
    db: str
    servers: list[Proc | None] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    worker_targets: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def dags(self) -> Path:
        return self.tmp / "dags"

    def setup(self, tasks: int) -> None:
        self.pg.execute(f'CREATE DATABASE "{self.db}"')
        self.pg.execute(SIDE_TABLE, db=self.db)
        subprocess.run([WEIR, "db", "upgrade", "--db", self.pg.url(self.db)], check=True, capture_output=True)
        self.dags.mkdir()
        (self.dags / "faults.py").write_text(BURST_DAG)
        self.env = {**FAST_FAILOVER, "WEIR_FAULT_DSN": self.pg.dsn(self.db), "WEIR_FAULT_TASKS": str(tasks)}

    def start(self, workers: int = 3) -> Client:
        """One server and `workers` workers; returns a client once the DAGs are registered."""
        self.start_server()
        for _ in range(workers):
            self.start_worker()
        client = self.client()
        wait_until(client.list_dags, timeout=60, what="DAGs registered")
        return client

    # -- servers -----------------------------------------------------------------
    def start_server(self, index: int | None = None) -> int:
        with self._lock:
            if index is None:
                index = len(self.servers)
                self.servers.append(None)
                self.ports.append(free_port())
            port = self.ports[index]
            self.servers[index] = spawn(
                f"server{index}-{time.monotonic_ns()}",
                ["server", "--db", self.pg.url(self.db), "--port", str(port), "--bind", "127.0.0.1"],
                self.tmp,
                self.env,
            )
        client = Client(f"127.0.0.1:{port}", timeout=5)
        try:
            wait_until(lambda: client.list_dags() is not None, timeout=30, what=f"server {index} up")
        finally:
            client.close()
        return index

    def kill_server(self, index: int, sig: int = signal.SIGKILL) -> None:
        proc = self.servers[index]
        assert proc is not None
        proc.signal(sig)
        proc.popen.wait(30)

    def address(self, index: int = 0) -> str:
        return f"127.0.0.1:{self.ports[index]}"

    # -- workers -----------------------------------------------------------------
    def start_worker(self, target: str | None = None, concurrency: int = 4) -> int:
        with self._lock:
            index = len(self.workers)
            target = target or self.address(0)
            self.worker_targets.append(target)
            self.workers.append(self._spawn_worker(index, target, concurrency))
        return index

    def _spawn_worker(self, index: int, target: str, concurrency: int = 4) -> Proc:
        return spawn(
            f"worker{index}-{time.monotonic_ns()}",
            ["worker", "--dags", str(self.dags), "--server", target, "--concurrency", str(concurrency)],
            self.tmp,
            self.env,
        )

    def restart_worker(self, index: int) -> None:
        with self._lock:
            self.workers[index] = self._spawn_worker(index, self.worker_targets[index])

    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> None:
        proc = self.workers[index]
        proc.signal(sig)
        proc.popen.wait(30)

    def busy_workers(self) -> list[int]:
        """Indexes of worker processes holding running tasks now (worker ids embed the pid)."""
        rows = self.pg.execute(
            "SELECT DISTINCT worker_id FROM task_instances WHERE state = 'running'", db=self.db
        )
        pids = {str(w).split("-")[-2] for (w,) in rows if w}
        return [i for i, p in enumerate(self.workers) if p.alive() and str(p.popen.pid) in pids]

    # -- outcome ---------------------------------------------------------------------
    def client(self, index: int = 0) -> Client:
        return Client(self.address(index), timeout=10)

    def figures(self, run_ids: list[str]) -> Figures:
        ids = ",".join(f"'{r}'" for r in run_ids)
        [(tasks, succeeded)] = self.pg.execute(
            "SELECT count(*), count(*) FILTER (WHERE ti.state = 'success') FROM task_instances ti "
            f"JOIN dag_runs r ON r.id = ti.run_pk WHERE r.run_id IN ({ids})",
            db=self.db,
        )
        [(duplicates,)] = self.pg.execute(
            "SELECT count(*) FROM (SELECT a.ti_id FROM task_attempts a JOIN task_instances ti ON ti.id = a.ti_id "
            f"JOIN dag_runs r ON r.id = ti.run_pk WHERE r.run_id IN ({ids}) AND a.outcome = 'success' "
            "GROUP BY a.ti_id HAVING count(*) > 1) d",
            db=self.db,
        )
        [(starts, ends)] = self.pg.execute(
            "SELECT count(*) FILTER (WHERE kind = 'start'), count(*) FILTER (WHERE kind = 'end') "
            f"FROM executions WHERE run_id IN ({ids})",
            db=self.db,
        )
        return Figures(
            tasks=int(tasks),  # type: ignore[call-overload]
            succeeded=int(succeeded),  # type: ignore[call-overload]
            lost=int(tasks) - int(succeeded),  # type: ignore[call-overload]
            duplicates=int(duplicates),  # type: ignore[call-overload]
            reexecuted=int(ends) - int(succeeded),  # type: ignore[call-overload]
            interrupted=int(starts) - int(ends),  # type: ignore[call-overload]
        )

    def logs(self) -> str:
        parts = []
        for p in [*self.servers, *self.workers]:
            if p is not None:
                parts.append(f"--- {p.name}\n{p.output()[-3000:]}")
        return "\n".join(parts)

    def shutdown(self) -> None:
        for proc in [*self.workers, *self.servers]:
            if proc is not None and proc.alive():
                proc.popen.kill()
        for proc in [*self.workers, *self.servers]:
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.popen.wait(10)


@contextlib.contextmanager
def fault_cluster(pg: PrivatePostgres, tmp: Path, tasks: int) -> Iterator[FaultCluster]:
    cluster = FaultCluster(pg, tmp, db=f"faults_{time.monotonic_ns()}")
    cluster.setup(tasks)
    try:
        yield cluster
    finally:
        cluster.shutdown()
