"""How attempts end, and everything that follows, in ONE transaction.

Four ways in: a worker reports outcomes (`complete`), a lease runs out
(`expire_leases`), a queued task waits past its schedule_to_start_timeout
(`time_out_waiting`), or a run is cancelled (`cancel_run`). Each locks the
task instances it ends (ascending id), checks every change against their
current state and attempt (fencing), records the ended attempts, promotes
the downstream tasks that became ready (locking those rows) and, last,
counts the finished tasks off their runs, ending a run that reaches zero.
Either all of it commits or none of it does, so no failure can leave a task
finished with its downstream never queued. (A report of a single success
skips the read: the UPDATE that ends the attempt is guarded by the attempt and
the running state, which is the same fence.) A worker's report may also claim
its next tasks in the same transaction (`report`), after the outcomes are
applied, so a downstream task they queued can be among them, or be handed
the one its outcome readied. No step locks a whole run for the transaction:
completions of one run's tasks proceed side by side and meet only on the
rows they share.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from weir._rules import retry_delay
from weir.errors import FailedPrecondition, NotFound
from weir.models import AckStatus, Assignment, Outcome, OutcomeAck, TaskError, TaskOutcome
from weir.server import claims, runs
from weir.server.catalog import Catalog, CompiledDag, RunInfo
from weir.server.promotion import (
    HandOff,
    Promotion,
    chain_link,
    count_down_run,
    end_run_if_done,
    hop_plan,
    promote,
    promoted_by_hop,
    settled_by_hop,
)
from weir.server.store import dag_runs, task_logs
from weir.server.store import task_instances as tis
from weir.server.store._dialect import is_postgres
from weir.spec import TaskSpec
from weir.states import RunState, TaskState

log = logging.getLogger("weir.server")

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
    #: (run_id, state) of runs this transaction finished.
    finished_runs: list[tuple[str, RunState]] = field(default_factory=list)
    #: How many attempts or waiting tasks it ended (sweeps report this).
    ended: int = 0
    #: Workers whose leases ran out here: they may be frozen rather than dead.
    lapsed_workers: set[str] = field(default_factory=set)
    #: Tasks started on the worker the completion was handed (claimed rows).
    started: list[tis.Claimed] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Report:
    """One worker's call: outcomes, and optionally a claim of its next tasks."""

    outcomes: Sequence[TaskOutcome]
    claim: claims.ClaimRequest | None = None
    #: The claim's queues were known empty when the report arrived: claim only
    #: if these outcomes queue something there.
    only_if_queued: bool = False


@dataclass
class ReportsApplied:
    #: What applying the outcomes did.
    applied: Completion = field(default_factory=Completion)
    #: Per report, in order: the tasks its claim took (empty without a claim).
    claimed: list[list[Assignment]] = field(default_factory=list)
    #: Per report: its claim got fewer tasks than it asked for (its queues held no more).
    short: list[bool] = field(default_factory=list)


# -- worker reports -----------------------------------------------------------------


def complete(
    conn: Connection,
    now: datetime,
    catalog: Catalog,
    outcomes: Sequence[TaskOutcome],
    *,
    max_result_bytes: int,
    hand_off: HandOff | None = None,
) -> Completion:
    """Apply outcomes; with `hand_off` (one outcome only), the downstream task it
    makes ready may start on that worker at once (see promotion.promote)."""
    if len(outcomes) == 1 and (
        one := _complete_one(conn, now, catalog, outcomes[0], max_result_bytes, hand_off)
    ):
        return one
    done = Completion()
    ids = [o.task_instance_id for o in outcomes]
    current = tis.current(conn, ids, lock=True)
    runs_of = catalog.runs(conn, {c.run_pk for c in current.values()})
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
            task = catalog.dag(conn, runs_of[c.run_pk].version_id).tasks[c.task_id]
            ends.append(_end(now, o, c, task, max_result_bytes))
            if o.log_tail:
                logs.append((o.task_instance_id, o.attempt, o.log_tail))
            done.acks.append(OutcomeAck(*key, AckStatus.ACCEPTED))

    task_logs.append(conn, now, logs)
    _apply(conn, now, catalog, runs_of, current, ends, done)
    return done


