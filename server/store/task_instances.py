"""Task instances: creation, the claim, guarded transitions, reads.

Every transition names the state it expects in its WHERE clause (and, for a
running attempt, the attempt token), so a replayed or stale message can never
apply twice, whichever replica receives it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, NamedTuple

from sqlalchemy import and_, any_, bindparam, case, func, insert, literal_column, select, true, tuple_, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Row
from sqlalchemy.types import TypeDecorator

from weir.models import TaskError, TaskInstance
from weir.server.store._dialect import is_postgres
from weir.server.store.schema import dag_runs, task_attempts, task_instances
from weir.spec import TaskSpec
from weir.states import UNFINISHED_TASK_STATES, RunState, TaskState

ti = task_instances
CLAIMABLE = (TaskState.QUEUED.value, TaskState.UP_FOR_RETRY.value)
_NONE: Any = literal_column(f"'{TaskState.NONE.value}'")


# -- many rows in one statement (Postgres) ---------------------------------------


def _rows(name: str, columns: Sequence[tuple[str, Any]]) -> Any:
    """Postgres: a derived table `name`, one row per array element, from array
    parameters a_<column>: many rows as one parameter set, and one statement
    however many there are (no per-row statement or parameter processing)."""
    # Arrays of the columns' database types: a TypeDecorator's processing would
    # run per element (the server's datetimes are already UTC and aware).
    arrays = [
        bindparam(
            f"a_{col}", type_=postgresql.ARRAY(type_.impl if isinstance(type_, TypeDecorator) else type_)
        )
        for col, type_ in columns
    ]
    return func.unnest(*arrays).table_valued(*(col for col, _ in columns)).render_derived(name)


#: From this many rows, _rows: below it, binding a list per column costs more
#: (psycopg dumps lists in Python) than a statement per row (a run of one task
#: is created ~0.25 ms sooner as a plain INSERT).
MANY_ROWS = 8


def _typed(*names: str) -> tuple[tuple[str, Any], ...]:
    """(name, type) of these task_instances columns, for _rows."""
    return tuple((name, ti.c[name].type) for name in names)


def _arrays(columns: Sequence[tuple[str, Any]], rows: Sequence[Sequence[Any]]) -> dict[str, list[Any]]:
    """Parameters for _rows: `rows` (tuples in `columns` order) as one list per column."""
    return {
        f"a_{col}": list(values) for (col, _), values in zip(columns, zip(*rows, strict=True), strict=True)
    }


# -- creation -----------------------------------------------------------------


def start_deadline(available_at: datetime, task: TaskSpec) -> datetime | None:
    """When a task that becomes claimable at `available_at` fails for not having started."""
    timeout = task.schedule_to_start_timeout
    return None if timeout is None else available_at + timeout


@dataclass(frozen=True, slots=True)
class NewRun:
    """The task instances to create for one run that starts."""

    run_pk: int
    dag_id: str
    tasks: Sequence[TaskSpec]
    #: tasks queued at once
    ready: set[str]
    #: task_id -> upstream tasks it waits for
    pending: Mapping[str, int]


#: A new task instance's columns, in the order create_for_runs builds rows.
_NEW = _typed(
    "run_pk",
    "dag_id",
    "task_id",
    "map_index",
    "state",
    "queue",
    "pool",
    "priority",
    "max_tries",
    "available_at",
    "queued_at",
    "start_deadline",
    "pending_upstream",
)


def _create_statement() -> Any:
    """Postgres: INSERT every row from one set of array parameters (see _rows)."""
    created = _rows("created", _NEW)
    return insert(ti).from_select([name for name, _ in _NEW], select(*created.c))


_CREATE = _create_statement()


def create_for_runs(conn: Connection, now: datetime, new_runs: Sequence[NewRun]) -> Counter[str]:
    """Insert one instance per task of each run (one statement); ready ones are queued at once.

    Returns how many were queued per queue, for waking pollers.
    """
    rows = []
    queued: Counter[str] = Counter()
    queued_state, waiting = TaskState.QUEUED.value, TaskState.NONE.value
    for run in new_runs:
        for t in run.tasks:
            ready = t.task_id in run.ready
            if ready:
                queued[t.queue] += 1
            rows.append(
                (
                    run.run_pk,
                    run.dag_id,
                    t.task_id,
                    -1,
                    queued_state if ready else waiting,
                    t.queue,
                    t.pool,
                    t.priority,
                    t.max_tries,
                    now if ready else None,
                    now if ready else None,
                    start_deadline(now, t) if ready else None,
                    run.pending[t.task_id],
                )
            )
    if not rows:
        return queued
    if len(rows) >= MANY_ROWS and is_postgres(conn):
        conn.execute(_CREATE, _arrays(_NEW, rows))
    else:
        names = [name for name, _ in _NEW]
        conn.execute(insert(ti), [dict(zip(names, row, strict=True)) for row in rows])
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
    queue: str


#: What a claim returns, in Claimed's field order.
_CLAIMED_COLUMNS = (
    ti.c.id,
    ti.c.run_pk,
    ti.c.dag_id,
    ti.c.task_id,
    ti.c.map_index,
    ti.c.attempt,
    ti.c.try_number,
    ti.c.max_tries,
    ti.c.lease_expires_at,
    ti.c.queue,
)


def _claim_statement(postgres: bool) -> Any:
    # The queues as an IN list, not = ANY(array): one queue is then an equality,
    # and the claim-order index gives the rows in order without a sort.
    candidates = (
        select(ti.c.id)
        .where(
            ti.c.state.in_(CLAIMABLE),
            ti.c.queue.in_(bindparam("queues", expanding=True)),
            ti.c.available_at <= bindparam("now"),
        )
        .order_by(ti.c.priority.desc(), ti.c.available_at, ti.c.id)
        .limit(bindparam("limit"))
    )
    if postgres:
        # Picked and locked once, as an array (an InitPlan), then updated by
        # primary key alone: locking re-checks a row's state on its latest
        # version, so every row picked is claimable and stays so. As `id IN
        # (subquery)`, Postgres may plan a nested-loop semi-join that re-runs the
        # subquery for every claimable row, each run skipping the rows the
        # statement already updated: a claim of 1 took every queued task once
        # task_instances had been analysed while few rows were claimable (a test
        # reproduces it); with the state test here too, it may scan every
        # claimable row per claim through the partial index.
        locked = candidates.with_for_update(skip_locked=True).scalar_subquery()
        chosen = [ti.c.id == any_(func.array(locked, type_=postgresql.ARRAY(ti.c.id.type)))]
    else:  # one writer at a time
        chosen = [ti.c.id.in_(candidates.scalar_subquery()), ti.c.state.in_(CLAIMABLE)]
    return (
        update(ti)
        .where(*chosen)
        .values(
            state=TaskState.RUNNING,
            attempt=ti.c.attempt + 1,
            try_number=ti.c.try_number + 1,
            worker_id=bindparam("worker_id"),
            started_at=bindparam("now"),
            ended_at=None,
            lease_expires_at=bindparam("until"),
            start_deadline=None,
        )
        .returning(*_CLAIMED_COLUMNS)
    )


# Built once: the claim runs on every poll, and building a statement costs
# more Python time than Postgres spends running it.
_CLAIM = {True: _claim_statement(postgres=True), False: _claim_statement(postgres=False)}


def claim(
    conn: Connection, now: datetime, *, worker_id: str, queues: Sequence[str], limit: int, lease: timedelta
) -> list[Claimed]:
    """Lease up to `limit` claimable tasks to `worker_id`, highest priority first.

    One statement. On Postgres concurrent claimers skip each other's rows
    (FOR UPDATE SKIP LOCKED) instead of waiting; SQLite has a single writer.
    """
    params = {"queues": list(queues), "now": now, "limit": limit, "worker_id": worker_id}
    rows = conn.execute(_CLAIM[is_postgres(conn)], {**params, "until": now + lease})
    return [Claimed(*r) for r in rows]  # rows of _CLAIMED_COLUMNS, in field order


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
    lease_expires_at: datetime | None = None
    start_deadline: datetime | None = None


_CURRENT_COLUMNS = (
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
    ti.c.lease_expires_at,
    ti.c.start_deadline,
)


def _current_statement(postgres: bool, lock: bool) -> Any:
    # Postgres: one array parameter, so the statement's text is the same for
    # any number of ids (psycopg prepares it); SQLite expands an IN list.
    if postgres:
        which = ti.c.id == any_(bindparam("ids", type_=postgresql.ARRAY(ti.c.id.type)))
    else:
        which = ti.c.id.in_(bindparam("ids", expanding=True))
    query = select(*_CURRENT_COLUMNS).where(which)
    return query.order_by(ti.c.id).with_for_update(key_share=True) if lock else query


#: By (postgres, lock).
_CURRENT = {(pg, lock): _current_statement(pg, lock) for pg in (True, False) for lock in (True, False)}


def current(conn: Connection, ids: Iterable[int], *, lock: bool = False) -> dict[int, Current]:
    """The rows of these task instances; with `lock`, locked until commit (Postgres)."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    query = _CURRENT[is_postgres(conn), lock]
    return {r[0]: _current(r) for r in conn.execute(query, {"ids": wanted})}


