"""Promotion: when tasks finish, decide what their downstream tasks do next.

Runs inside the transaction that recorded the finish, so a hop (upstream
done -> downstream queued) costs no scheduler tick and no second
transaction. It takes no run lock: each downstream task's own row is the
point where its upstream tasks' completions meet.

Every waiting task counts its unfinished upstream tasks (`pending_upstream`).
A finish counts its downstream tasks down (`UPDATE ... RETURNING`, which
locks those rows), and a downstream task is judged by its trigger rule when
the count reaches zero, or at once when the finish could decide it early
(a failure under `all_success`, a success under `one_success`). Two
upstream tasks finishing at once serialise on the downstream row: the
second waits for the first to commit, then reads both finishes, so no
decision is missed and none is taken twice. A decision of upstream_failed or
skipped finishes that task too, and its own downstream tasks follow in the
same pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Connection

from weir._rules import RUN_FAILING_STATES, Decision, decide, run_outcome
from weir.server.catalog import CompiledDag
from weir.server.store import dag_runs
from weir.server.store import task_instances as tis
from weir.states import RunState, TaskState, TriggerRule

_DECISION_STATE = {
    Decision.RUN: TaskState.QUEUED,
    Decision.UPSTREAM_FAILED: TaskState.UPSTREAM_FAILED,
    Decision.SKIP: TaskState.SKIPPED,
}


def initially_ready(dag: CompiledDag) -> set[str]:
    """Tasks to queue when a run starts: roots, and `always` tasks."""
    return {
        t
        for t, ups in dag.upstream.items()
        if decide(dag.tasks[t].trigger_rule, [TaskState.NONE] * len(ups)) is Decision.RUN
    }


def pending_upstream(dag: CompiledDag) -> dict[str, int]:
    """task_id -> how many upstream tasks it waits for when a run starts."""
    return {t: len(set(ups)) for t, ups in dag.upstream.items()}


def may_decide_early(rule: TriggerRule, finished_as: TaskState) -> bool:
    """Whether one upstream finishing as `finished_as` can decide a task before the others finish.

    Everything but a success can (a failure under all_success, a skip under
    none_skipped, ...); a success only under one_success. Looking when it
    cannot is merely wasted work; not looking when it can would be a bug,
    so this errs on the side of looking.
    """
    return finished_as is not TaskState.SUCCESS or rule is TriggerRule.ONE_SUCCESS


#: Rules that run a task only once all its upstream tasks finished, and run a
#: task still waiting when the last of them finishes as a success, whatever the
#: others did: every other finish that could decide it was judged when it
#: happened (`may_decide_early`), so if it is still waiting, they all left it to
#: run. Such a task is queued by the same statement that counts its last upstream
#: task off (a chain's hop writes the downstream row once), and since nothing
#: queues it earlier, a queued state after that count means the count queued it.
#: tests/unit/test_rules.py derives this set from `decide`.
RUN_ON_LAST_SUCCESS = frozenset(
    {TriggerRule.ALL_SUCCESS, TriggerRule.ALL_DONE, TriggerRule.NONE_FAILED, TriggerRule.NONE_SKIPPED}
)


@dataclass(frozen=True, slots=True)
class HandOff:
    """A worker asking for work from queues known empty: a task that becomes ready
    here, in one of its queues, starts on it at once instead of being queued."""

    worker_id: str
    queues: Sequence[str]
    lease_until: datetime


@dataclass
class Promotion:
    queued: Counter[str] = field(default_factory=Counter)
    #: Tasks this promotion started on the worker it was handed (claimed rows).
    started: list[tis.Claimed] = field(default_factory=list)
    #: Tasks this promotion finished itself (upstream_failed, skipped).
    finished: int = 0
    #: Final states written in this transaction: the finishes given, and those above.
    final: dict[str, TaskState] = field(default_factory=dict)


def promote(
    conn: Connection,
    now: datetime,
    dag: CompiledDag,
    run_pk: int,
    changed: Mapping[str, TaskState],
    hand_off: HandOff | None = None,
) -> Promotion:
    """Apply the consequences of `changed` tasks (task_id -> final state) having finished.

    With `hand_off`, the one downstream task these finishes can make ready (a
    chain's next task, a fan-in's join) starts on that worker if it does.
    """
    result = Promotion(final=dict(changed))
    _promote_from(conn, now, dag, run_pk, dict(changed), result, hand_off)
    return result


def promoted_by_hop(
    conn: Connection,
    now: datetime,
    dag: CompiledDag,
    run_pk: int,
    task_id: str,
    counted: Mapping[str, tis.Counted],
) -> Promotion:
    """`promote` for a success whose downstream count-down tis.hop made (`counted`):
    the rest of it, which is nothing unless the count left a task to judge."""
    result = Promotion(final={task_id: TaskState.SUCCESS})
    frontier = _after_count(conn, now, dag, run_pk, {task_id: TaskState.SUCCESS}, counted, result)
    _promote_from(conn, now, dag, run_pk, frontier, result)
    return result


def _promote_from(
    conn: Connection,
    now: datetime,
    dag: CompiledDag,
    run_pk: int,
    frontier: dict[str, TaskState],
    result: Promotion,
    hand_off: HandOff | None = None,
) -> None:
    """Count `frontier`'s finishes off their downstream tasks and judge those that
    may be decided, step by step while judging finishes tasks."""
    while frontier:
        # How many of each downstream task's upstream tasks finished in this step.
        finishes: Counter[str] = Counter()
        for task_id in frontier:
            finishes.update(set(dag.downstream[task_id]))
        if not finishes:
            break
        # Queued by the count itself if it reaches zero: the rule lets them run, and
        # every upstream task of theirs finishing in this step succeeded.
        queue_at_zero = {
            d: tis.start_deadline(now, dag.tasks[d])
            for d in finishes
            if dag.tasks[d].trigger_rule in RUN_ON_LAST_SUCCESS
            and all(frontier[u] is TaskState.SUCCESS for u in dag.upstream[d] if u in frontier)
        }
        start = None
        if hand_off is not None and len(queue_at_zero) == 1:
            [ready] = queue_at_zero
            if dag.tasks[ready].queue in hand_off.queues:
                start = tis.StartOn(ready, hand_off.worker_id, hand_off.lease_until)
        hand_off = None  # later steps only finish tasks (upstream_failed, skipped)
        counted = tis.count_down_upstream(conn, now, run_pk, finishes, queue_at_zero, start)
        frontier = _after_count(conn, now, dag, run_pk, frontier, counted, result)


def _to_judge(
    dag: CompiledDag, frontier: Mapping[str, TaskState], counted: Mapping[str, tis.Counted]
) -> list[str]:
    """The counted tasks a count-down of `frontier`'s finishes may have decided."""
    return [
        d
        for d, (state, pending, *_) in counted.items()
        if state is TaskState.NONE
        and (
            pending is None
            or pending <= 0
            or any(
                may_decide_early(dag.tasks[d].trigger_rule, frontier[u])
                for u in dag.upstream[d]
                if u in frontier
            )
        )
    ]


