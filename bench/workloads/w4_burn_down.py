"""W4 burn-down: a deep queue drained by workers, on an empty table and on a big history."""

from __future__ import annotations

import itertools
import time

from bench.cluster import Cluster
from bench.database import BenchDb, seconds
from bench.harness import Harness
from bench.model import Case, Metric, Target, Values, Workload

DAG = "bench_wide_1000"
SMOKE_DAG = "bench_wide_20"
WORKERS = 4
_order = itertools.count()

_PG_HISTORY = """
INSERT INTO dag_runs (run_id, dag_id, version_id, state, run_type, logical_date, conf,
                      queued_at, started_at, ended_at)
SELECT 'history-' || g, '{dag}', {version}, 'success', 'manual', ts, '{{}}', ts, ts, ts + interval '5 minutes'
FROM (SELECT g, now() - g * interval '1 hour' AS ts FROM generate_series(1, {runs}) g) s;

INSERT INTO task_instances (run_pk, dag_id, task_id, map_index, state, queue, pool, priority, attempt,
                            try_number, max_tries, available_at, queued_at, started_at, ended_at,
                            worker_id, result)
SELECT r.id, r.dag_id, 'w' || lpad(g::text, 5, '0'), -1, 'success', 'default', 'default_pool', 0, 1,
       1, 1, r.queued_at, r.queued_at, r.started_at + g * interval '1 ms',
       r.started_at + g * interval '1 ms' + interval '2 ms', 'bench-history', 'null'
FROM dag_runs r CROSS JOIN generate_series(0, {tasks} - 1) g
WHERE r.run_id LIKE 'history-%';

INSERT INTO task_attempts (ti_id, attempt, try_number, worker_id, started_at, ended_at, outcome)
SELECT id, 1, 1, worker_id, started_at, ended_at, 'success'
FROM task_instances WHERE worker_id = 'bench-history';
"""

_SQLITE_HISTORY = """
INSERT INTO dag_runs (run_id, dag_id, version_id, state, run_type, logical_date, conf,
                      queued_at, started_at, ended_at)
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {runs})
SELECT 'history-' || n, '{dag}', {version}, 'success', 'manual', ts, '{{}}', ts, ts, ts
FROM (SELECT n, datetime('now', '-' || n || ' hours') || '.000000' AS ts FROM g);

INSERT INTO task_instances (run_pk, dag_id, task_id, map_index, state, queue, pool, priority, attempt,
                            try_number, max_tries, available_at, queued_at, started_at, ended_at,
                            worker_id, result)
WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < {tasks} - 1)
SELECT r.id, r.dag_id, printf('w%05d', g.n), -1, 'success', 'default', 'default_pool', 0, 1,
       1, 1, r.queued_at, r.queued_at, r.started_at, r.ended_at, 'bench-history', 'null'
FROM dag_runs r CROSS JOIN g
WHERE r.run_id LIKE 'history-%';

INSERT INTO task_attempts (ti_id, attempt, try_number, worker_id, started_at, ended_at, outcome)
SELECT id, 1, 1, worker_id, started_at, ended_at, 'success'
FROM task_instances WHERE worker_id = 'bench-history';
"""


def load_history(db: BenchDb, dag_id: str, *, runs: int, tasks: int) -> None:
    """Insert `runs` x `tasks` finished task instances (and their attempts) of `dag_id` with SQL."""
    from sqlalchemy import select

    from weir.server.store.schema import dag_versions

    with db.engine.connect() as conn:
        version = conn.execute(select(dag_versions.c.id).where(dag_versions.c.dag_id == dag_id)).scalar_one()
    script = _PG_HISTORY if db.is_postgres else _SQLITE_HISTORY
    db.execute(script.format(dag=dag_id, version=version, runs=runs, tasks=tasks))
    if db.is_postgres:
        db.execute("VACUUM task_instances, task_attempts, dag_runs")