def _current(r: Any, state: TaskState | None = None) -> Current:
    """A row of _CURRENT_COLUMNS (Current's fields, in order); `state` stands in for the row's."""
    return Current(r[0], r[1], r[2], r[3], state or TaskState(r[4]), *r[5:])


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How one running attempt ends."""

    id: int
    attempt: int
    state: TaskState  # success, failed, skipped or up_for_retry
    result: str | None = None  # JSON text
    error: TaskError | None = None
    available_at: datetime | None = None  # when a retry becomes claimable
    start_deadline: datetime | None = None  # of that retry


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
        start_deadline=bindparam("b_start_deadline"),
        ended_at=bindparam("b_ended_at"),
        lease_expires_at=None,
    )
)


def _end_and_record(*, returning: bool) -> Any:
    """Postgres: end a running attempt and record it in one statement; the UPDATE
    returns the columns it leaves as they were. (SQLite cannot put an UPDATE in a WITH.)"""
    ended = _END.returning(*_CURRENT_COLUMNS).cte("ended")
    record = _record(ended)
    # With the ended rows returned, the INSERT goes in the WITH too.
    return select(ended).add_cte(record.cte("recorded")) if returning else record


def _record(ended: Any) -> Any:
    """INSERT the attempts that `ended` (a CTE of _END returning _CURRENT_COLUMNS) ended."""
    return insert(task_attempts).from_select(
        ["ti_id", "attempt", "try_number", "worker_id", "started_at", "ended_at", "outcome", "error"],
        select(
            ended.c.id,
            ended.c.attempt,
            ended.c.try_number,
            ended.c.worker_id,
            ended.c.started_at,
            bindparam("b_ended_at", type_=task_attempts.c.ended_at.type),
            bindparam("b_state", type_=task_attempts.c.outcome.type),
            bindparam("b_error", type_=task_attempts.c.error.type),
        ),
    )


#: How attempts end, one row per attempt, as arrays bound to parameters a_<column>.
_ENDS = _typed("id", "attempt", "state", "result", "error", "available_at", "start_deadline")


def _end_and_record_all() -> Any:
    """Postgres: end many running attempts (guarded by attempt and state) and
    record them, in one statement."""
    e = _rows("e", _ENDS)
    ended = (
        update(ti)
        .where(ti.c.id == e.c.id, ti.c.attempt == e.c.attempt, ti.c.state == TaskState.RUNNING)
        .values(
            state=e.c.state,
            result=e.c.result,
            error=e.c.error,
            available_at=e.c.available_at,
            start_deadline=e.c.start_deadline,
            ended_at=bindparam("b_ended_at"),
            lease_expires_at=None,
        )
        .returning(
            ti.c.id, ti.c.attempt, ti.c.try_number, ti.c.worker_id, ti.c.started_at, e.c.state, e.c.error
        )
        .cte("ended")
    )
    return insert(task_attempts).from_select(
        ["ti_id", "attempt", "try_number", "worker_id", "started_at", "ended_at", "outcome", "error"],
        select(*ended.c[:5], bindparam("b_ended_at", type_=task_attempts.c.ended_at.type), *ended.c[5:]),
    )


_END_AND_RECORD_ALL = _end_and_record_all()
_END_AND_RECORD = _end_and_record(returning=False)
#: One attempt, the row returned: by database, Postgres or not.
_END_ONE = {True: _end_and_record(returning=True), False: _END.returning(*_CURRENT_COLUMNS)}


def _end_params(now: datetime, e: AttemptEnd) -> dict[str, Any]:
    return {
        "b_id": e.id,
        "b_attempt": e.attempt,
        "b_state": e.state.value,
        "b_result": e.result,
        "b_error": _error_json(e.error),
        "b_available_at": e.available_at,
        "b_start_deadline": e.start_deadline,
        "b_ended_at": now,
    }


def _attempt_row(now: datetime, e: AttemptEnd, c: Current) -> dict[str, Any]:
    return {
        "ti_id": e.id,
        "attempt": e.attempt,
        "try_number": c.try_number,
        "worker_id": c.worker_id,
        "started_at": c.started_at,
        "ended_at": now,
        "outcome": e.state.value,
        "error": _error_json(e.error),
    }


def end_attempts(conn: Connection, now: datetime, ends: Sequence[AttemptEnd], by: dict[int, Current]) -> None:
    """Apply attempt endings (guarded by attempt and state) and record each attempt.

    The caller has locked the rows and read `by` after locking, so every
    ending here matches a running attempt.
    """
    if not ends:
        return
    if is_postgres(conn):
        if len(ends) >= MANY_ROWS:
            rows = [
                (
                    e.id,
                    e.attempt,
                    e.state.value,
                    e.result,
                    _error_json(e.error),
                    e.available_at,
                    e.start_deadline,
                )
                for e in ends
            ]
            conn.execute(_END_AND_RECORD_ALL, {**_arrays(_ENDS, rows), "b_ended_at": now})
        else:
            conn.execute(_END_AND_RECORD, [_end_params(now, e) for e in ends])
        return
    conn.execute(_END, [_end_params(now, e) for e in ends])
    conn.execute(insert(task_attempts), [_attempt_row(now, e, by[e.id]) for e in ends])


def end_running(conn: Connection, now: datetime, end: AttemptEnd) -> Current | None:
    """End one attempt if it is running, without reading it first, and record it.

    Returns the row as it was (but for the lease and start deadline, which
    the end clears), or None when that attempt was not running: the caller
    then finds out why. The guard in the UPDATE is the fence, and the row
    stays locked until commit, as `current(..., lock=True)` would leave it.
    """
    postgres = is_postgres(conn)
    row = conn.execute(_END_ONE[postgres], _end_params(now, end)).first()
    if row is None:
        return None
    was = _current(row, TaskState.RUNNING)  # the row as the end left it: it was running
    if not postgres:
        conn.execute(insert(task_attempts), _attempt_row(now, end, was))
    return was


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


_STATES = select(ti.c.task_id, ti.c.state).where(
    ti.c.run_pk == bindparam("run_pk"),
    ti.c.map_index == -1,
    ti.c.task_id.in_(bindparam("task_ids", expanding=True)),
)


_IN_STATES = select(ti.c.task_id, ti.c.state).where(
    ti.c.run_pk == bindparam("run_pk"),
    ti.c.map_index == -1,
    ti.c.state.in_(bindparam("states", expanding=True)),
)


def in_states(conn: Connection, run_pk: int, wanted: Iterable[TaskState]) -> dict[str, TaskState]:
    """task_id -> state of one run's tasks that are in one of these states (by index)."""
    rows = conn.execute(_IN_STATES, {"run_pk": run_pk, "states": [s.value for s in wanted]})
    return {r.task_id: TaskState(r.state) for r in rows}


