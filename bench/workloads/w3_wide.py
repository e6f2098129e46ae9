"""W3 wide: n independent no-op tasks, all queued at once; throughput and CPU per task."""

from __future__ import annotations

from bench.database import seconds
from bench.harness import Harness
from bench.model import Case, Metric, Target, Values, Workload

ROLES = ("server", "worker", "runner", "postgres")
ROLE_LABEL = {
    "server": "weir server",
    "worker": "weir worker main processes (all)",
    "runner": "task runner processes (all)",
    "postgres": "Postgres backends",
}


def case(n: int, workers: int) -> Case:
    dag_id = f"bench_wide_{n}"
    metrics = (
        Metric(
            "tasks_per_s",
            "throughput",
            "tasks/s",
            target=Target(">=", 3000) if (n, workers) == (10_000, 4) else None,
            airflow=3.9 if n == 1000 else None,
            airflow_note="≈3.9 tasks/s (1,000 tasks in ≈257 s)" if n == 1000 else "",
            higher_is_better=True,
        ),
        Metric(
            "makespan",
            "makespan",
            "s",
            airflow=257.0 if n == 1000 else None,
            airflow_note="≈257 s" if n == 1000 else "",
        ),
        *(Metric(f"cpu_{role}", f"CPU per 1,000 tasks: {ROLE_LABEL[role]}", "CPU-s") for role in ROLES),
        Metric("cpu_total", "CPU per 1,000 tasks: all of the above", "CPU-s"),
        Metric("write_tx", "write transactions per task (Postgres xids)", "tx"),
    )

    def measure(h: Harness) -> Values:
        with h.cluster(f"w3-wide{n}-x{workers}", [dag_id], workers=workers) as c:
            xid, before = c.db.next_xid(), c.cpu()
            run = c.run(dag_id)
            after, xids = c.cpu(), c.db.next_xid() - xid
            [times] = c.db.runs(run_ids=[run.run_id])
        makespan = seconds(times.ended_at, times.started_at)
        values = {"tasks_per_s": n / makespan, "makespan": makespan}
        for role in ROLES:
            values[f"cpu_{role}"] = before[role].used_until(after[role]) / (n / 1000)
        values["cpu_total"] = sum(values[f"cpu_{role}"] for role in ROLES)
        values["write_tx"] = xids / n if c.db.is_postgres else float("nan")
        return values

    plural = "s" if workers > 1 else ""
    return Case(f"{n:,} tasks, {workers} worker{plural}", metrics, measure, setup=f"{workers} worker{plural}")


def _cases(smoke: bool) -> list[Case]:
    if smoke:
        return [case(20, 1)]
    return [case(1000, 1), case(1000, 4), case(10_000, 1), case(10_000, 4)]


WORKLOAD = Workload(
    id="W3",
    title="wide",
    method=(
        "One run of n independent no-op tasks (all queued by the trigger) on 1 or 4 workers. "
        "Throughput is n / (run `ended_at` - `started_at`). CPU is read from /proc (utime + stime) "
        "for each process before the trigger and after the run, and divided per 1,000 tasks; "
        '"task runner processes" are the per-slot processes that execute task code, "Postgres '
        "backends\" the database processes serving the server's connections."
    ),
    cases=_cases,
)
