"""A Weir deployment for one measurement: `weir server` plus N `weir worker`s.

Real processes, started the way an operator would start them, on a fresh
database; everything is stopped on exit, whatever happened.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from bench.database import BenchDb
from bench.model import Env
from bench.procs import CpuSnapshot, Proc, free_port
from weir import Client
from weir.models import DagRun
from weir.spec import DagSpec
from weir.states import RunState

#: DAGs every cluster loads besides the workload's own.
ALWAYS = ("bench_warmup", "bench_warmup_chain", "bench_single")
_counter = itertools.count(1)


def bench_dags_folder(env: Env) -> Path:
    return env.repo / "bench" / "dags"


def process_env(env: Env, home: Path, dags: Sequence[str]) -> dict[str, str]:
    """The parent's environment without any WEIR_* setting, plus the benchmark's own."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_")}
    out["WEIR_HOME"] = str(home)
    out["WEIR_BENCH_DAGS"] = ",".join(dict.fromkeys([*ALWAYS, *dags]))
    out["PYTHONUNBUFFERED"] = "1"
    return out


@contextmanager
def bench_dag_selection(dags: Sequence[str]) -> Iterator[None]:
    """Make bench/dags build only `dags` while loading it in this process."""
    before = os.environ.get("WEIR_BENCH_DAGS")
    os.environ["WEIR_BENCH_DAGS"] = ",".join(dict.fromkeys([*ALWAYS, *dags]))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("WEIR_BENCH_DAGS", None)
        else:
            os.environ["WEIR_BENCH_DAGS"] = before


def load_specs(env: Env, dags: Sequence[str]) -> list[DagSpec]:
    from weir._loader import load_folder

    with bench_dag_selection(dags):
        bag = load_folder(bench_dags_folder(env))
    if bag.errors:
        raise RuntimeError(f"bench DAGs failed to load: {bag.errors}")
    return [d.to_spec() for d in bag.dags.values()]


class Cluster:
    """Server and workers on `db`; use as a context manager."""

    def __init__(self, env: Env, db: BenchDb, *, name: str, dags: Sequence[str]) -> None:
        self.env = env
        self.db = db
        self.dags = list(dags)
        self.dir = env.workdir / f"{next(_counter):03d}-{name}"
        self.home = self.dir / "home"
        self.home.mkdir(parents=True)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.server: Proc | None = None
        self.workers: list[Proc] = []
        self._client: Client | None = None

    # -- processes -----------------------------------------------------------------
    def _weir(self) -> str:
        return str(self.env.repo / ".venv" / "bin" / "weir")

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        return Proc(
            name,
            argv,
            env=process_env(self.env, self.home, self.dags),
            log_path=self.dir / f"{name}.log",
            cwd=self.dir,
        )

    def start_server(self) -> Proc:
        argv = [self._weir(), "server", "--db", self.db.url, "--port", str(self.port), "--bind", "127.0.0.1"]
        self.server = self._spawn("server", argv)
        self.server.wait_for(r"listening on", timeout=60)
        return self.server

    def start_workers(self, n: int, *, concurrency: int | None = None, wait: bool = True) -> list[Proc]:
        """Start `n` workers; with `wait`, return once each has registered and started its runners."""
        started = []
        for _ in range(n):
            worker_id = f"bench-w{len(self.workers)}"
            argv = [
                self._weir(),
                "worker",
                "--dags",
                str(bench_dags_folder(self.env)),
                "--server",
                self.address,
                "--concurrency",
                str(concurrency or self.env.concurrency),
                "--worker-id",
                worker_id,
            ]
            proc = self._spawn(worker_id, argv)
            self.workers.append(proc)
            started.append(proc)
        if wait:
            self.wait_workers(started)
        return started

    def wait_workers(self, workers: Sequence[Proc], timeout: float = 180) -> None:
        """Until each worker claims work and all its runners are up (a worker claims
        once its first runner is ready; the others starting would load the machine
        during the first measurement)."""
        for proc in workers:
            proc.wait_for(rf"worker {re.escape(proc.name)}: \d+ slots", timeout=timeout)
            proc.wait_for(r"task runners: all \d+ up", timeout=timeout)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        errors = []
        # Workers first: a worker whose server is gone retries its reports for a while.
        for proc in [*self.workers, *([self.server] if self.server else [])]:
            try:
                proc.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{proc.name}: {exc}")
        self.workers, self.server = [], None
        if errors:
            raise RuntimeError("could not stop every process: " + "; ".join(errors))

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.env.log(f"    (logs kept in {self.dir})")
        self.stop()

    # -- driving it ----------------------------------------------------------------
    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.address, timeout=60)
        return self._client

    def register_dags(self) -> None:
        """Store the benchmark DAGs without a worker (what `weir dags deploy` does)."""
        self.client.register_dags(load_specs(self.env, self.dags))

    def wait(self, run_id: str, *, timeout: float = 1800) -> DagRun:
        """Wait for a run to finish successfully.

        In short calls: a blocking gRPC call holds off Ctrl+C until it returns.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                done = self.client.wait(run_id, timeout=min(5.0, max(0.1, deadline - time.monotonic())))
                break
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
                self._check_alive()
        if done.state is not RunState.SUCCESS:
            raise RuntimeError(f"run {run_id} ended {done.state.value}; logs in {self.dir}")
        return done

    def _check_alive(self) -> None:
        for proc in [*self.workers, *([self.server] if self.server else [])]:
            if not proc.alive():
                code = proc.popen.returncode
                raise RuntimeError(f"{proc.name} exited ({code}); last output:\n{proc.tail()}")

    def run(self, dag_id: str, *, timeout: float = 1800) -> DagRun:
        """Trigger a run and wait for it; it must succeed."""
        return self.wait(self.client.trigger(dag_id).run_id, timeout=timeout)

    def warm_up(self) -> None:
        """Two small runs first: connections, caches and runner processes are warm when measuring.

        A wide run touches every runner process; a short chain runs the statement of
        a hop past its fifth use on the server's connection, when psycopg prepares
        it. Then the tables are analysed, as autovacuum would have done on a database
        in use (a fresh one has no statistics, and its first plans are guesses).
        """
        self.run("bench_warmup", timeout=120)
        self.run("bench_warmup_chain", timeout=120)
        if self.db.is_postgres:
            self.db.execute("ANALYZE")

    def pids(self) -> dict[str, list[int]]:
        """Process ids by role: server, worker (main processes), runner (task processes), postgres."""
        return {
            "server": [self.server.pid] if self.server else [],
            "worker": [w.pid for w in self.workers],
            "runner": [pid for w in self.workers for pid in w.descendants()],
            "postgres": self.db.backend_pids(),
        }

    def cpu(self) -> dict[str, CpuSnapshot]:
        return {role: CpuSnapshot.take(pids) for role, pids in self.pids().items()}


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05, what: str = ""
) -> None:
    """Poll `predicate()` until it is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what or predicate.__name__}")
        time.sleep(interval)
