"""W2 fan-out/fan-in: start >> n parallel tasks >> join."""

from __future__ import annotations

from bench.database import seconds
from bench.harness import Harness
from bench.model import Case, Metric, Values, Workload

WORKERS = 4


def case(n: int, *, smoke: bool) -> Case:
    dag_id = f"bench_fan_{n}"
    workers = 1 if smoke else WORKERS
    metrics = (
        Metric(
            "makespan",
            "makespan",
            "s",
            airflow=45.0 if n == 200 else None,
            airflow_note="≈43 to 47 s" if n == 200 else "",
        ),
        Metric("all_started", "fan-out: start ended → all n started", "s"),
        Metric("join_hop", "fan-in: last of n returned → join's function started", "ms"),
    )

    def measure(h: Harness) -> Values:
        with h.cluster(f"w2-fan{n}", [dag_id], workers=workers) as c:
            run = c.run(dag_id)
            tasks = {t.task_id: t for t in c.db.tasks(run_ids=[run.run_id])}
            ran_at = c.db.results(run.run_id)
            [times] = c.db.runs(run_ids=[run.run_id])
        start = tasks.pop("start")
        del tasks["join"]
        last_started = max(t.started_at for t in tasks.values() if t.started_at)
        last_ran = max(ran_at[task_id] for task_id in tasks)
        return {
            "makespan": seconds(times.ended_at, times.started_at),
            "all_started": seconds(last_started, start.ended_at),
            "join_hop": (ran_at["join"] - last_ran) * 1000,
        }

    return Case(f"1 → {n:,} → 1", metrics, measure, setup=f"{workers} worker{'s' if workers > 1 else ''}")


WORKLOAD = Workload(
    id="W2",
    title="fan-out / fan-in",
    method=(
        f"`start >> [n no-op tasks] >> join` on {WORKERS} workers. Makespan is the run's "
        '`ended_at - started_at`; "all started" runs from `start`\'s `ended_at` (which queued the '
        "n tasks) to the last of them being claimed; the fan-in hop, like W1's hop, from the last "
        "middle task's function returning to `join`'s function starting (each task returns the Unix "
        "time it ran)."
    ),
    cases=lambda smoke: (
        [case(10, smoke=True)] if smoke else [case(200, smoke=False), case(2000, smoke=False)]
    ),
)