def states(conn: Connection, run_pk: int, task_ids: Iterable[str]) -> dict[str, TaskState]:
    """task_id -> state of these tasks in one run."""
    wanted = list(set(task_ids))
    if not wanted:
        return {}
    rows = conn.execute(_STATES, {"run_pk": run_pk, "task_ids": wanted})
    return {r.task_id: TaskState(r.state) for r in rows}


class AtZero(Enum):
    """What a count-down does to a waiting task whose count it takes to zero."""

    NOTHING = "nothing"  # the caller judges it by its trigger rule
    QUEUE = "queue"  # its rule lets it run: queue it
    START = "start"  # ... and start it at once on the worker given (a report's claim)


#: A count-down returns the state and count it left, and (for a task it started)
#: what a claim returns.
_COUNTED_COLUMNS = (ti.c.state, ti.c.pending_upstream, *_CLAIMED_COLUMNS)


def _count_down_statement(at_zero: AtZero, *, of_run: Any = None) -> Any:
    """The count-down UPDATE; `of_run` (a scalar subquery) names the run and one
    task (b_task_id) instead of b_run_pk and b_task_ids, for the hop statement."""
    if of_run is None:
        which = [
            ti.c.run_pk == bindparam("b_run_pk"),
            ti.c.task_id.in_(bindparam("b_task_ids", expanding=True)),
        ]
    else:
        which = [ti.c.run_pk == of_run, ti.c.task_id == bindparam("b_task_id")]
    stmt = update(ti).where(*which, ti.c.map_index == -1)
    left = ti.c.pending_upstream - bindparam("b_finished")
    values: dict[str, Any] = {"pending_upstream": left}
    if at_zero is not AtZero.NOTHING:
        # SET expressions read the row as it was: the task moves here only if it
        # was still waiting and this count is its last.
        # (Written short: the hop statement repeats it per column, and psycopg
        # caches the parsing of statements up to 4 KiB only.)
        ready = and_(ti.c.state == _NONE, ti.c.pending_upstream <= bindparam("b_finished"))
        now = bindparam("b_now", type_=ti.c.queued_at.type)  # typed: SQLite stores times as text

        def when_ready(value: Any, column: Any) -> Any:
            return case((ready, value), else_=column)

        values.update(
            queued_at=when_ready(now, ti.c.queued_at), available_at=when_ready(now, ti.c.available_at)
        )
        if at_zero is AtZero.QUEUE:
            deadline = bindparam("b_deadline", type_=ti.c.start_deadline.type)
            values.update(
                state=when_ready(TaskState.QUEUED.value, ti.c.state),
                start_deadline=when_ready(deadline, ti.c.start_deadline),
            )
        else:  # what the claim sets (_claim_statement), the wait in the queue skipped
            until = bindparam("b_until", type_=ti.c.lease_expires_at.type)
            values.update(
                state=when_ready(TaskState.RUNNING.value, ti.c.state),
                attempt=when_ready(ti.c.attempt + 1, ti.c.attempt),
                try_number=when_ready(ti.c.try_number + 1, ti.c.try_number),
                worker_id=when_ready(bindparam("b_worker_id", type_=ti.c.worker_id.type), ti.c.worker_id),
                started_at=when_ready(now, ti.c.started_at),
                lease_expires_at=when_ready(until, ti.c.lease_expires_at),
            )
    return stmt.values(**values).returning(*_COUNTED_COLUMNS)


