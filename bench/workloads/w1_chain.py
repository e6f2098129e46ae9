"""W1 chain: n sequential no-op tasks; the hop is what one dependency costs."""

from __future__ import annotations

import itertools

from bench.database import seconds
from bench.harness import Harness
from bench.model import Case, Metric, Target, Values, Workload, percentile

AIRFLOW_HOP_MS = 1100.0  # ≈54 s for a chain of 50


def case(n: int) -> Case:
    dag_id = f"bench_chain_{n}"
    metrics = (
        Metric("hop_p50", "hop p50", "ms", target=Target("<=", 3)),
        Metric("hop_p95", "hop p95", "ms"),
        Metric("hop_p99", "hop p99", "ms", target=Target("<=", 15)),
        Metric(
            "per_task",
            "makespan per task",
            "ms",
            airflow=AIRFLOW_HOP_MS,
            airflow_note="≈1.1 s per hop (chain of 50 in ≈54 s)",
        ),
        Metric(
            "makespan",
            "makespan",
            "s",
            airflow=54.0 if n == 50 else None,
            airflow_note="≈54 s" if n == 50 else "",
        ),
    )

    def measure(h: Harness) -> Values:
        with h.cluster(f"w1-chain{n}", [dag_id], workers=1) as c:
            run = c.run(dag_id)
            tasks = sorted(c.db.tasks(run_ids=[run.run_id]), key=lambda t: t.task_id)
            [times] = c.db.runs(run_ids=[run.run_id])
        # downstream started (claimed by a worker) - upstream ended (its outcome committed)
        hops = [seconds(b.started_at, a.ended_at) * 1000 for a, b in itertools.pairwise(tasks)]
        makespan = seconds(times.ended_at, times.started_at)
        return {
            "hop_p50": percentile(hops, 50),
            "hop_p95": percentile(hops, 95),
            "hop_p99": percentile(hops, 99),
            "per_task": makespan / n * 1000,
            "makespan": makespan,
        }

    return Case(f"chain of {n}", metrics, measure, setup="1 worker")


WORKLOAD = Workload(
    id="W1",
    title="chain",
    method=(
        "A DAG of n no-op tasks, each depending on the one before, on one worker. A hop is the "
        "downstream task's `started_at` (the claim that leased it to a worker) minus the upstream "
        "task's `ended_at` (the commit of its outcome, which also queued the downstream task); "
        "p50/p95/p99 are over the n-1 hops of one run. The makespan is the run's `ended_at - "
        "started_at`; per task it also counts the time the worker spends running the task and "
        "reporting it, which the hop does not."
    ),
    cases=lambda smoke: [case(5)] if smoke else [case(50), case(200)],
)
