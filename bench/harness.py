"""The harness: runs cases on fresh deployments and collects their figures."""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from bench.cluster import Cluster
from bench.database import Databases
from bench.load import Snapshot, wait_quiet
from bench.machine import commit
from bench.model import CaseResult, Env, Workload, fmt

#: A run during which other processes used more cores than this is repeated ...
DISTURBED = 0.3
#: ... at most this many times (then kept, and the report shows the load).
RETRIES = 2


class Harness:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.databases = Databases(env)

    @contextmanager
    def cluster(
        self,
        name: str,
        dags: Sequence[str],
        *,
        workers: int = 1,
        concurrency: int | None = None,
        warm_up: bool = True,
    ) -> Iterator[Cluster]:
        """A server on a fresh database with `workers` ready workers, warmed up by one small run."""
        with self.databases.fresh() as db, Cluster(self.env, db, name=name, dags=dags) as cluster:
            cluster.start_server()
            if workers:
                started = cluster.start_workers(workers, concurrency=concurrency, wait=False)
                cluster.wait_workers(started)
                if warm_up:
                    cluster.warm_up()
            yield cluster

    def run(self, workloads: Sequence[Workload], runs: int) -> list[CaseResult]:
        """Every case of every workload, `runs` times each; a failed run is recorded, not fatal."""
        results = []
        try:
            for workload in workloads:
                for case in workload.cases(self.env.smoke):
                    result = CaseResult(workload, case)
                    results.append(result)
                    for i in range(runs):
                        self.env.log(f"{workload.id} {case.name}: run {i + 1}/{runs} ...")
                        self._run_once(result)
        finally:
            self.databases.close()
        return results

    def _run_once(self, result: CaseResult) -> None:
        """One run; repeated (up to RETRIES times) when other processes disturbed it."""
        for attempt in range(RETRIES + 1):
            wait_quiet(self.env.log, window=0.5 if self.env.smoke else 2.0)
            began, load = time.monotonic(), Snapshot.take()
            head = commit(self.env.repo)
            try:
                values = result.case.measure(self)
            except Exception as exc:
                self.env.log(f"    FAILED: {type(exc).__name__}: {exc}")
                self.env.log("    " + "".join(traceback.format_exception(exc)).replace("\n", "\n    "))
                result.errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
                result.commits.append(head)
                return
            other = load.foreign_cores(Snapshot.take())
            shown = ", ".join(f"{m.key}={fmt(values[m.key])}" for m in result.case.metrics if m.key in values)
            self.env.log(f"    {shown}  [{time.monotonic() - began:.1f}s, other load {other:.2f} cores]")
            if other > DISTURBED and attempt < RETRIES:
                self.env.log(f"    other processes used {other:.2f} cores during this run: repeating it")
                continue
            result.samples.append(values)
            result.foreign.append(other)
            result.commits.append(head)
            return
