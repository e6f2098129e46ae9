"""Benchmark DAGs: chains, fans and wide sets of no-op tasks, built with loops.

Every task is the same no-op, so the figures measure the orchestrator, not
the work. Ids carry their size: bench_chain_50, bench_fan_2000, ...

Workers import DAG files in the worker and again in each of its runner
processes, and a 10,000-task DAG costs a noticeable second and some memory
each time. The harness therefore names the DAGs a workload needs in
WEIR_BENCH_DAGS (comma-separated); without it every shape below is built.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from weir import DAG, task

#: Runs of one benchmark DAG may all be active at once (open-loop and burn-down
#: workloads trigger thousands).
MAX_ACTIVE_RUNS = 1_000_000


@task
def noop() -> None:
    """Does nothing: the benchmark measures scheduling, not work."""


@task
def stamp() -> float:
    """A no-op that returns when it ran (Unix time): W1 measures the hop between
    the function of one task returning and the next one's starting."""
    return time.time()


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, max_active_runs=MAX_ACTIVE_RUNS, tags=["bench"])


def chain(dag_id: str, n: int) -> DAG:
    """t0000 >> t0001 >> ... : n tasks, each waiting for the one before (each returns when it ran)."""
    with _dag(dag_id) as d:
        prev = None
        for i in range(n):
            # Explicit ids: repeated plain calls would pick `noop__N` by a linear search.
            cur = stamp.override(task_id=f"t{i:05d}")()
            if prev is not None:
                prev >> cur
            prev = cur
    return d


def fan(dag_id: str, n: int) -> DAG:
    """start >> [m00000 ... m(n-1)] >> join (each returns when it ran)."""
    with _dag(dag_id) as d:
        start = stamp.override(task_id="start")()
        join = stamp.override(task_id="join")()
        for i in range(n):
            middle = stamp.override(task_id=f"m{i:05d}")()
            start >> middle
            middle >> join
    return d


def wide(dag_id: str, n: int) -> DAG:
    """n independent tasks: all queued when the run starts."""
    with _dag(dag_id) as d:
        for i in range(n):
            noop.override(task_id=f"w{i:05d}")()
    return d


SHAPES: dict[str, tuple[Callable[[str, int], DAG], int]] = {
    # W1
    "bench_chain_50": (chain, 50),
    "bench_chain_200": (chain, 200),
    # W2
    "bench_fan_200": (fan, 200),
    "bench_fan_2000": (fan, 2000),
    # W3, W4 (100 runs of 1,000 = 100,000 queued tasks)
    "bench_wide_1000": (wide, 1000),
    "bench_wide_10000": (wide, 10_000),
    # W5 wake-ups, W6 first task, W7 open loop: one task per run
    "bench_single": (wide, 1),
    # warm-up before measuring: touches every runner process of a worker, then
    # runs every statement of a hop often enough for psycopg to prepare it
    "bench_warmup": (wide, 32),
    "bench_warmup_chain": (chain, 16),
    # smoke sizes (python -m bench --smoke)
    "bench_chain_5": (chain, 5),
    "bench_fan_10": (fan, 10),
    "bench_wide_20": (wide, 20),
}


def _wanted() -> list[str]:
    names = os.environ.get("WEIR_BENCH_DAGS", "")
    return [n.strip() for n in names.split(",") if n.strip() in SHAPES] or list(SHAPES)


for _dag_id in _wanted():
    _build, _size = SHAPES[_dag_id]
    _build(_dag_id, _size)
