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
        Metric("commit_claim_p50", "server's share: outcome committed → downstream claimed, p50", "ms"),
        Metric("commit_claim_p99", "server's share: outcome committed → downstream claimed, p99", "ms"),
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
            ran_at = c.db.results(run.run_id)
            [times] = c.db.runs(run_ids=[run.run_id])
        # the downstream function started - the upstream function returned (one clock: one machine)
        hops = [(ran_at[b.task_id] - ran_at[a.task_id]) * 1000 for a, b in itertools.pairwise(tasks)]
        # downstream claimed - upstream's outcome committed (0 when the report claimed it)
        server = [seconds(b.started_at, a.ended_at) * 1000 for a, b in itertools.pairwise(tasks)]
        makespan = seconds(times.ended_at, times.started_at)
        return {
            "hop_p50": percentile(hops, 50),
            "hop_p95": percentile(hops, 95),
            "hop_p99": percentile(hops, 99),
            "commit_claim_p50": percentile(server, 50),
            "commit_claim_p99": percentile(server, 99),
            "per_task": makespan / n * 1000,
            "makespan": makespan,
        }

    return Case(f"chain of {n}", metrics, measure, setup="1 worker")


WORKLOAD = Workload(
    id="W1",
    title="chain",
    method=(
        "A DAG of n no-op tasks, each depending on the one before, on one worker; each task returns "
        "the Unix time it ran. A hop is the time from one task's function returning to the next "
        "one's starting, as a user sees it: the runner's reply, the worker's report, the server's "
        "transaction (which records the outcome, queues the downstream task and, when the worker's "
        "queues were drained, claims it for that worker), the answer, and the hand-over to a "
        "runner. p50/p95/p99 are over the n-1 hops of one run. The server's share is the "
        "downstream task's `started_at` (its claim) minus the upstream task's `ended_at` (the "
        "commit of its outcome); it is 0 when the report's own transaction claimed the downstream "
        "task. The makespan is the run's `ended_at - started_at`."
    ),
    cases=lambda smoke: [case(5)] if smoke else [case(50), case(200)],
)