def _complete_one(
    conn: Connection,
    now: datetime,
    catalog: Catalog,
    o: TaskOutcome,
    max_result_bytes: int,
    hand_off: HandOff | None,
) -> Completion | None:
    """A report of one success (a chain's hop): its attempt is ended and recorded
    without being read first, the guarded UPDATE standing in for the read. None
    when it needs the general path: not a plain success, or not running."""
    end = _plain_success(o, max_result_bytes)
    if end is None:
        return None
    hop = _plan_hop(conn, now, catalog, end.id, hand_off)
    done = _hop(conn, now, catalog, end, hop) if hop else _end_one(conn, now, catalog, end, hand_off)
    if done is None:
        return None  # stale or a replay: the general path tells which
    done.acks.append(OutcomeAck(o.task_instance_id, o.attempt, AckStatus.ACCEPTED))
    if o.log_tail:
        task_logs.append(conn, now, [(o.task_instance_id, o.attempt, o.log_tail)])
    return done


def _end_one(
    conn: Connection, now: datetime, catalog: Catalog, end: tis.AttemptEnd, hand_off: HandOff | None
) -> Completion | None:
    was = tis.end_running(conn, now, end)
    if was is None:
        return None
    done = Completion()
    runs_of = catalog.runs(conn, [was.run_pk])
    _after_ends(conn, now, catalog, runs_of, {was.id: was}, [end], done, hand_off)
    return done


@dataclass(frozen=True, slots=True)
class _Hop:
    run: RunInfo
    dag: CompiledDag
    task_id: str
    plan: tis.HopPlan


def _plan_hop(
    conn: Connection, now: datetime, catalog: Catalog, ti_id: int, hand_off: HandOff | None
) -> _Hop | None:
    """Whether a success of this task instance can go in one statement (tis.hop):
    on Postgres, for an instance this server handed out (its run and task are
    known without a read), when hop_plan says one count-down does it all."""
    known = catalog.task_of(ti_id) if is_postgres(conn) else None
    if known is None:
        return None
    run_pk, task_id = known
    run = catalog.runs(conn, [run_pk]).get(run_pk)
    if run is None:
        return None
    dag = catalog.dag(conn, run.version_id)
    plan = hop_plan(now, dag, task_id, hand_off)
    return None if plan is None else _Hop(run, dag, task_id, plan)


def _hop(
    conn: Connection, now: datetime, catalog: Catalog, end: tis.AttemptEnd, hop: _Hop
) -> Completion | None:
    """End the attempt, promote and count the run down in one statement, then end
    the run if that was its last task."""
    hopped = tis.hop(conn, now, end, hop.run.pk, hop.task_id, hop.plan)
    if hopped is None:
        return None
    return _after_hop(conn, now, catalog, hop, hopped)


def _counted(hop: _Hop, hopped: tis.Hopped) -> dict[str, tis.Counted]:
    return {hop.plan.task_id: hopped.counted} if hop.plan.task_id and hopped.counted else {}


def _after_hop(
    conn: Connection, now: datetime, catalog: Catalog, hop: _Hop, hopped: tis.Hopped
) -> Completion:
    """What follows the hop statement: nothing to write unless its count-down left a
    task to judge (rows from before migration 0004) or it counted the run's last task."""
    run, dag = hop.run, hop.dag
    done = Completion(ended=1)
    promotion = promoted_by_hop(conn, now, dag, run.pk, hop.task_id, _counted(hop, hopped))
    done.queued += promotion.queued
    done.started += promotion.started
    if promotion.finished:
        # Judging finished tasks too (only for rows without an upstream count,
        # from before migration 0004): count them off the run as well.
        ended = count_down_run(conn, now, dag, run.pk, promotion.finished, known=promotion.final)
    else:
        left, state = hopped.run_left, hopped.run_state
        ended = end_run_if_done(conn, now, dag, run.pk, left, state, known=promotion.final)
    if ended is not None:
        _runs_ended(conn, now, catalog, [(run.run_id, run.dag_id, ended)], done)
    return done