def settled_by_hop(dag: CompiledDag, task_id: str, counted: Mapping[str, tis.Counted]) -> bool:
    """Whether the hop statement's count-down (`counted`) of `task_id`'s success left
    nothing to judge: `promoted_by_hop` then writes nothing."""
    return not _to_judge(dag, {task_id: TaskState.SUCCESS}, counted)


def _after_count(
    conn: Connection,
    now: datetime,
    dag: CompiledDag,
    run_pk: int,
    frontier: Mapping[str, TaskState],
    counted: Mapping[str, tis.Counted],
    result: Promotion,
) -> dict[str, TaskState]:
    """Note what a count-down of `frontier`'s finishes queued or started, and judge
    the tasks it may have decided. Returns the tasks judging finished (the next step)."""
    result.queued.update(c.queue for c in counted.values() if c.queued)
    result.started.extend(c.started for c in counted.values() if c.started is not None)
    to_judge = _to_judge(dag, frontier, counted)
    if not to_judge:
        return {}
    known = result.final  # final states written in this transaction need no read
    unknown = {u for d in to_judge for u in dag.upstream[d]} - known.keys()
    states = {**known, **tis.states(conn, run_pk, unknown)} if unknown else known
    by_decision: dict[Decision, list[str]] = {}
    for d in to_judge:
        decision = decide(dag.tasks[d].trigger_rule, [states[u] for u in dag.upstream[d]])
        if decision is not Decision.WAIT:
            by_decision.setdefault(decision, []).append(d)
    finished: dict[str, TaskState] = {}
    for decision, task_ids in by_decision.items():
        to = _DECISION_STATE[decision]
        deadlines = (
            {t: tis.start_deadline(now, dag.tasks[t]) for t in task_ids} if decision is Decision.RUN else None
        )
        moved = tis.move(conn, now, run_pk, task_ids, to, deadlines)
        if decision is Decision.RUN:
            result.queued.update(queue for _, queue in moved)
        else:
            result.finished += len(moved)
            finished.update((task_id, to) for task_id, _ in moved)
            known.update((task_id, to) for task_id, _ in moved)
    return finished


