"""Task instances: creation, the claim, guarded transitions, reads.

Every transition names the state it expects in its WHERE clause (and, for a
running attempt, the attempt token), so a replayed or stale message can never
apply twice, whichever replica receives it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, exists, insert, select, tuple_, update
from sqlalchemy.engine import Connection, Row

from weir.models import TaskError, TaskInstance
from weir.server.store._dialect import is_postgres
from weir.server.store.schema import task_attempts, task_instances
from weir.spec import TaskSpec
from weir.states import UNFINISHED_TASK_STATES, TaskState

ti = task_instances
CLAIMABLE = (TaskState.QUEUED.value, TaskState.UP_FOR_RETRY.value)


# -- creation -----------------------------------------------------------------


def create_for_run(
    conn: Connection, now: datetime, *, run_pk: int, dag_id: str, tasks: Sequence[TaskSpec], ready: set[str]
) -> Counter[str]:
    """Insert one instance per task; those in `ready` are queued at once.

    Returns how many were queued per queue, for waking pollers.
    """
    rows = []
    queued: Counter[str] = Counter()
    for t in tasks:
        is_ready = t.task_id in ready
        if is_ready:
            queued[t.queue] += 1
        rows.append(
            {
                "run_pk": run_pk,
                "dag_id": dag_id,
                "task_id": t.task_id,
                "map_index": -1,
                "state": TaskState.QUEUED if is_ready else TaskState.NONE,
                "queue": t.queue,
                "pool": t.pool,
                "priority": t.priority,
                "max_tries": t.max_tries,
                "available_at": now if is_ready else None,
                "queued_at": now if is_ready else None,
            }
        )
    if rows:
        conn.execute(insert(ti), rows)
    return queued


# -- the claim ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    run_pk: int
    dag_id: str
    task_id: str
    map_index: int
    attempt: int
    try_number: int
    max_tries: int
    lease_expires_at: datetime


def claim(
    conn: Connection, now: datetime, *, worker_id: str, queues: Sequence[str], limit: int, lease: timedelta
) -> list[Claimed]:
    """Lease up to `limit` claimable tasks to `worker_id`, highest priority first.

    One statement. On Postgres concurrent claimers skip each other's rows
    (FOR UPDATE SKIP LOCKED) instead of waiting; SQLite has a single writer.
    """
    candidates = (
        select(ti.c.id)
        .where(ti.c.state.in_(CLAIMABLE), ti.c.queue.in_(list(queues)), ti.c.available_at <= now)
        .order_by(ti.c.priority.desc(), ti.c.available_at, ti.c.id)
        .limit(limit)
    )
    if is_postgres(conn):
        candidates = candidates.with_for_update(skip_locked=True)
    stmt = (
        update(ti)
        .where(ti.c.id.in_(candidates.scalar_subquery()), ti.c.state.in_(CLAIMABLE))
        .values(
            state=TaskState.RUNNING,
            attempt=ti.c.attempt + 1,
            try_number=ti.c.try_number + 1,
            worker_id=worker_id,
            started_at=now,
            ended_at=None,
            lease_expires_at=now + lease,
        )
        .returning(
            ti.c.id,
            ti.c.run_pk,
            ti.c.dag_id,
            ti.c.task_id,
            ti.c.map_index,
            ti.c.attempt,
            ti.c.try_number,
            ti.c.max_tries,
            ti.c.lease_expires_at,
        )
    )
    claimed = [Claimed(*r) for r in conn.execute(stmt)]
    # RETURNING order is unspecified: hand tasks out by priority.
    return claimed


# -- reading attempts that are being reported ------------------------------------


@dataclass(frozen=True, slots=True)
class Current:
    id: int
    run_pk: int
    task_id: str
    queue: str
    state: TaskState
    attempt: int
    try_number: int
    max_tries: int
    worker_id: str | None
    started_at: datetime | None


def current(conn: Connection, ids: Iterable[int]) -> dict[int, Current]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(
            ti.c.id,
            ti.c.run_pk,
            ti.c.task_id,
            ti.c.queue,
            ti.c.state,
            ti.c.attempt,
            ti.c.try_number,
            ti.c.max_tries,
            ti.c.worker_id,
            ti.c.started_at,
        ).where(ti.c.id.in_(wanted))
    )
    return {
        r.id: Current(
            r.id,
            r.run_pk,
            r.task_id,
            r.queue,
            TaskState(r.state),
            r.attempt,
            r.try_number,
            r.max_tries,
            r.worker_id,
            r.started_at,
        )
        for r in rows
    }


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How one running attempt ends."""

    id: int
    attempt: int
    state: TaskState  # success, failed, skipped or up_for_retry
    result: str | None = None  # JSON text
    error: TaskError | None = None
    available_at: datetime | None = None  # when a retry becomes claimable