def report(
    conn: Connection,
    now: datetime,
    catalog: Catalog,
    reports: Sequence[Report],
    *,
    max_result_bytes: int,
    lease: timedelta,
    committed: HopCommitted | None = None,
) -> ReportsApplied:
    """Apply the outcomes of several reports, then make each report's claim.

    With `committed`, the one report's hop statement already committed by
    itself (`report_alone`): this transaction does the rest of it.

    Claims come after every outcome is applied, so they can take the
    downstream tasks those outcomes queued. Acks are one per outcome, in order.

    A lone report of one outcome whose claim's queues were known empty is
    handed the downstream task its outcome makes ready (a chain's next task):
    the task starts on that worker without passing through the queue, where
    nothing else was waiting to go first. What else the claim asks for is
    claimed as usual.
    """
    done = ReportsApplied()
    outcomes = [o for r in reports for o in r.outcomes]
    hand_off = _hand_off(reports, now, lease)
    if committed is not None:
        [o] = outcomes
        done.applied = _after_hop(conn, now, catalog, committed.hop, committed.hopped)
        done.applied.acks.append(OutcomeAck(o.task_instance_id, o.attempt, AckStatus.ACCEPTED))
    elif outcomes:
        done.applied = complete(
            conn, now, catalog, outcomes, max_result_bytes=max_result_bytes, hand_off=hand_off
        )
    for r in reports:
        if r.claim is None:
            done.claimed.append([])
            done.short.append(False)
            continue
        handed = claims.assign(conn, catalog, done.applied.started).assignments if hand_off else []
        want = r.claim.slots - len(handed)
        if want <= 0 or (r.only_if_queued and not any(done.applied.queued.get(q) for q in r.claim.queues)):
            done.claimed.append(handed)
            # Handed what its outcome readied, in queues known empty: it took all there was.
            done.short.append(bool(handed) and want > 0)
            continue
        taken = claims.take(conn, now, catalog, replace(r.claim, slots=want), lease)
        done.claimed.append(handed + taken.assignments)
        short = len(taken.assignments) < want
        done.short.append(short)
        if short:
            # Everything claimable in these queues is taken (what the outcomes
            # queued included): no poll needs waking for them.
            for queue in r.claim.queues:
                done.applied.queued.pop(queue, None)
        else:
            # Polls are woken for what is left: a poll woken earlier for a task
            # this claim took finds one of the newly queued instead.
            done.applied.queued -= taken.per_queue
    return done


def _hand_off(reports: Sequence[Report], now: datetime, lease: timedelta) -> HandOff | None:
    """A lone report of one outcome, claiming from queues known empty, is handed the
    downstream task its outcome makes ready (see `report`)."""
    if len(reports) != 1 or len(reports[0].outcomes) != 1:
        return None
    claim = reports[0].claim
    if claim is None or not reports[0].only_if_queued:
        return None
    return HandOff(claim.worker_id, claim.queues, now + lease)


def may_report_alone(catalog: Catalog, r: Report) -> bool:
    """Whether `report_alone` is worth a try, judged from memory: one plain success
    with no log tail, of a task this server handed out that links a chain (one
    downstream task, which the success runs). A leaf's report is left to one
    transaction: it may end its run (every report of a one-task run does), which
    alone would take a second."""
    o = _lone_success(r)
    known = None if o is None else catalog.known_task(o.task_instance_id)
    return known is not None and chain_link(*known)


@dataclass(frozen=True, slots=True)
class HopCommitted:
    """A lone report's hop statement, committed by itself, and what it did."""

    hop: _Hop
    hopped: tis.Hopped