_COUNT_DOWN_UPSTREAM = {at_zero: _count_down_statement(at_zero) for at_zero in AtZero}


_LOCK_BY_TASK = (
    select(ti.c.id)
    .where(
        ti.c.run_pk == bindparam("b_run_pk"),
        ti.c.task_id.in_(bindparam("b_task_ids", expanding=True)),
        ti.c.map_index == -1,
    )
    .order_by(ti.c.id)
    .with_for_update(key_share=True)
)


@dataclass(frozen=True, slots=True)
class StartOn:
    """Start a task on this worker, with this lease, if a count-down readies it."""

    task_id: str
    worker_id: str
    lease_until: datetime


class Counted(NamedTuple):
    """A task counted down: its state and pending count after the count, its queue,
    whether the count queued it, and the claim if the count started it."""

    state: TaskState
    pending: int | None
    queue: str
    queued: bool
    started: Claimed | None


def count_down_upstream(
    conn: Connection,
    now: datetime,
    run_pk: int,
    finishes: Mapping[str, int],
    queue_at_zero: Mapping[str, datetime | None] | None = None,
    start: StartOn | None = None,
) -> dict[str, Counted]:
    """Count finished upstream tasks off these tasks, locking their rows until commit.

    `finishes` maps task_id -> upstream tasks of it that just finished.
    Tasks in `queue_at_zero` (task_id -> start deadline) that were waiting
    and reach zero are queued by the same statement; the caller knows their
    trigger rule lets them run then, and that nothing queues them before.
    `start` names one of them to start on a worker instead of queueing.
    Returns task_id -> what the count left (a pending count of None: unknown).
    """
    eager = queue_at_zero or {}
    if len(finishes) > 1 and is_postgres(conn):
        # A multi-row UPDATE locks rows in no set order, and the counts below
        # go one statement per count: lock every row first, in id order, as
        # every other transaction counting down these rows does.
        conn.execute(_LOCK_BY_TASK, {"b_run_pk": run_pk, "b_task_ids": sorted(finishes)})
    # One statement per (count, what happens at zero, start deadline): usually one in all.
    groups: dict[tuple[int, AtZero, datetime | None], list[str]] = {}
    for task_id, n in finishes.items():
        at_zero = AtZero.NOTHING
        if start is not None and task_id == start.task_id and task_id in eager:
            at_zero = AtZero.START
        elif task_id in eager:
            at_zero = AtZero.QUEUE
        groups.setdefault((n, at_zero, eager.get(task_id)), []).append(task_id)
    out: dict[str, Counted] = {}
    for (n, at_zero, deadline), task_ids in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1].value)):
        params: dict[str, Any] = {"b_run_pk": run_pk, "b_task_ids": sorted(task_ids), "b_finished": n}
        if at_zero is AtZero.QUEUE:
            params.update(b_now=now, b_deadline=deadline)
        elif at_zero is AtZero.START:
            assert start is not None
            params.update(b_now=now, b_worker_id=start.worker_id, b_until=start.lease_until)
        for r in conn.execute(_COUNT_DOWN_UPSTREAM[at_zero], params):
            out[r.task_id] = _counted(r._mapping, at_zero)
    return out


