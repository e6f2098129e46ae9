"""Creating and starting runs, and pausing DAGs.

A run is created `queued` and starts (its tasks are created and its roots
queued) in the same transaction when its DAG is unpaused and below
max_active_runs; otherwise it starts when a slot frees: when another run of
the DAG finishes or the DAG is unpaused.

Lock order: task_instances rows (those ending, ascending id, then their
downstream tasks, ascending id), then dag_runs rows (ascending id), then the
dags row. Heartbeats renew leases in ascending id too.
Triggering takes only the dags row. Cancelling a run locks its row first;
a completion racing it may deadlock, and the database aborts one of the
two, which is retried (db.Database treats deadlock victims as transient).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from weir.errors import AlreadyExists, InvalidArgument, NotFound, WeirError
from weir.models import DagRun
from weir.server.catalog import Catalog, CompiledDag, RunInfo
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

    Per DAG (in dag_id order): lock its row once, read how many of its runs
    are running and queued, then insert the requested runs. While no older
    run waits and max_active_runs allows, a new run is inserted running and
    its task instances with it (the common case: no run is read back);
    otherwise it is inserted queued, and the oldest queued runs start as the
    free slots allow. Every check that can refuse a request runs before it
    writes anything, so a refused request leaves the transaction clean for
    the others. Returns one run row (or the error) per request, and the
    tasks queued per queue.
    """
    out: list[dag_runs.RunRow | WeirError | None] = [None] * len(requests)
    by_dag: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        by_dag.setdefault(r.dag_id, []).append(i)
    queued: Counter[str] = Counter()
    for dag_id in sorted(by_dag):
        dag = dags.lock_for_runs(conn, dag_id)
        if dag is None:
            missing = NotFound(f"DAG {dag_id!r} is not registered (run a worker or `weir dags deploy` first)")
            for i in by_dag[dag_id]:
                out[i] = missing
            continue
        compiled = catalog.dag(conn, dag.version_id)
        free, waiting = 0, 0
        if not dag.is_paused:
            running, waiting = dag_runs.count_active(conn, dag_id)
            free = compiled.spec.max_active_runs - running
        started: list[tis.NewRun] = []
        queued_here: dict[int, int] = {}  # run pk -> request index
        for i in by_dag[dag_id]:
            start_now = free > 0 and waiting == 0  # older queued runs go first
            row = out[i] = _insert_run(
                conn, now, dag, requests[i], len(compiled.spec.tasks) if start_now else None
            )
            if isinstance(row, WeirError):
                continue
            if start_now:
                free -= 1
                started.append(_new_run(row.pk, compiled))
            else:
                queued_here[row.pk] = i
        queued += tis.create_for_runs(conn, now, started)
        if waiting and free > 0:
            # Queued runs and free slots at once (a slot freed by a run that
            # ended while the DAG was paused, say): start the oldest now.
            queued += start_queued_runs(conn, now, catalog, dag)
            for row in dag_runs.get_many(conn, queued_here):
                out[queued_here[row.pk]] = row
    return [r for r in out if r is not None], queued


@dataclass(frozen=True, slots=True)
class ApiTriggers:
    results: list[DagRun | WeirError]
    queued: Counter[str]
    #: Runs created, for the catalog once the transaction has committed.
    created: list[RunInfo]


def trigger_for_api(
    conn: Connection, now: datetime, catalog: Catalog, requests: Sequence[TriggerRequest]
) -> ApiTriggers:
    """`trigger_many`, answering with API models (versions from the catalog)."""
    results, queued = trigger_many(conn, now, catalog, requests)
    out: list[DagRun | WeirError] = []
    created: list[RunInfo] = []
    for r in results:
        if isinstance(r, WeirError):
            out.append(r)
        else:
            out.append(dag_runs.to_model(r, catalog.dag(conn, r.version_id).version))
            created.append(catalog.run_info(conn, r))
    return ApiTriggers(out, queued, created)


def _insert_run(
    conn: Connection, now: datetime, dag: dags.DagForRun, r: TriggerRequest, start_with: int | None
) -> dag_runs.RunRow | WeirError:
    """Insert one run (see dag_runs.insert_run), or say why not; a refused run writes nothing."""
    if r.run_id is not None:
        if not RUN_ID_PATTERN.match(r.run_id):
            return InvalidArgument(
                f"run_id {r.run_id!r} may only contain letters, digits and '_ - . : +' (at most 250)",
                field="run_id",
            )
        candidates: Iterable[str] = [r.run_id]
    else:
        # A generated id taken (the DAG triggered twice in one instant) gets a suffix.
        base = new_run_id(dag.dag_id, r.run_type, r.logical_date or now)
        candidates = itertools.chain([base], (f"{base}-{n}" for n in itertools.count(2)))
    for run_id in candidates:
        row = dag_runs.insert_run(
            conn,
            now,
            run_id=run_id,
            dag_id=dag.dag_id,
            version_id=dag.version_id,
            run_type=r.run_type,
            logical_date=r.logical_date or now,
            conf=r.conf,
            start_with=start_with,
        )
        if row is not None:
            return row
    return AlreadyExists(f"a run with run_id {r.run_id!r} already exists", field="run_id")


def _new_run(run_pk: int, compiled: CompiledDag) -> tis.NewRun:
    return tis.NewRun(
        run_pk=run_pk,
        dag_id=compiled.spec.dag_id,
        tasks=compiled.spec.tasks,
        ready=initially_ready(compiled),
        pending=pending_upstream(compiled),
    )


def start_queued_runs(conn: Connection, now: datetime, catalog: Catalog, dag: dags.DagForRun) -> Counter[str]:
    """Start the oldest queued runs of a DAG while it is unpaused and has free run slots.

    The caller holds the DAG row lock (dags.lock_for_runs). All the runs it
    starts are marked running in one statement and their task instances
    inserted in another.
    """
    if dag.is_paused:
        return Counter()
    running, queued = dag_runs.count_active(conn, dag.dag_id)
    free = catalog.dag(conn, dag.version_id).spec.max_active_runs - running
    if free <= 0 or not queued:
        return Counter()
    waiting = dag_runs.queued_runs(conn, dag.dag_id, free)
    if not waiting:
        return Counter()
    sizes = {r.version_id: len(catalog.dag(conn, r.version_id).spec.tasks) for r in waiting}
    started = set(dag_runs.mark_running(conn, now, {r.pk: sizes[r.version_id] for r in waiting}))
    batches = [_new_run(run.pk, catalog.dag(conn, run.version_id)) for run in waiting if run.pk in started]
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