def report_alone(
    conn: Connection,
    now: datetime,
    catalog: Catalog,
    r: Report,
    *,
    max_result_bytes: int,
    lease: timedelta,
) -> ReportsApplied | HopCommitted | None:
    """A lone report of one success, whose hop is one statement (see `_plan_hop`),
    run on a connection in autocommit (Postgres): the statement commits by itself,
    with no BEGIN and no COMMIT round trip.

    None, with nothing written, when the report needs a transaction: not one plain
    success, a log tail to store with it, not a hop, or an attempt no longer
    running (a stale or repeated report, which the general path tells apart).
    HopCommitted when the statement left writes to do: it counted the run's last
    task (the run ends) or left a downstream task to judge (rows from before
    migration 0004). The caller does them in a transaction, `report(...,
    committed=...)`; should the server die first, the expiry sweep ends the run
    (`finish_runs_at_zero`). Otherwise the report is done here: what follows the
    statement is reads, and the report's claim if it still makes one, itself one
    statement.
    """
    o = _lone_success(r)
    end = None if o is None else _plain_success(o, max_result_bytes)
    if end is None:
        return None
    hop = _plan_hop(conn, now, catalog, end.id, _hand_off([r], now, lease))
    if hop is None:
        return None
    hopped = tis.hop(conn, now, end, hop.run.pk, hop.task_id, hop.plan)
    if hopped is None:
        return None
    committed = HopCommitted(hop, hopped)
    run_ends = hopped.run_left <= 0 and hopped.run_state is RunState.RUNNING
    if run_ends or not settled_by_hop(hop.dag, hop.task_id, _counted(hop, hopped)):
        return committed
    return report(
        conn, now, catalog, [r], max_result_bytes=max_result_bytes, lease=lease, committed=committed
    )


def _lone_success(r: Report) -> TaskOutcome | None:
    """The report's one outcome, if it is a success with no log tail to store."""
    if len(r.outcomes) != 1:
        return None
    o = r.outcomes[0]
    return o if o.outcome is Outcome.SUCCESS and not o.log_tail else None


def _plain_success(o: TaskOutcome, max_result_bytes: int) -> tis.AttemptEnd | None:
    """The end of a successful attempt whose result is valid; None otherwise."""
    if o.outcome is not Outcome.SUCCESS or _check_result(o.result_json, max_result_bytes) is not None:
        return None
    return _success(o)


def _success(o: TaskOutcome) -> tis.AttemptEnd:
    text = o.result_json.decode() if o.result_json else "null"
    return tis.AttemptEnd(o.task_instance_id, o.attempt, TaskState.SUCCESS, result=text)


def _end(
    now: datetime, o: TaskOutcome, c: tis.Current, task: TaskSpec, max_result_bytes: int
) -> tis.AttemptEnd:
    if o.outcome is Outcome.SUCCESS:
        problem = _check_result(o.result_json, max_result_bytes)
        return _success(o) if problem is None else failure(now, c, task, problem)
    if o.outcome is Outcome.SKIPPED:
        return tis.AttemptEnd(o.task_instance_id, o.attempt, TaskState.SKIPPED)
    error = o.error or TaskError(type="Failed", message="the worker reported a failure without details")
    return failure(now, c, task, error)


def failure(now: datetime, c: tis.Current, task: TaskSpec, error: TaskError) -> tis.AttemptEnd:
    """A failed attempt: up_for_retry after its delay while tries remain, else failed."""
    if c.try_number < c.max_tries:
        delay = retry_delay(
            task.retry_delay,
            c.try_number,
            exponential=task.retry_exponential_backoff,
            max_delay=task.max_retry_delay,
        )
        at = now + delay
        return tis.AttemptEnd(
            c.id,
            c.attempt,
            TaskState.UP_FOR_RETRY,
            error=error,
            available_at=at,
            start_deadline=tis.start_deadline(at, task),
        )
    return tis.AttemptEnd(c.id, c.attempt, TaskState.FAILED, error=error)


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


# -- shared tail: record ends, promote, finish runs ------------------------------------


def _apply(
    conn: Connection,
    now: datetime,
    catalog: Catalog,
    runs_of: Mapping[int, RunInfo],
    current: dict[int, tis.Current],
    ends: Sequence[tis.AttemptEnd],
    done: Completion,
) -> None:
    tis.end_attempts(conn, now, ends, current)
    _after_ends(conn, now, catalog, runs_of, current, ends, done)