def _counted(r: Mapping[Any, Any], at_zero: AtZero) -> Counted:
    """A row of _COUNTED_COLUMNS as Counted."""
    state = TaskState(r["state"])
    pending = r["pending_upstream"]
    # Moved here: nothing queues or starts such a task before its count reaches zero.
    at_last = (pending or 0) <= 0
    queued = at_zero is AtZero.QUEUE and state is TaskState.QUEUED and at_last
    started = None
    if at_zero is AtZero.START and state is TaskState.RUNNING and at_last:
        started = Claimed(*(r[c.name] for c in _CLAIMED_COLUMNS))
    return Counted(state, pending, r["queue"], queued, started)


# -- the hop: one statement (Postgres) -------------------------------------------


@dataclass(frozen=True, slots=True)
class HopPlan:
    """What a success of one task does, when one statement can do all of it: count
    off its one downstream task (`task_id`, None for a leaf) and queue it at zero,
    or start it there (`start`); then count the task off its run."""

    task_id: str | None = None
    deadline: datetime | None = None  # of the downstream task, if queued
    start: StartOn | None = None


class Hopped(NamedTuple):
    """What the hop statement did: the downstream task counted (None for a leaf)
    and what the run count-down left (count, run state)."""

    counted: Counted | None
    run_left: int
    run_state: RunState


