"""Creating and starting runs, and pausing DAGs.

A run is created `queued` and starts (its tasks are created and its roots
queued) in the same transaction when its DAG is unpaused and below
max_active_runs; otherwise it starts when a slot frees: when another run of
the DAG finishes or the DAG is unpaused.

Lock order: task_instances rows (those ending, ascending id, then their
downstream tasks), then dag_runs rows (ascending id), then the dags row.
Triggering takes only the dags row. Cancelling a run locks its row first;
a completion racing it may deadlock, and the database aborts one of the
two, which is retried (db.Database treats deadlock victims as transient).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from weir.errors import AlreadyExists, InvalidArgument, NotFound, WeirError
from weir.models import DagRun
from weir.server.catalog import Catalog
from weir.server.promotion import initially_ready, pending_upstream
from weir.server.store import dag_runs, dags
from weir.server.store import task_instances as tis
from weir.states import RunType

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:+\-]{1,250}$")


def new_run_id(dag_id: str, run_type: RunType, logical_date: datetime) -> str:
    """`<dag_id>__manual__2026-01-01T03:00:00.000000Z`: readable, sortable, unique per DAG and instant."""
    return f"{dag_id}__{run_type.value}__{logical_date:%Y-%m-%dT%H:%M:%S.%f}Z"


@dataclass(frozen=True, slots=True)
class Triggered:
    run: dag_runs.RunRow
    queued: Counter[str]


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    dag_id: str
    conf: dict[str, Any]
    run_id: str | None = None
    logical_date: datetime | None = None
    run_type: RunType = RunType.MANUAL


def trigger(
    conn: Connection,
    now: datetime,
    catalog: Catalog,
    *,
    dag_id: str,
    conf: dict[str, Any],
    run_id: str | None = None,
    logical_date: datetime | None = None,
    run_type: RunType = RunType.MANUAL,
) -> Triggered:
    """Create a run of the DAG's latest version and start it if it may start."""
    request = TriggerRequest(dag_id, conf, run_id, logical_date, run_type)
    [result], queued = trigger_many(conn, now, catalog, [request])
    if isinstance(result, WeirError):
        raise result
    return Triggered(run=result, queued=queued)


def trigger_many(
    conn: Connection, now: datetime, catalog: Catalog, requests: Sequence[TriggerRequest]
) -> tuple[list[dag_runs.RunRow | WeirError], Counter[str]]:
    """Create runs for several requests in one transaction; a bad request fails alone.

    Per DAG (in dag_id order): lock its row once, insert the requested runs,
    then start as many queued runs as max_active_runs allows, all at once.
    Every check that can refuse a request runs before it writes anything, so
    a refused request leaves the transaction clean for the others. Returns
    one run row (or the error) per request, and the tasks queued per queue.
    """
    out: list[dag_runs.RunRow | WeirError | None] = [None] * len(requests)
    by_dag: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        by_dag.setdefault(r.dag_id, []).append(i)
    created: dict[int, int] = {}  # request index -> run pk
    queued: Counter[str] = Counter()
    for dag_id in sorted(by_dag):
        dag = dags.lock_for_runs(conn, dag_id)
        if dag is None:
            missing = NotFound(f"DAG {dag_id!r} is not registered (run a worker or `weir dags deploy` first)")
            for i in by_dag[dag_id]:
                out[i] = missing
            continue
        for i in by_dag[dag_id]:
            try:
                created[i] = _insert_run(conn, now, dag, requests[i])
            except WeirError as exc:
                out[i] = exc
        queued += start_queued_runs(conn, now, catalog, dag)
    rows = {r.pk: r for r in dag_runs.get_many(conn, created.values())}
    for i, pk in created.items():
        out[i] = rows[pk]
    return [r for r in out if r is not None], queued