def _after_ends(
    conn: Connection,
    now: datetime,
    catalog: Catalog,
    runs_of: Mapping[int, RunInfo],
    current: Mapping[int, tis.Current],
    ends: Sequence[tis.AttemptEnd],
    done: Completion,
    hand_off: HandOff | None = None,
) -> None:
    """What follows attempts ending: retries to wake for, downstream tasks, runs."""
    done.ended += len(ends)
    finished: dict[int, dict[str, TaskState]] = defaultdict(dict)
    for e in ends:
        c = current[e.id]
        if e.state is TaskState.UP_FOR_RETRY and e.available_at is not None:
            done.retries.append((c.queue, e.available_at))
        else:
            finished[c.run_pk][c.task_id] = e.state
    _promote(conn, now, catalog, runs_of, finished, done, hand_off)


def _promote(
    conn: Connection,
    now: datetime,
    catalog: Catalog,
    runs_of: Mapping[int, RunInfo],
    finished: Mapping[int, Mapping[str, TaskState]],
    done: Completion,
    hand_off: HandOff | None = None,
) -> None:
    """Promote downstream tasks of each run, then count the finishes off the runs.

    Runs are counted down in ascending id, after every promotion, so that
    their row locks are taken last and in one order.
    """
    promotions: dict[int, Promotion] = {}
    for run_pk, changed in sorted(finished.items()):
        dag = catalog.dag(conn, runs_of[run_pk].version_id)
        promotion = promotions[run_pk] = promote(conn, now, dag, run_pk, changed, hand_off)
        hand_off = None  # one task at most
        done.queued += promotion.queued
        done.started += promotion.started
    ended_runs: list[tuple[str, str, RunState]] = []
    for run_pk, promotion in sorted(promotions.items()):
        run = runs_of[run_pk]
        count = len(finished[run_pk]) + promotion.finished
        dag = catalog.dag(conn, run.version_id)
        ended = count_down_run(conn, now, dag, run_pk, count, known=promotion.final)
        if ended is not None:
            ended_runs.append((run.run_id, run.dag_id, ended))
    _runs_ended(conn, now, catalog, ended_runs, done)


def _runs_ended(
    conn: Connection,
    now: datetime,
    catalog: Catalog,
    ended: Sequence[tuple[str, str, RunState]],
    done: Completion,
) -> None:
    """Note the runs (run_id, dag_id, state) this transaction ended, and start
    queued runs in the slots they freed, once per DAG however many of its runs ended."""
    done.finished_runs += [(run_id, state) for run_id, _, state in ended]
    for dag_id in sorted({dag_id for _, dag_id, _ in ended}):
        done.queued += runs.after_run_finished(conn, now, catalog, dag_id)


# -- sweeps ---------------------------------------------------------------------------


def _lock_candidates(
    conn: Connection, catalog: Catalog, candidates: list[int]
) -> tuple[dict[int, RunInfo], dict[int, tis.Current]]:
    """Lock the candidates and read them again, with their runs' facts.

    A sweep's candidates were read unlocked; what counts is their state once
    locked (a heartbeat or report may have got there first). A heartbeat
    renewing one of them waits for the lock, then finds it ended.
    """
    current = tis.current(conn, candidates, lock=True)
    return catalog.runs(conn, {c.run_pk for c in current.values()}), current


def expire_leases(conn: Connection, now: datetime, catalog: Catalog, *, limit: int = 500) -> Completion:
    """End attempts whose lease ran out: the worker is presumed dead or cut off.

    The attempt fails and counts as a try, so a task that kills its worker
    every time stops after retries + 1 attempts.
    """
    done = Completion()
    candidates = tis.expired_leases(conn, now, limit)
    if not candidates:
        return done
    runs_of, current = _lock_candidates(conn, catalog, candidates)
    ends = []
    for c in current.values():
        if c.state is not TaskState.RUNNING or c.lease_expires_at is None or c.lease_expires_at >= now:
            continue
        task = catalog.dag(conn, runs_of[c.run_pk].version_id).tasks[c.task_id]
        error = TaskError(
            "LeaseExpired",
            f"worker {c.worker_id} stopped renewing its lease "
            f"(expired {c.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC); the worker died, hung or lost the server",
        )
        ends.append(failure(now, c, task, error))
        if c.worker_id:
            done.lapsed_workers.add(c.worker_id)
    _apply(conn, now, catalog, runs_of, current, ends, done)
    return done