def _hop_statement(at_zero: AtZero | None) -> Any:
    """End one running attempt, record it, count its downstream task down (queueing
    or starting it at zero) and count it off its run, in one statement.

    Each step reads the one before through a subquery (the run through the ended
    row, the run count-down after the downstream count), which fixes the order
    in which rows are locked to the usual one: the attempt's row, its downstream
    task's, then the run's. An attempt not running (stale, replayed), or not of
    the run and task the caller named, ends nothing and so touches nothing.
    """
    # The caller named the attempt's run and task (from memory): the guard checks it.
    guarded = _END.where(ti.c.run_pk == bindparam("b_run_pk"), ti.c.task_id == bindparam("b_ended_task_id"))
    # Only what recording the attempt needs, and the run (the statement is kept short).
    recorded_from = (ti.c.id, ti.c.run_pk, ti.c.attempt, ti.c.try_number, ti.c.worker_id, ti.c.started_at)
    ended = guarded.returning(*recorded_from).cte("ended")
    of_run = select(ended.c.run_pk).scalar_subquery()
    parts: list[Any] = [_record(ended).cte("recorded")]
    run_after: list[Any] = []
    joined: Any = ended
    columns: list[Any] = []
    if at_zero is not None:
        counted = _count_down_statement(at_zero, of_run=of_run).cte("counted")
        parts.append(counted)
        # Evaluated before the run's row is read: the count-down takes its locks first.
        run_after.append(select(func.count()).select_from(counted).scalar_subquery() >= 0)
        joined = joined.outerjoin(counted, true())
        columns = list(counted.c)
    run = (
        update(dag_runs)
        .where(dag_runs.c.id == of_run, *run_after)
        .values(unfinished=dag_runs.c.unfinished - 1)
        .returning(dag_runs.c.unfinished.label("run_left"), dag_runs.c.state.label("run_state"))
        .cte("run")
    )
    joined = joined.join(run, true())
    return select(*columns, run.c.run_left, run.c.run_state).select_from(joined).add_cte(*parts, run)


