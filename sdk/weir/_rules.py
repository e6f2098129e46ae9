"""Trigger rules: what a task does once its upstream tasks have moved.

Pure logic shared by the server (which promotes tasks when an upstream
completes) and `weir dags test` (which runs a DAG in-process), so both agree
on every rule. Airflow's semantics: `upstream_failed` counts as failed,
`removed` upstream tasks are ignored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import timedelta
from enum import Enum

from weir.states import TaskState, TriggerRule


class Decision(Enum):
    """What to do with a task whose upstream states were examined."""

    WAIT = "wait"
    RUN = "run"
    UPSTREAM_FAILED = "upstream_failed"
    SKIP = "skip"


_FAILED = (TaskState.FAILED, TaskState.UPSTREAM_FAILED)
#: The states of a leaf task that fail its run (run_outcome).
RUN_FAILING_STATES = _FAILED


def decide(rule: TriggerRule, upstream_states: Iterable[TaskState]) -> Decision:
    """Apply `rule` to the states of a task's direct upstream tasks."""
    states = [s for s in upstream_states if s is not TaskState.REMOVED]
    if rule is TriggerRule.ALWAYS or not states:
        return Decision.RUN
    count = Counter(states)
    total = len(states)
    done = sum(n for s, n in count.items() if s.finished)
    success = count[TaskState.SUCCESS]
    failed = count[TaskState.FAILED] + count[TaskState.UPSTREAM_FAILED]
    skipped = count[TaskState.SKIPPED]
    all_done = done == total

    match rule:
        case TriggerRule.ALL_SUCCESS:
            if failed:
                return Decision.UPSTREAM_FAILED
            if skipped:
                return Decision.SKIP
            return Decision.RUN if all_done else Decision.WAIT
        case TriggerRule.ALL_FAILED:
            if success or skipped:
                return Decision.SKIP
            return Decision.RUN if all_done else Decision.WAIT
        case TriggerRule.ALL_DONE:
            return Decision.RUN if all_done else Decision.WAIT
        case TriggerRule.ONE_SUCCESS:
            if success:
                return Decision.RUN
            if not all_done:
                return Decision.WAIT
            return Decision.UPSTREAM_FAILED if failed else Decision.SKIP
        case TriggerRule.ONE_FAILED:
            if failed:
                return Decision.RUN
            return Decision.SKIP if all_done else Decision.WAIT
        case TriggerRule.NONE_FAILED:
            if failed:
                return Decision.UPSTREAM_FAILED
            return Decision.RUN if all_done else Decision.WAIT
        case TriggerRule.NONE_SKIPPED:
            if skipped:
                return Decision.SKIP
            return Decision.RUN if all_done else Decision.WAIT
    raise ValueError(f"unknown trigger rule {rule!r}")  # pragma: no cover - enum is closed


def run_outcome(leaf_states: Iterable[TaskState]) -> bool:
    """Whether a finished run succeeded, judged by its leaf tasks (Airflow's rule).

    A run fails when any leaf task failed or could not run because its
    upstream failed; a leaf that succeeded after an upstream failure (for
    example with `all_done`) lets the run succeed.
    """
    return not any(s in _FAILED for s in leaf_states)


def retry_delay(
    delay: timedelta, try_number: int, *, exponential: bool, max_delay: timedelta | None
) -> timedelta:
    """How long to wait before retrying after try `try_number` (1-based) failed.

    With exponential backoff the delay doubles per try (Airflow's rule),
    capped by `max_delay` (one day when unset).
    """
    if exponential:
        cap = max_delay or timedelta(days=1)
        if delay <= timedelta(0):
            return timedelta(0)
        factor = 2 ** max(try_number - 1, 0)
        # Compare before multiplying: a large try number would overflow timedelta.
        return cap if delay >= cap / factor else delay * factor
    return min(delay, max_delay) if max_delay is not None else delay
