"""DAG runs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from weir.models import DagRun, DagVersion
from weir.server.store._dialect import insert_ignoring_conflict_on, is_postgres
from weir.server.store.schema import dag_runs, dag_versions
from weir.states import RunState, RunType


@dataclass(frozen=True, slots=True)
class RunRow:
    pk: int
    run_id: str
    dag_id: str
    version_id: int
    state: RunState
    run_type: RunType
    logical_date: datetime
    conf: dict[str, Any]
    queued_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    data_interval_start: datetime | None
    data_interval_end: datetime | None


_COLUMNS = (
    dag_runs.c.id,
    dag_runs.c.run_id,
    dag_runs.c.dag_id,
    dag_runs.c.version_id,
    dag_runs.c.state,
    dag_runs.c.run_type,
    dag_runs.c.logical_date,
    dag_runs.c.conf,
    dag_runs.c.queued_at,
    dag_runs.c.started_at,
    dag_runs.c.ended_at,
    dag_runs.c.data_interval_start,
    dag_runs.c.data_interval_end,
)


def _row(r: Any) -> RunRow:
    return RunRow(
        pk=r.id,
        run_id=r.run_id,
        dag_id=r.dag_id,
        version_id=r.version_id,
        state=RunState(r.state),
        run_type=RunType(r.run_type),
        logical_date=r.logical_date,
        conf=json.loads(r.conf),
        queued_at=r.queued_at,
        started_at=r.started_at,
        ended_at=r.ended_at,
        data_interval_start=r.data_interval_start,
        data_interval_end=r.data_interval_end,
    )


def _insert_run_statement(postgres: bool) -> Any:
    columns = ["run_id", "dag_id", "version_id", "state", "run_type", "logical_date", "conf", "queued_at"]
    return (
        insert_ignoring_conflict_on(postgres, dag_runs, ["run_id"])
        .values({c: bindparam(c, type_=dag_runs.c[c].type) for c in [*columns, "started_at", "unfinished"]})
        .returning(*_COLUMNS)
    )


# Built once: a trigger runs these in its transaction, and building a statement
# costs more Python time than Postgres spends running it.
_INSERT_RUN = {postgres: _insert_run_statement(postgres) for postgres in (True, False)}


def insert_run(
    conn: Connection,
    now: datetime,
    *,
    run_id: str,
    dag_id: str,
    version_id: int,
    run_type: RunType,
    logical_date: datetime,
    conf: dict[str, Any],
    start_with: int | None = None,
) -> RunRow | None:
    """Insert a run, queued, or running at once with `start_with` task instances
    (all unfinished). Returns None, having written nothing, when run_id is taken."""
    row = conn.execute(
        _INSERT_RUN[is_postgres(conn)],
        {
            "run_id": run_id,
            "dag_id": dag_id,
            "version_id": version_id,
            "state": RunState.QUEUED if start_with is None else RunState.RUNNING,
            "run_type": run_type,
            "logical_date": logical_date,
            "conf": json.dumps(conf),
            "queued_at": now,
            "started_at": None if start_with is None else now,
            "unfinished": start_with or 0,
        },
    ).first()
    return None if row is None else _row(row)


_COUNT_ACTIVE = select(
    func.count().filter(dag_runs.c.state == RunState.RUNNING),
    func.count().filter(dag_runs.c.state == RunState.QUEUED),
).where(dag_runs.c.dag_id == bindparam("dag_id"), dag_runs.c.state.in_((RunState.RUNNING, RunState.QUEUED)))


def count_active(conn: Connection, dag_id: str) -> tuple[int, int]:
    """(running, queued) runs of a DAG, in one read."""
    row = conn.execute(_COUNT_ACTIVE, {"dag_id": dag_id}).one()
    return int(row[0]), int(row[1])


def queued_runs(conn: Connection, dag_id: str, limit: int) -> list[RunRow]:
    """The oldest queued runs of a DAG, first to start."""
    rows = conn.execute(
        select(*_COLUMNS)
        .where(dag_runs.c.dag_id == dag_id, dag_runs.c.state == RunState.QUEUED)
        .order_by(dag_runs.c.queued_at, dag_runs.c.id)
        .limit(limit)
    )
    return [_row(r) for r in rows]


def mark_running(conn: Connection, now: datetime, tasks: Mapping[int, int]) -> list[int]:
    """Start queued runs: run pk -> its number of task instances (all unfinished).

    Returns the pks of the runs that were still queued and are running now.
    """
    by_size: dict[int, list[int]] = {}
    for pk, n in tasks.items():
        by_size.setdefault(n, []).append(pk)
    started: list[int] = []
    for n, pks in by_size.items():
        rows = conn.execute(
            update(dag_runs)
            .where(dag_runs.c.id.in_(pks), dag_runs.c.state == RunState.QUEUED)
            .values(state=RunState.RUNNING, started_at=now, unfinished=n)
            .returning(dag_runs.c.id)
        )
        started.extend(r.id for r in rows)
    return started


_COUNT_DOWN = (
    update(dag_runs)
    .where(dag_runs.c.id == bindparam("b_pk"))
    .values(unfinished=dag_runs.c.unfinished - bindparam("b_finished"))
    .returning(dag_runs.c.unfinished, dag_runs.c.state)
)


def count_down(conn: Connection, pk: int, finished: int) -> tuple[int, RunState]:
    """Count finished task instances off a run (locking its row); returns (left, run state)."""
    row = conn.execute(_COUNT_DOWN, {"b_pk": pk, "b_finished": finished}).one()
    return row.unfinished, RunState(row.state)


_AT_ZERO = (
    select(dag_runs.c.id)
    .where(dag_runs.c.state == RunState.RUNNING, dag_runs.c.unfinished <= 0)
    .limit(bindparam("b_limit"))
)


def at_zero(conn: Connection, limit: int) -> list[int]:
    """Running runs with no unfinished task left (by the (state, queued_at) index)."""
    return list(conn.execute(_AT_ZERO, {"b_limit": limit}).scalars())


_FINISH = (
    update(dag_runs)
    .where(dag_runs.c.id == bindparam("b_pk"), dag_runs.c.state.in_(bindparam("b_from", expanding=True)))
    .values(state=bindparam("b_state"), ended_at=bindparam("b_now"))
)


def finish(
    conn: Connection,
    now: datetime,
    pk: int,
    state: RunState,
    *,
    from_states: Sequence[RunState] = (RunState.RUNNING,),
) -> bool:
    """End a run as success or failed; False when it was not in one of `from_states`."""
    result = conn.execute(
        _FINISH, {"b_pk": pk, "b_from": [s.value for s in from_states], "b_state": state, "b_now": now}
    )
    return result.rowcount == 1


def lock(conn: Connection, pks: Iterable[int]) -> dict[int, RunRow]:
    """Lock runs (ascending id, so concurrent callers never deadlock) and return them.

    Completions of one run are serialised by this lock, so two tasks finishing
    at once cannot both miss that their common downstream is ready, nor both
    miss that the run is complete.
    """
    ids = sorted(set(pks))
    if not ids:
        return {}
    rows = conn.execute(
        select(*_COLUMNS)
        .where(dag_runs.c.id.in_(ids))
        .order_by(dag_runs.c.id)
        .with_for_update(key_share=True)
    )
    return {r.id: _row(r) for r in rows}


def get(conn: Connection, run_id: str) -> RunRow | None:
    row = conn.execute(select(*_COLUMNS).where(dag_runs.c.run_id == run_id)).first()
    return None if row is None else _row(row)


def get_many(conn: Connection, pks: Iterable[int]) -> list[RunRow]:
    ids = list(set(pks))
    if not ids:
        return []
    return [_row(r) for r in conn.execute(select(*_COLUMNS).where(dag_runs.c.id.in_(ids)))]


def list_runs(
    conn: Connection, *, dag_id: str | None, states: Sequence[RunState], limit: int
) -> list[RunRow]:
    query = select(*_COLUMNS).order_by(dag_runs.c.queued_at.desc(), dag_runs.c.id.desc()).limit(limit)
    if dag_id:
        query = query.where(dag_runs.c.dag_id == dag_id)
    if states:
        query = query.where(dag_runs.c.state.in_([s.value for s in states]))
    return [_row(r) for r in conn.execute(query)]


def versions(conn: Connection, version_ids: Iterable[int]) -> dict[int, DagVersion]:
    ids = list(set(version_ids))
    if not ids:
        return {}
    rows = conn.execute(
        select(dag_versions.c.id, dag_versions.c.version_hash, dag_versions.c.created_at).where(
            dag_versions.c.id.in_(ids)
        )
    )
    return {r.id: DagVersion(id=r.id, hash=r.version_hash, created_at=r.created_at) for r in rows}


def to_model(run: RunRow, version: DagVersion | None) -> DagRun:
    return DagRun(
        run_id=run.run_id,
        dag_id=run.dag_id,
        state=run.state,
        run_type=run.run_type,
        version=version,
        logical_date=run.logical_date,
        conf=run.conf,
        queued_at=run.queued_at,
        started_at=run.started_at,
        ended_at=run.ended_at,
        data_interval_start=run.data_interval_start,
        data_interval_end=run.data_interval_end,
    )