def burn_down(c: Cluster, dag_id: str, runs: int, *, timeout: float) -> tuple[float, float]:
    """Queue `runs` runs of `dag_id`, then start the workers; (overall, steady) tasks/s."""
    run_ids = [c.client.trigger(dag_id).run_id for _ in range(runs)]
    # Statistics that see the queue (autovacuum would gather them within its minute).
    c.db.execute("ANALYZE")
    if c.db.is_postgres:
        # Flush what building the queue (and loading the history) dirtied: a checkpoint that
        # WAL volume forces during the measurement would be the bulk load's cost, not the
        # table's, and would land in one variant only.
        c.db.execute("CHECKPOINT")
    # Start all workers at once, then check each came up (they drain the queue meanwhile).
    c.wait_workers(c.start_workers(WORKERS, wait=False))
    deadline = time.monotonic() + timeout
    for run_id in run_ids:
        c.wait(run_id, timeout=max(1.0, deadline - time.monotonic()))
    tasks = c.db.tasks(run_ids=run_ids)
    first = min(t.started_at for t in tasks if t.started_at)
    ends = sorted(t.ended_at for t in tasks if t.ended_at)
    n = len(ends)
    overall = n / seconds(ends[-1], first)
    # The middle 80 % of completions: no worker start-up, no tail.
    lo, hi = ends[n // 10], ends[(n * 9) // 10]
    steady = (n * 9 // 10 - n // 10) / seconds(hi, lo)
    return overall, steady


def case(*, smoke: bool) -> Case:
    dag_id = SMOKE_DAG if smoke else DAG
    runs = 5 if smoke else 100
    size = 20 if smoke else 1000
    history_runs, history_tasks = (10, 100) if smoke else (1000, 1000)
    queued = runs * size
    timeout = 120 if smoke else 3600
    history = history_runs * history_tasks
    metrics = (
        Metric("empty", "throughput, empty history", "tasks/s", higher_is_better=True),
        Metric("loaded", f"throughput, {history:,} finished rows", "tasks/s", higher_is_better=True),
        Metric("steady_empty", "steady (10 to 90 %), empty history", "tasks/s", higher_is_better=True),
        Metric(
            "steady_loaded",
            f"steady (10 to 90 %), {history:,} finished rows",
            "tasks/s",
            higher_is_better=True,
        ),
        Metric("slowdown", "slowdown with history", "%", target=Target("<=", 10)),
        Metric("steady_slowdown", "steady slowdown with history", "%"),
    )

    def measure(h: Harness) -> Values:
        def empty() -> tuple[float, float]:
            with h.cluster("w4-empty", [dag_id], workers=0) as c:
                c.register_dags()
                return burn_down(c, dag_id, runs, timeout=timeout)

        def loaded() -> tuple[float, float]:
            with h.cluster("w4-history", [dag_id], workers=0) as c:
                c.register_dags()
                h.env.log(f"    loading {history:,} finished task instances ...")
                load_history(c.db, dag_id, runs=history_runs, tasks=history_tasks)
                return burn_down(c, dag_id, runs, timeout=timeout)

        # Alternate the order from run to run: a drift over time must not pass for a slowdown.
        if next(_order) % 2:
            (rate_l, steady_l), (rate_e, steady_e) = loaded(), empty()
        else:
            (rate_e, steady_e), (rate_l, steady_l) = empty(), loaded()
        return {
            "empty": rate_e,
            "loaded": rate_l,
            "steady_empty": steady_e,
            "steady_loaded": steady_l,
            "slowdown": (1 - rate_l / rate_e) * 100,
            "steady_slowdown": (1 - steady_l / steady_e) * 100,
        }

    return Case(f"{queued:,} queued tasks", metrics, measure, setup=f"{WORKERS} workers")


WORKLOAD = Workload(
    id="W4",
    title="burn-down",
    method=(
        f"{100:,} runs of a 1,000-task wide DAG are triggered with no worker running (100,000 queued "
        f"task instances), then {WORKERS} workers start and drain the queue. Throughput is tasks / "
        '(last `ended_at` - first `started_at`); "steady" counts only the middle 80 % of '
        "completions (no worker start-up, no tail). Then the same on a database already holding "
        "1,000,000 finished task instances of the same DAG (1,000 runs, with their attempts), "
        "bulk-inserted with SQL. Slowdown = 1 - loaded / empty, per run; the two "
        "variants alternate which goes first. Statistics are gathered (ANALYZE) once the queue is "
        "built, in both variants (see the analysis below on why autovacuum does not analyse here), "
        "and a CHECKPOINT flushes the setup's writes before the workers start."
    ),
    cases=lambda smoke: [case(smoke=smoke)],
)