def chain_link(dag: CompiledDag, task_id: str) -> bool:
    """`task_id` has one downstream task, which its success runs when it is the last
    of that task's upstream tasks to finish (a chain's link)."""
    downstream = set(dag.downstream[task_id])
    return len(downstream) == 1 and dag.tasks[next(iter(downstream))].trigger_rule in RUN_ON_LAST_SUCCESS


def hop_plan(now: datetime, dag: CompiledDag, task_id: str, hand_off: HandOff | None) -> tis.HopPlan | None:
    """What a success of `task_id` does, if one count-down does all of it (see
    tis.hop): it has at most one downstream task, whose rule runs it when its last
    upstream task succeeds (queued at zero, or started on the worker handed off).
    None when promotion has more to judge: `promote` then does it."""
    downstream = set(dag.downstream[task_id])
    if not downstream:
        return tis.HopPlan()
    if not chain_link(dag, task_id):
        return None
    [ready] = downstream
    task = dag.tasks[ready]
    if hand_off is not None and task.queue in hand_off.queues:
        return tis.HopPlan(ready, start=tis.StartOn(ready, hand_off.worker_id, hand_off.lease_until))
    return tis.HopPlan(ready, deadline=tis.start_deadline(now, task))


def count_down_run(
    conn: Connection,
    now: datetime,
    dag: CompiledDag,
    run_pk: int,
    finished: int,
    known: Mapping[str, TaskState] | None = None,
) -> RunState | None:
    """Count `finished` tasks off the run; the transaction that reaches zero ends it.

    Called last in its transaction: the run row stays locked only until
    commit. Every other finish of this run committed before this one got the
    row, so the leaf states read here are final. Returns the state the run
    ended in, or None.
    """
    left, state = dag_runs.count_down(conn, run_pk, finished)
    return end_run_if_done(conn, now, dag, run_pk, left, state, known)


def end_run_if_done(
    conn: Connection,
    now: datetime,
    dag: CompiledDag,
    run_pk: int,
    left: int,
    state: RunState,
    known: Mapping[str, TaskState] | None = None,
) -> RunState | None:
    """After a run count-down left `left` in a run in `state`: end the run if that
    was its last task, by its leaves. Returns the state it ended in, or None."""
    if left > 0 or state is not RunState.RUNNING:
        return None
    # Only a leaf in a failing state fails a run: read the run's tasks in those
    # states (few, by index), not every leaf (all 10,000 tasks of a wide DAG).
    known = known or {}
    failing = tis.in_states(conn, run_pk, RUN_FAILING_STATES)
    leaves = {t: s for t, s in failing.items() if t not in known and not dag.downstream[t]}
    leaves.update({t: s for t, s in known.items() if not dag.downstream[t]})
    outcome = RunState.SUCCESS if run_outcome(leaves.values()) else RunState.FAILED
    return outcome if dag_runs.finish(conn, now, run_pk, outcome) else None