def time_out_waiting(conn: Connection, now: datetime, catalog: Catalog, *, limit: int = 500) -> Completion:
    """Fail claimable tasks that waited past their schedule_to_start_timeout (no retry)."""
    done = Completion()
    candidates = tis.past_start_deadline(conn, now, limit)
    if not candidates:
        return done
    runs_of, current = _lock_candidates(conn, catalog, candidates)
    failed: list[tuple[int, TaskError]] = []
    finished: dict[int, dict[str, TaskState]] = defaultdict(dict)
    for c in current.values():
        if c.state not in (TaskState.QUEUED, TaskState.UP_FOR_RETRY):
            continue
        if c.start_deadline is None or c.start_deadline >= now:
            continue
        task = catalog.dag(conn, runs_of[c.run_pk].version_id).tasks[c.task_id]
        failed.append(
            (
                c.id,
                TaskError(
                    "ScheduleToStartTimeout",
                    f"no worker started the task within its schedule_to_start_timeout "
                    f"({task.schedule_to_start_timeout}) on queue {c.queue!r}",
                ),
            )
        )
        finished[c.run_pk][c.task_id] = TaskState.FAILED
    tis.fail_waiting(conn, now, failed)
    done.ended = len(failed)
    _promote(conn, now, catalog, runs_of, finished, done)
    return done


def sweep(conn: Connection, now: datetime, catalog: Catalog, *, limit: int = 500) -> Completion:
    """The expiry sweeps in one transaction: lapsed leases, start timeouts, then
    runs left with nothing unfinished.

    One pass is one transaction (three reads when there is nothing to end), so
    an idle server costs the database a transaction per sweep interval.
    """
    done = expire_leases(conn, now, catalog, limit=limit)
    for more in (
        time_out_waiting(conn, now, catalog, limit=limit),
        finish_runs_at_zero(conn, now, catalog, limit=limit),
    ):
        done.queued += more.queued
        done.retries += more.retries
        done.finished_runs += more.finished_runs
        done.ended += more.ended
        done.lapsed_workers |= more.lapsed_workers
    return done


def finish_runs_at_zero(conn: Connection, now: datetime, catalog: Catalog, *, limit: int = 500) -> Completion:
    """End running runs with no unfinished task left: a run's last hop committed by
    itself (`report_alone`) and the server died before the transaction that ends
    the run. Runs are ended as that transaction would have ended them."""
    done = Completion()
    pks = dag_runs.at_zero(conn, limit)
    if not pks:
        return done
    runs_of = catalog.runs(conn, pks)
    ended: list[tuple[str, str, RunState]] = []
    for pk in sorted(pks):
        run = runs_of[pk]
        # Counting nothing off locks the run and reads it again.
        ending = count_down_run(conn, now, catalog.dag(conn, run.version_id), pk, 0)
        if ending is not None:
            log.info(
                "ended run %s (%s) in the sweep: its last task's hop committed without the run's end",
                run.run_id,
                ending.value,
            )
            ended.append((run.run_id, run.dag_id, ending))
    _runs_ended(conn, now, catalog, ended, done)
    return done


# -- cancellation ----------------------------------------------------------------------


def cancel_run(conn: Connection, now: datetime, catalog: Catalog, run_id: str) -> Completion:
    """End a run now: waiting tasks are removed, running attempts are told to stop.

    The run ends `failed`. Workers learn of the cancellation from their next
    heartbeat (STOP_CANCELLED), kill the task and report nothing.
    """
    done = Completion()
    row = dag_runs.get(conn, run_id)
    if row is None:
        raise NotFound(f"run {run_id!r} does not exist")
    run = dag_runs.lock(conn, [row.pk])[row.pk]
    if run.state.finished:
        raise FailedPrecondition(f"run {run_id!r} already ended ({run.state.value})")
    stopped = tis.remove_unfinished(conn, now, run.pk, TaskError("Cancelled", f"run {run_id} was cancelled"))
    done.ended = len(stopped)
    dag_runs.finish(conn, now, run.pk, RunState.FAILED, from_states=(RunState.QUEUED, RunState.RUNNING))
    _runs_ended(conn, now, catalog, [(run.run_id, run.dag_id, RunState.FAILED)], done)
    return done
