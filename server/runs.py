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
    dag = dags.lock_for_runs(conn, dag_id)
    if dag is None:
        raise NotFound(f"DAG {dag_id!r} is not registered (run a worker or `weir dags deploy` first)")
    when = logical_date or now
    if run_id:
        if not RUN_ID_PATTERN.match(run_id):
            raise InvalidArgument(
                f"run_id {run_id!r} may only contain letters, digits and '_ - . : +' (at most 250)",
                field="run_id",
            )
        if dag_runs.run_id_taken(conn, run_id):
            raise AlreadyExists(f"a run with run_id {run_id!r} already exists", field="run_id")
    else:
        run_id = new_run_id(dag_id, run_type, when)
        # The DAG row lock serialises triggers of this DAG, so check-then-insert is safe.
        base, n = run_id, 1
        while dag_runs.run_id_taken(conn, run_id):
            n += 1
            run_id = f"{base}-{n}"
    pk = dag_runs.insert_run(
        conn,
        now,
        run_id=run_id,
        dag_id=dag_id,
        version_id=dag.version_id,
        run_type=run_type,
        logical_date=when,
        conf=conf,
    )
    queued = start_queued_runs(conn, now, catalog, dag)
    run = dag_runs.get(conn, run_id)
    assert run is not None and run.pk == pk
    return Triggered(run=run, queued=queued)


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    dag_id: str
    conf: dict[str, Any]
    run_id: str | None = None
    logical_date: datetime | None = None


def trigger_many(
    conn: Connection, now: datetime, catalog: Catalog, requests: Sequence[TriggerRequest]
) -> tuple[list[DagRun | WeirError], Counter[str]]:
    """Trigger several runs in one transaction; a bad request fails alone.

    Every check that can refuse a request runs before it writes anything,
    so a refused request leaves the transaction clean for the others.
    Returns one run (or the error) per request, and the tasks queued.
    """
    out: list[DagRun | WeirError] = []
    queued: Counter[str] = Counter()
    for r in requests:
        try:
            triggered = trigger(
                conn, now, catalog, dag_id=r.dag_id, conf=r.conf, run_id=r.run_id, logical_date=r.logical_date
            )
        except WeirError as exc:
            out.append(exc)
            continue
        queued += triggered.queued
        run = triggered.run
        out.append(dag_runs.to_model(run, dag_runs.versions(conn, [run.version_id]).get(run.version_id)))
    return out, queued


def start_queued_runs(conn: Connection, now: datetime, catalog: Catalog, dag: dags.DagForRun) -> Counter[str]:
    """Start the oldest queued runs of a DAG while it is unpaused and has free run slots.

    The caller holds the DAG row lock (dags.lock_for_runs).
    """
    queued: Counter[str] = Counter()
    if dag.is_paused:
        return queued
    limit = catalog.dag(conn, dag.version_id).spec.max_active_runs
    free = limit - dag_runs.count_running(conn, dag.dag_id)
    if free <= 0:
        return queued
    for run in dag_runs.queued_runs(conn, dag.dag_id, free):
        queued += start_run(conn, now, catalog, run)
    return queued


def start_run(conn: Connection, now: datetime, catalog: Catalog, run: dag_runs.RunRow) -> Counter[str]:
    """Move a queued run to running: create its task instances and queue its roots."""
    compiled = catalog.dag(conn, run.version_id)
    if not dag_runs.mark_running(conn, now, run.pk, tasks=len(compiled.spec.tasks)):
        return Counter()
    return tis.create_for_run(
        conn,
        now,
        run_pk=run.pk,
        dag_id=run.dag_id,
        tasks=compiled.spec.tasks,
        ready=initially_ready(compiled),
        pending=pending_upstream(compiled),
    )


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
