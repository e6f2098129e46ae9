"""Read-side of the control API: DAGs, runs, task instances, logs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from weir.errors import NotFound
from weir.models import DagInfo, DagRun, TaskInstance
from weir.server.catalog import Catalog
from weir.server.store import dag_runs, dags, task_logs
from weir.server.store import task_instances as tis
from weir.spec import DagSpec
from weir.states import FINISHED_TASK_STATES, RunState, TaskState


def dag_with_spec(conn: Connection, catalog: Catalog, dag_id: str) -> tuple[DagInfo, DagSpec]:
    info = dags.get(conn, dag_id)
    if info is None or info.latest_version is None:
        raise NotFound(f"DAG {dag_id!r} is not registered")
    return info, catalog.dag(conn, info.latest_version.id).spec


def run(conn: Connection, run_id: str) -> DagRun:
    row = _run_row(conn, run_id)
    return dag_runs.to_model(row, dag_runs.versions(conn, [row.version_id]).get(row.version_id))


def _run_row(conn: Connection, run_id: str) -> dag_runs.RunRow:
    row = dag_runs.get(conn, run_id)
    if row is None:
        raise NotFound(f"run {run_id!r} does not exist")
    return row


def list_runs(
    conn: Connection, *, dag_id: str | None, states: Sequence[RunState], limit: int
) -> list[DagRun]:
    if dag_id and dags.get(conn, dag_id) is None:
        raise NotFound(f"DAG {dag_id!r} is not registered")
    rows = dag_runs.list_runs(conn, dag_id=dag_id, states=states, limit=limit)
    versions = dag_runs.versions(conn, [r.version_id for r in rows])
    return [dag_runs.to_model(r, versions.get(r.version_id)) for r in rows]


def task_instances(conn: Connection, run_id: str, *, include_results: bool) -> list[TaskInstance]:
    row = _run_row(conn, run_id)
    return [
        tis.to_model(r, run_id=row.run_id, dag_id=row.dag_id)
        for r in tis.for_run(conn, row.pk, include_results=include_results)
    ]


@dataclass(frozen=True, slots=True)
class Logs:
    data: bytes
    cursor: int
    try_number: int
    complete: bool


def logs(conn: Connection, *, run_id: str, task_id: str, map_index: int, try_number: int, after: int) -> Logs:
    row = _run_row(conn, run_id)
    ti = tis.locate(conn, row.pk, task_id, map_index)
    if ti is None:
        raise NotFound(f"run {run_id!r} has no task {task_id!r}")
    wanted = try_number or ti.try_number
    if wanted > ti.try_number or wanted < 0:
        raise NotFound(
            f"task {task_id!r} of run {run_id!r} has no try {wanted} (tries so far: {ti.try_number})"
        )
    attempts = tis.attempts_of_try(conn, ti.id, wanted)
    live = wanted == ti.try_number and ti.state is TaskState.RUNNING
    if live and ti.attempt not in attempts:
        attempts.append(ti.attempt)
    data, cursor = task_logs.read(conn, ti.id, attempts, after)
    complete = (
        wanted > 0
        and not live
        and (wanted < ti.try_number or ti.state in FINISHED_TASK_STATES or ti.state is TaskState.UP_FOR_RETRY)
    )
    return Logs(data=data, cursor=cursor, try_number=wanted, complete=complete)
