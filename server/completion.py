"""Completion: apply workers' reports, and everything that follows, in ONE transaction.

For a batch of outcomes: lock the runs involved, check each report against
the current attempt (fencing), end the attempts (success, skipped, retry or
failed), record them, store their last log output, promote the downstream
tasks that became ready and finish runs that are done. Either all of that
commits or none of it does, so no failure can leave a task finished with its
downstream never queued.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Connection

from weir._rules import retry_delay
from weir.models import AckStatus, Outcome, OutcomeAck, TaskError, TaskOutcome
from weir.server import runs
from weir.server.catalog import Catalog
from weir.server.promotion import promote
from weir.server.store import dag_runs, task_logs
from weir.server.store import task_instances as tis
from weir.spec import TaskSpec
from weir.states import RunState, TaskState

# What a report of each outcome leaves recorded, for recognising replays.
_RECORDED_AS = {
    Outcome.SUCCESS: {TaskState.SUCCESS},
    Outcome.SKIPPED: {TaskState.SKIPPED},
    Outcome.FAILED: {TaskState.FAILED, TaskState.UP_FOR_RETRY},
}


@dataclass
class Completion:
    acks: list[OutcomeAck] = field(default_factory=list)
    #: Newly queued tasks per queue, to wake pollers after commit.
    queued: Counter[str] = field(default_factory=Counter)
    #: (queue, available_at) of tasks waiting to retry.
    retries: list[tuple[str, datetime]] = field(default_factory=list)
    #: (run_id, state) of runs this completion finished.
    finished_runs: list[tuple[str, RunState]] = field(default_factory=list)


def complete(
    conn: Connection,
    now: datetime,
    catalog: Catalog,
    outcomes: Sequence[TaskOutcome],
    *,
    max_result_bytes: int,
) -> Completion:
    done = Completion()
    ids = [o.task_instance_id for o in outcomes]
    locked = dag_runs.lock_for_tasks(conn, ids)
    current = tis.current(conn, ids)
    replay_keys = [
        (o.task_instance_id, o.attempt)
        for o in outcomes
        if (c := current.get(o.task_instance_id)) is not None
        and c.attempt == o.attempt
        and c.state is not TaskState.RUNNING
    ]
    recorded = tis.attempt_outcomes(conn, replay_keys)

    ends: list[tis.AttemptEnd] = []
    logs: list[tuple[int, int, bytes]] = []
    seen: set[tuple[int, int]] = set()
    for o in outcomes:
        key = (o.task_instance_id, o.attempt)
        c = current.get(o.task_instance_id)
        if key in seen:
            done.acks.append(OutcomeAck(*key, AckStatus.DUPLICATE, "reported twice in one call"))
            continue
        seen.add(key)
        if c is None:
            done.acks.append(OutcomeAck(*key, AckStatus.STALE, "no such task instance"))
        elif c.attempt != o.attempt:
            done.acks.append(
                OutcomeAck(
                    *key, AckStatus.STALE, f"attempt {o.attempt} is not current (current: {c.attempt})"
                )
            )
        elif c.state is not TaskState.RUNNING:
            was = recorded.get(key)
            if was is not None and TaskState(was) in _RECORDED_AS[o.outcome]:
                done.acks.append(OutcomeAck(*key, AckStatus.DUPLICATE, f"already recorded as {was}"))
            else:
                done.acks.append(
                    OutcomeAck(*key, AckStatus.STALE, f"attempt {o.attempt} already ended ({c.state})")
                )
        else:
            run = locked[c.run_pk]
            task = catalog.dag(conn, run.version_id).tasks[c.task_id]
            end = _end(now, o, c, task, max_result_bytes)
            ends.append(end)
            if end.state is TaskState.UP_FOR_RETRY and end.available_at is not None:
                done.retries.append((c.queue, end.available_at))
            if o.log_tail:
                logs.append((o.task_instance_id, o.attempt, o.log_tail))
            done.acks.append(OutcomeAck(*key, AckStatus.ACCEPTED))

    task_logs.append(conn, now, logs)
    tis.end_attempts(conn, now, ends, current)

    finished: dict[int, list[str]] = defaultdict(list)
    for e in ends:
        if e.state is not TaskState.UP_FOR_RETRY:
            finished[current[e.id].run_pk].append(current[e.id].task_id)
    for run_pk, task_ids in sorted(finished.items()):
        run = locked[run_pk]
        if run.state is not RunState.RUNNING:
            continue
        promotion = promote(conn, now, catalog.dag(conn, run.version_id), run_pk, task_ids)
        done.queued += promotion.queued
        if promotion.finished is not None:
            done.finished_runs.append((run.run_id, promotion.finished))
            done.queued += runs.after_run_finished(conn, now, catalog, run.dag_id)
    return done


def _end(
    now: datetime, o: TaskOutcome, c: tis.Current, task: TaskSpec, max_result_bytes: int
) -> tis.AttemptEnd:
    """How a reported attempt ends: success, skipped, up_for_retry while tries remain, else failed."""
    if o.outcome is Outcome.SUCCESS:
        problem = _check_result(o.result_json, max_result_bytes)
        if problem is None:
            text = o.result_json.decode() if o.result_json else "null"
            return tis.AttemptEnd(o.task_instance_id, o.attempt, TaskState.SUCCESS, result=text)
        error = problem
    elif o.outcome is Outcome.SKIPPED:
        return tis.AttemptEnd(o.task_instance_id, o.attempt, TaskState.SKIPPED)
    else:
        error = o.error or TaskError(type="Failed", message="the worker reported a failure without details")
    if c.try_number < c.max_tries:
        delay = retry_delay(
            task.retry_delay,
            c.try_number,
            exponential=task.retry_exponential_backoff,
            max_delay=task.max_retry_delay,
        )
        return tis.AttemptEnd(
            o.task_instance_id, o.attempt, TaskState.UP_FOR_RETRY, error=error, available_at=now + delay
        )
    return tis.AttemptEnd(o.task_instance_id, o.attempt, TaskState.FAILED, error=error)


def _check_result(data: bytes, limit: int) -> TaskError | None:
    if len(data) > limit:
        return TaskError(
            type="ResultTooLarge",
            message=f"the result is {len(data):,} bytes of JSON; the limit is {limit:,} "
            "(WEIR_MAX_RESULT_BYTES): store large data elsewhere and return a reference",
        )
    if data:
        try:
            json.loads(data)
        except ValueError as exc:
            return TaskError(type="InvalidResult", message=f"the result is not valid JSON: {exc}")
    return None