_HOP = {at_zero: _hop_statement(at_zero) for at_zero in (None, AtZero.QUEUE, AtZero.START)}


def hop(
    conn: Connection, now: datetime, end: AttemptEnd, run_pk: int, task_id: str, plan: HopPlan
) -> Hopped | None:
    """End a running attempt of `task_id` in run `run_pk` as a success and do what
    `plan` says, in one statement (Postgres only). None when that attempt was not
    running, or is not of that run and task: nothing was written."""
    params = {**_end_params(now, end), "b_run_pk": run_pk, "b_ended_task_id": task_id}
    at_zero = None
    if plan.task_id is not None:
        params.update(b_task_id=plan.task_id, b_finished=1, b_now=now)
        if plan.start is not None:
            at_zero = AtZero.START
            params.update(b_worker_id=plan.start.worker_id, b_until=plan.start.lease_until)
        else:
            at_zero = AtZero.QUEUE
            params.update(b_deadline=plan.deadline)
    row = conn.execute(_HOP[at_zero], params).first()
    if row is None:
        return None
    r = row._mapping
    counted = _counted(r, at_zero) if at_zero is not None and r["state"] is not None else None
    return Hopped(counted, r["run_left"], RunState(r["run_state"]))


def move(
    conn: Connection,
    now: datetime,
    run_pk: int,
    task_ids: Iterable[str],
    to: TaskState,
    deadlines: Mapping[str, datetime | None] | None = None,
) -> list[tuple[str, str]]:
    """Move waiting (`none`) tasks of a run to queued, upstream_failed or skipped.

    `deadlines` gives queued tasks their start deadline. One statement per
    distinct deadline (usually one: none). Returns (task_id, queue) moved.
    """
    groups: dict[datetime | None, list[str]] = {}
    for task_id in set(task_ids):
        groups.setdefault((deadlines or {}).get(task_id), []).append(task_id)
    moved: list[tuple[str, str]] = []
    for deadline, wanted in groups.items():
        values: dict[str, Any] = {"state": to}
        if to is TaskState.QUEUED:
            values.update(queued_at=now, available_at=now, start_deadline=deadline)
        else:
            values.update(ended_at=now)
        rows = conn.execute(
            update(ti)
            .where(ti.c.run_pk == run_pk, ti.c.task_id.in_(wanted), ti.c.state == TaskState.NONE)
            .values(**values)
            .returning(ti.c.task_id, ti.c.queue)
        )
        moved.extend((r.task_id, r.queue) for r in rows)
    return moved


# -- results -------------------------------------------------------------------


# Built once (hot: every claim of a task that takes upstream results reads them).
_RESULTS = select(ti.c.run_pk, ti.c.task_id, ti.c.result).where(
    tuple_(ti.c.run_pk, ti.c.task_id).in_(bindparam("keys", expanding=True)), ti.c.map_index == -1
)