def _error_json(error: TaskError | None) -> str | None:
    if error is None:
        return None
    return json.dumps({"type": error.type, "message": error.message, "traceback": error.traceback})


def error_from_json(text: str | None) -> TaskError | None:
    if not text:
        return None
    d = json.loads(text)
    return TaskError(type=d.get("type", ""), message=d.get("message", ""), traceback=d.get("traceback", ""))


_END = (
    update(ti)
    .where(
        ti.c.id == bindparam("b_id"), ti.c.attempt == bindparam("b_attempt"), ti.c.state == TaskState.RUNNING
    )
    .values(
        state=bindparam("b_state"),
        result=bindparam("b_result"),
        error=bindparam("b_error"),
        available_at=bindparam("b_available_at"),
        ended_at=bindparam("b_ended_at"),
        lease_expires_at=None,
    )
)


def end_attempts(conn: Connection, now: datetime, ends: Sequence[AttemptEnd], by: dict[int, Current]) -> None:
    """Apply attempt endings (guarded by attempt and state) and record each attempt.

    The caller has locked the runs involved and read `by` after locking, so
    every ending here matches a running attempt.
    """
    if not ends:
        return
    conn.execute(
        _END,
        [
            {
                "b_id": e.id,
                "b_attempt": e.attempt,
                "b_state": e.state.value,
                "b_result": e.result,
                "b_error": _error_json(e.error),
                "b_available_at": e.available_at,
                "b_ended_at": now,
            }
            for e in ends
        ],
    )
    conn.execute(
        insert(task_attempts),
        [
            {
                "ti_id": e.id,
                "attempt": e.attempt,
                "try_number": by[e.id].try_number,
                "worker_id": by[e.id].worker_id,
                "started_at": by[e.id].started_at,
                "ended_at": now,
                "outcome": e.state.value,
                "error": _error_json(e.error),
            }
            for e in ends
        ],
    )


def attempt_outcomes(conn: Connection, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """(ti_id, attempt) -> recorded outcome, for recognising replayed reports."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(
        select(task_attempts.c.ti_id, task_attempts.c.attempt, task_attempts.c.outcome).where(
            tuple_(task_attempts.c.ti_id, task_attempts.c.attempt).in_(wanted)
        )
    )
    return {(r.ti_id, r.attempt): r.outcome for r in rows}


# -- promotion ------------------------------------------------------------------


def states(conn: Connection, run_pk: int, task_ids: Iterable[str] | None = None) -> dict[str, TaskState]:
    """task_id -> state in one run (all tasks when task_ids is None)."""
    query = select(ti.c.task_id, ti.c.state).where(ti.c.run_pk == run_pk, ti.c.map_index == -1)
    if task_ids is not None:
        wanted = list(set(task_ids))
        if not wanted:
            return {}
        query = query.where(ti.c.task_id.in_(wanted))
    return {r.task_id: TaskState(r.state) for r in conn.execute(query)}


def move(
    conn: Connection, now: datetime, run_pk: int, task_ids: Iterable[str], to: TaskState
) -> list[tuple[str, str]]:
    """Move waiting (`none`) tasks of a run to queued, upstream_failed or skipped.

    Returns (task_id, queue) of the rows moved.
    """
    wanted = list(set(task_ids))
    if not wanted:
        return []
    values: dict[str, Any] = {"state": to}
    if to is TaskState.QUEUED:
        values.update(queued_at=now, available_at=now)
    else:
        values.update(ended_at=now)
    rows = conn.execute(
        update(ti)
        .where(ti.c.run_pk == run_pk, ti.c.task_id.in_(wanted), ti.c.state == TaskState.NONE)
        .values(**values)
        .returning(ti.c.task_id, ti.c.queue)
    )
    return [(r.task_id, r.queue) for r in rows]


def has_unfinished(conn: Connection, run_pk: int) -> bool:
    return bool(
        conn.execute(
            select(
                exists().where(
                    ti.c.run_pk == run_pk, ti.c.state.in_([s.value for s in UNFINISHED_TASK_STATES])
                )
            )
        ).scalar_one()
    )


# -- results -------------------------------------------------------------------


def results(conn: Connection, keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], Any]:
    """(run_pk, task_id) -> decoded result of unmapped tasks (None when there is none)."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(
        select(ti.c.run_pk, ti.c.task_id, ti.c.result).where(
            tuple_(ti.c.run_pk, ti.c.task_id).in_(wanted), ti.c.map_index == -1
        )
    )
    return {(r.run_pk, r.task_id): None if r.result is None else json.loads(r.result) for r in rows}


