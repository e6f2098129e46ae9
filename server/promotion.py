"""Promotion: when tasks finish, decide what their downstream tasks do next.

Runs inside the transaction that recorded the finish, with the run locked,
so a hop (upstream done -> downstream queued) costs no scheduler tick and no
second transaction. `plan` is pure; `promote` applies a plan to the store and
finishes the run once every task is done.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Connection

from weir._rules import Decision, decide, run_outcome
from weir.server.catalog import CompiledDag
from weir.server.store import dag_runs
from weir.server.store import task_instances as tis
from weir.states import RunState, TaskState

_DECISION_STATE = {
    Decision.RUN: TaskState.QUEUED,
    Decision.UPSTREAM_FAILED: TaskState.UPSTREAM_FAILED,
    Decision.SKIP: TaskState.SKIPPED,
}


class NeedStates(Exception):
    """The plan reached tasks whose upstream states were not loaded."""


def plan(dag: CompiledDag, changed: Iterable[str], states: Mapping[str, TaskState]) -> dict[str, Decision]:
    """Decide every waiting task downstream of `changed` that can move now.

    Tasks that become upstream_failed or skipped are themselves finished, so
    the plan follows them further down (a failure cascades in one pass).
    Raises NeedStates when a needed state is missing from `states`.
    """
    known = dict(states)
    out: dict[str, Decision] = {}
    frontier = deque(changed)
    while frontier:
        for d in dag.downstream[frontier.popleft()]:
            if d in out:
                continue
            current = known.get(d)
            if current is None:
                raise NeedStates(d)
            if current is not TaskState.NONE:
                continue
            ups = []
            for u in dag.upstream[d]:
                s = known.get(u)
                if s is None:
                    raise NeedStates(u)
                ups.append(s)
            decision = decide(dag.tasks[d].trigger_rule, ups)
            if decision is Decision.WAIT:
                continue
            out[d] = decision
            known[d] = _DECISION_STATE[decision]
            if decision is not Decision.RUN:
                frontier.append(d)
    return out


def initially_ready(dag: CompiledDag) -> set[str]:
    """Tasks to queue when a run starts: roots, and `always` tasks."""
    return {
        t
        for t, ups in dag.upstream.items()
        if decide(dag.tasks[t].trigger_rule, [TaskState.NONE] * len(ups)) is Decision.RUN
    }


@dataclass
class Promotion:
    queued: Counter[str] = field(default_factory=Counter)
    #: The run's final state when this promotion finished it.
    finished: RunState | None = None


def promote(
    conn: Connection, now: datetime, dag: CompiledDag, run_pk: int, changed: Iterable[str]
) -> Promotion:
    """Apply the consequences of `changed` tasks having finished in a locked, running run."""
    changed = list(changed)
    candidates = {d for t in changed for d in dag.downstream[t]}
    needed = candidates | {u for d in candidates for u in dag.upstream[d]}
    states = tis.states(conn, run_pk, needed)
    try:
        decisions = plan(dag, changed, states)
    except NeedStates:
        # A cascade went past the tasks loaded: load the whole run once.
        states = tis.states(conn, run_pk)
        decisions = plan(dag, changed, states)

    result = Promotion()
    by_decision: dict[Decision, list[str]] = {}
    for task_id, decision in decisions.items():
        by_decision.setdefault(decision, []).append(task_id)
    for decision, task_ids in by_decision.items():
        deadlines = (
            {t: tis.start_deadline(now, dag.tasks[t]) for t in task_ids} if decision is Decision.RUN else None
        )
        moved = tis.move(conn, now, run_pk, task_ids, _DECISION_STATE[decision], deadlines)
        if decision is Decision.RUN:
            result.queued.update(queue for _, queue in moved)
    if not result.queued:
        result.finished = finish_if_done(conn, now, dag, run_pk)
    return result


def finish_if_done(conn: Connection, now: datetime, dag: CompiledDag, run_pk: int) -> RunState | None:
    """End the run when no task is left to run; its state comes from the leaves."""
    if tis.has_unfinished(conn, run_pk):
        return None
    leaves = tis.states(conn, run_pk, dag.leaves)
    state = RunState.SUCCESS if run_outcome(leaves.values()) else RunState.FAILED
    return state if dag_runs.finish(conn, now, run_pk, state) else None