def results(conn: Connection, keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], Any]:
    """(run_pk, task_id) -> decoded result of unmapped tasks (None when there is none)."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(_RESULTS, {"keys": wanted})
    return {(r.run_pk, r.task_id): None if r.result is None else json.loads(r.result) for r in rows}


# -- leases --------------------------------------------------------------------

_RENEW = (
    update(ti)
    .where(
        ti.c.id == bindparam("b_id"), ti.c.attempt == bindparam("b_attempt"), ti.c.state == TaskState.RUNNING
    )
    .values(lease_expires_at=bindparam("b_until"))
)


_ATTEMPTS = select(ti.c.id, ti.c.attempt, ti.c.state).where(ti.c.id.in_(bindparam("ids", expanding=True)))


@dataclass(frozen=True, slots=True)
class Renewal:
    expires_at: datetime | None  # None: not renewed, the attempt is not current
    state: TaskState | None  # the task's state, when the attempt is still its latest


def renew_leases(
    conn: Connection, now: datetime, refs: Sequence[tuple[int, int]], lease: timedelta
) -> dict[tuple[int, int], Renewal]:
    """Extend the leases of current attempts, and say what became of the others."""
    if not refs:
        return {}
    until = now + lease
    # In id order, the order completions and sweeps lock these rows in.
    conn.execute(_RENEW, [{"b_id": i, "b_attempt": a, "b_until": until} for i, a in sorted(refs)])
    rows = conn.execute(_ATTEMPTS, {"ids": [i for i, _ in refs]}).all()
    latest = {r.id: (r.attempt, TaskState(r.state)) for r in rows}
    out = {}
    for i, a in refs:
        attempt, state = latest.get(i, (None, None))
        live = attempt == a and state is TaskState.RUNNING
        out[(i, a)] = Renewal(until if live else None, state if attempt == a else None)
    return out


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
                start_deadline=None,
            )
            .returning(ti.c.queue)
        ).first()
        if row is not None:
            queued[row.queue] += 1
    return queued


# -- expiry sweeps --------------------------------------------------------------------


def expired_leases(conn: Connection, now: datetime, limit: int) -> list[int]:
    """Running task instances whose lease ran out (oldest first)."""
    rows = conn.execute(
        select(ti.c.id)
        .where(ti.c.state == TaskState.RUNNING, ti.c.lease_expires_at < now)
        .order_by(ti.c.lease_expires_at)
        .limit(limit)
    )
    return [r.id for r in rows]


def past_start_deadline(conn: Connection, now: datetime, limit: int) -> list[int]:
    """Claimable task instances that waited longer than their schedule_to_start_timeout."""
    rows = conn.execute(
        select(ti.c.id)
        .where(ti.c.start_deadline < now, ti.c.state.in_(CLAIMABLE))
        .order_by(ti.c.start_deadline)
        .limit(limit)
    )
    return [r.id for r in rows]


_FAIL_WAITING = (
    update(ti)
    .where(ti.c.id == bindparam("b_id"), ti.c.state.in_(CLAIMABLE))
    .values(
        state=TaskState.FAILED, error=bindparam("b_error"), ended_at=bindparam("b_now"), start_deadline=None
    )
)


def fail_waiting(conn: Connection, now: datetime, items: Sequence[tuple[int, TaskError]]) -> None:
    """Fail claimable task instances that never started (the caller locked their runs)."""
    if items:
        conn.execute(_FAIL_WAITING, [{"b_id": i, "b_error": _error_json(e), "b_now": now} for i, e in items])


def remove_unfinished(conn: Connection, now: datetime, run_pk: int, error: TaskError) -> list[Current]:
    """Mark every unfinished task instance of a run `removed` (cancellation).

    Returns the attempts that were running; their ends are recorded here too.
    """
    running = [
        r.id
        for r in conn.execute(select(ti.c.id).where(ti.c.run_pk == run_pk, ti.c.state == TaskState.RUNNING))
    ]
    was_running = current(conn, running)
    conn.execute(
        update(ti)
        .where(ti.c.run_pk == run_pk, ti.c.state.in_([s.value for s in UNFINISHED_TASK_STATES]))
        .values(
            state=TaskState.REMOVED,
            ended_at=now,
            lease_expires_at=None,
            start_deadline=None,
            error=_error_json(error),
        )
    )
    if was_running:
        conn.execute(
            insert(task_attempts),
            [
                {
                    "ti_id": c.id,
                    "attempt": c.attempt,
                    "try_number": c.try_number,
                    "worker_id": c.worker_id,
                    "started_at": c.started_at,
                    "ended_at": now,
                    "outcome": TaskState.REMOVED.value,
                    "error": _error_json(error),
                }
                for c in was_running.values()
            ],
        )
    return list(was_running.values())