# -- leases --------------------------------------------------------------------

_RENEW = (
    update(ti)
    .where(
        ti.c.id == bindparam("b_id"), ti.c.attempt == bindparam("b_attempt"), ti.c.state == TaskState.RUNNING
    )
    .values(lease_expires_at=bindparam("b_until"))
)


def renew_leases(
    conn: Connection, now: datetime, refs: Sequence[tuple[int, int]], lease: timedelta
) -> dict[tuple[int, int], datetime | None]:
    """Extend the leases of current attempts; (id, attempt) -> new expiry, None when not current."""
    if not refs:
        return {}
    until = now + lease
    conn.execute(_RENEW, [{"b_id": i, "b_attempt": a, "b_until": until} for i, a in refs])
    rows = conn.execute(
        select(ti.c.id, ti.c.attempt, ti.c.state).where(ti.c.id.in_([i for i, _ in refs]))
    ).all()
    live = {(r.id, r.attempt) for r in rows if r.state == TaskState.RUNNING}
    return {ref: (until if ref in live else None) for ref in refs}


# -- reads for the control API ------------------------------------------------------


def for_run(conn: Connection, run_pk: int, *, include_results: bool) -> list[Row[Any]]:
    columns = [
        ti.c.id,
        ti.c.task_id,
        ti.c.map_index,
        ti.c.state,
        ti.c.try_number,
        ti.c.max_tries,
        ti.c.queue,
        ti.c.priority,
        ti.c.worker_id,
        ti.c.queued_at,
        ti.c.started_at,
        ti.c.ended_at,
        ti.c.error,
    ]
    if include_results:
        columns.append(ti.c.result)
    return list(conn.execute(select(*columns).where(ti.c.run_pk == run_pk).order_by(ti.c.id)))


def to_model(row: Row[Any], *, run_id: str, dag_id: str) -> TaskInstance:
    m = row._mapping
    result_text = m.get("result")
    return TaskInstance(
        run_id=run_id,
        dag_id=dag_id,
        task_id=m["task_id"],
        map_index=m["map_index"],
        state=TaskState(m["state"]),
        try_number=m["try_number"],
        max_tries=m["max_tries"],
        queue=m["queue"],
        priority=m["priority"],
        worker_id=m["worker_id"] or "",
        queued_at=m["queued_at"],
        started_at=m["started_at"],
        ended_at=m["ended_at"],
        error=error_from_json(m["error"]),
        result=None if result_text is None else json.loads(result_text),
        has_result=result_text is not None,
    )


@dataclass(frozen=True, slots=True)
class Located:
    id: int
    state: TaskState
    attempt: int
    try_number: int


def locate(conn: Connection, run_pk: int, task_id: str, map_index: int) -> Located | None:
    row = conn.execute(
        select(ti.c.id, ti.c.state, ti.c.attempt, ti.c.try_number).where(
            ti.c.run_pk == run_pk, ti.c.task_id == task_id, ti.c.map_index == map_index
        )
    ).first()
    return None if row is None else Located(row.id, TaskState(row.state), row.attempt, row.try_number)


def attempts_of_try(conn: Connection, ti_id: int, try_number: int) -> list[int]:
    """Attempt tokens recorded for one try (a try given back may have several)."""
    rows = conn.execute(
        select(task_attempts.c.attempt)
        .where(task_attempts.c.ti_id == ti_id, task_attempts.c.try_number == try_number)
        .order_by(task_attempts.c.attempt)
    )
    return [r.attempt for r in rows]


def release(conn: Connection, now: datetime, refs: Sequence[tuple[int, int]]) -> Counter[str]:
    """Put running attempts back in the queue at once (claimed but never run).

    The try does not count; the attempt token stays used, so a report of the
    released attempt is refused. Returns tasks re-queued per queue.
    """
    queued: Counter[str] = Counter()
    for task_instance_id, attempt in refs:
        row = conn.execute(
            update(ti)
            .where(ti.c.id == task_instance_id, ti.c.attempt == attempt, ti.c.state == TaskState.RUNNING)
            .values(
                state=TaskState.QUEUED,
                try_number=ti.c.try_number - 1,
                worker_id=None,
                lease_expires_at=None,
                started_at=None,
                available_at=now,
            )
            .returning(ti.c.queue)
        ).first()
        if row is not None:
            queued[row.queue] += 1
    return queued