def trigger_for_api(
    conn: Connection, now: datetime, catalog: Catalog, requests: Sequence[TriggerRequest]
) -> tuple[list[DagRun | WeirError], Counter[str]]:
    """`trigger_many`, answering with API models (one version read for all)."""
    results, queued = trigger_many(conn, now, catalog, requests)
    rows = [r for r in results if isinstance(r, dag_runs.RunRow)]
    versions = dag_runs.versions(conn, {r.version_id for r in rows})
    out: list[DagRun | WeirError] = [
        r if isinstance(r, WeirError) else dag_runs.to_model(r, versions.get(r.version_id)) for r in results
    ]
    return out, queued


def _insert_run(conn: Connection, now: datetime, dag: dags.DagForRun, r: TriggerRequest) -> int:
    """Insert one queued run; the caller holds the DAG row lock, so check-then-insert is safe."""
    when = r.logical_date or now
    run_id = r.run_id
    if run_id:
        if not RUN_ID_PATTERN.match(run_id):
            raise InvalidArgument(
                f"run_id {run_id!r} may only contain letters, digits and '_ - . : +' (at most 250)",
                field="run_id",
            )
        if dag_runs.run_id_taken(conn, run_id):
            raise AlreadyExists(f"a run with run_id {run_id!r} already exists", field="run_id")
    else:
        run_id = new_run_id(dag.dag_id, r.run_type, when)
        base, n = run_id, 1
        while dag_runs.run_id_taken(conn, run_id):
            n += 1
            run_id = f"{base}-{n}"
    return dag_runs.insert_run(
        conn,
        now,
        run_id=run_id,
        dag_id=dag.dag_id,
        version_id=dag.version_id,
        run_type=r.run_type,
        logical_date=when,
        conf=r.conf,
    )


def start_queued_runs(conn: Connection, now: datetime, catalog: Catalog, dag: dags.DagForRun) -> Counter[str]:
    """Start the oldest queued runs of a DAG while it is unpaused and has free run slots.

    The caller holds the DAG row lock (dags.lock_for_runs). All the runs it
    starts are marked running in one statement and their task instances
    inserted in another.
    """
    if dag.is_paused:
        return Counter()
    limit = catalog.dag(conn, dag.version_id).spec.max_active_runs
    free = limit - dag_runs.count_running(conn, dag.dag_id)
    if free <= 0:
        return Counter()
    waiting = dag_runs.queued_runs(conn, dag.dag_id, free)
    if not waiting:
        return Counter()
    sizes = {r.version_id: len(catalog.dag(conn, r.version_id).spec.tasks) for r in waiting}
    started = set(dag_runs.mark_running(conn, now, {r.pk: sizes[r.version_id] for r in waiting}))
    batches = []
    for run in waiting:
        if run.pk not in started:
            continue
        compiled = catalog.dag(conn, run.version_id)
        batches.append(
            tis.NewRun(
                run_pk=run.pk,
                dag_id=run.dag_id,
                tasks=compiled.spec.tasks,
                ready=initially_ready(compiled),
                pending=pending_upstream(compiled),
            )
        )
    return tis.create_for_runs(conn, now, batches)


def set_paused(conn: Connection, now: datetime, catalog: Catalog, dag_id: str, paused: bool) -> Counter[str]:
    """Pause or unpause a DAG; unpausing starts its queued runs."""
    if not dags.set_paused(conn, now, dag_id, paused):
        raise NotFound(f"DAG {dag_id!r} is not registered")
    if paused:
        return Counter()
    dag = dags.lock_for_runs(conn, dag_id)
    assert dag is not None
    return start_queued_runs(conn, now, catalog, dag)


def after_run_finished(conn: Connection, now: datetime, catalog: Catalog, dag_id: str) -> Counter[str]:
    """A run of `dag_id` ended: a run slot is free for the next queued run."""
    dag = dags.lock_for_runs(conn, dag_id)
    if dag is None:
        return Counter()
    return start_queued_runs(conn, now, catalog, dag)
