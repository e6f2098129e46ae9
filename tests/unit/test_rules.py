"""Trigger rules (Airflow semantics), run outcome by leaves, and retry delays."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from weir._rules import Decision, decide, retry_delay, run_outcome
from weir.server.promotion import RUN_ON_LAST_SUCCESS, may_decide_early
from weir.states import TaskState, TriggerRule

S = TaskState.SUCCESS
F = TaskState.FAILED
UF = TaskState.UPSTREAM_FAILED
K = TaskState.SKIPPED
RM = TaskState.REMOVED
R = TaskState.RUNNING
Q = TaskState.QUEUED
N = TaskState.NONE
UR = TaskState.UP_FOR_RETRY

RUN = Decision.RUN
WAIT = Decision.WAIT
SKIP = Decision.SKIP
UPF = Decision.UPSTREAM_FAILED

TR = TriggerRule

CASES: list[tuple[TriggerRule, list[TaskState], Decision]] = [
    # all_success: any failure fails at once, any skip skips, else wait for all.
    (TR.ALL_SUCCESS, [S, S], RUN),
    (TR.ALL_SUCCESS, [S, R], WAIT),
    (TR.ALL_SUCCESS, [S, UR], WAIT),
    (TR.ALL_SUCCESS, [S, F], UPF),
    (TR.ALL_SUCCESS, [S, UF], UPF),
    (TR.ALL_SUCCESS, [F, R], UPF),
    (TR.ALL_SUCCESS, [S, K], SKIP),
    (TR.ALL_SUCCESS, [S, RM], RUN),
    (TR.ALL_SUCCESS, [RM, RM], RUN),
    # all_failed: every upstream failed (upstream_failed counts).
    (TR.ALL_FAILED, [F, F], RUN),
    (TR.ALL_FAILED, [F, UF], RUN),
    (TR.ALL_FAILED, [UF], RUN),
    (TR.ALL_FAILED, [F, R], WAIT),
    (TR.ALL_FAILED, [F, S], SKIP),
    (TR.ALL_FAILED, [F, K], SKIP),
    (TR.ALL_FAILED, [F, RM], RUN),
    # all_done: whatever the outcome, once all are finished.
    (TR.ALL_DONE, [S, F, K, UF], RUN),
    (TR.ALL_DONE, [F, Q], WAIT),
    (TR.ALL_DONE, [S, UR], WAIT),
    (TR.ALL_DONE, [S, N], WAIT),
    (TR.ALL_DONE, [F, RM], RUN),
    # one_success: run as soon as one succeeded.
    (TR.ONE_SUCCESS, [S, R], RUN),
    (TR.ONE_SUCCESS, [R, R], WAIT),
    (TR.ONE_SUCCESS, [F, R], WAIT),
    (TR.ONE_SUCCESS, [F, F], UPF),
    (TR.ONE_SUCCESS, [F, K], UPF),
    (TR.ONE_SUCCESS, [UF, K], UPF),
    (TR.ONE_SUCCESS, [K, K], SKIP),
    (TR.ONE_SUCCESS, [K, RM], SKIP),
    # one_failed: run as soon as one failed.
    (TR.ONE_FAILED, [F, R], RUN),
    (TR.ONE_FAILED, [UF, R], RUN),
    (TR.ONE_FAILED, [S, R], WAIT),
    (TR.ONE_FAILED, [S, S], SKIP),
    (TR.ONE_FAILED, [S, K], SKIP),
    # none_failed: skips are fine, failures are not.
    (TR.NONE_FAILED, [S, K], RUN),
    (TR.NONE_FAILED, [K, K], RUN),
    (TR.NONE_FAILED, [S, R], WAIT),
    (TR.NONE_FAILED, [S, F], UPF),
    (TR.NONE_FAILED, [K, UF], UPF),
    (TR.NONE_FAILED, [S, RM], RUN),
    # none_skipped: failures are fine, skips are not.
    (TR.NONE_SKIPPED, [S, F], RUN),
    (TR.NONE_SKIPPED, [S, UF], RUN),
    (TR.NONE_SKIPPED, [S, R], WAIT),
    (TR.NONE_SKIPPED, [S, K], SKIP),
    (TR.NONE_SKIPPED, [K, R], SKIP),
    # always: runs without waiting.
    (TR.ALWAYS, [R, N], RUN),
    (TR.ALWAYS, [F, UF], RUN),
    (TR.ALWAYS, [K], RUN),
]


@pytest.mark.parametrize(
    ("rule", "states", "expected"),
    CASES,
    ids=[f"{r.value}-{'+'.join(s.value for s in st)}" for r, st, _ in CASES],
)
def test_decide(rule: TriggerRule, states: list[TaskState], expected: Decision) -> None:
    assert decide(rule, states) is expected
    # Order of the upstream tasks never matters.
    assert decide(rule, list(reversed(states))) is expected


def test_every_rule_has_cases() -> None:
    assert {rule for rule, _, _ in CASES} == set(TriggerRule)


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_no_upstream_runs(rule: TriggerRule) -> None:
    assert decide(rule, []) is RUN


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_only_removed_upstream_runs(rule: TriggerRule) -> None:
    assert decide(rule, [RM]) is RUN


@pytest.mark.parametrize("rule", [r for r in TriggerRule if r is not TR.ALWAYS])
@pytest.mark.parametrize("pending", [N, TaskState.SCHEDULED, Q, R, UR])
def test_unfinished_upstream_alone_waits(rule: TriggerRule, pending: TaskState) -> None:
    assert decide(rule, [pending]) is WAIT


def test_decide_accepts_any_iterable() -> None:
    assert decide(TR.ALL_SUCCESS, iter([S, S])) is RUN
    assert decide(TR.ALL_SUCCESS, (s for s in [S, F])) is UPF


@pytest.mark.parametrize(
    ("leaves", "succeeded"),
    [
        ([S], True),
        ([S, S], True),
        ([S, K], True),
        ([K], True),
        ([], True),
        ([S, F], False),
        ([F], False),
        ([S, UF], False),
        ([K, UF], False),
    ],
)
def test_run_outcome_is_judged_by_leaves(leaves: list[TaskState], succeeded: bool) -> None:
    assert run_outcome(leaves) is succeeded


def test_fixed_retry_delay_does_not_grow() -> None:
    delay = timedelta(seconds=300)
    for try_number in (1, 2, 5, 50):
        assert retry_delay(delay, try_number, exponential=False, max_delay=None) == delay


def test_exponential_retry_delay_doubles_per_try() -> None:
    delay = timedelta(seconds=10)
    got = [retry_delay(delay, n, exponential=True, max_delay=None) for n in (1, 2, 3, 4, 5)]
    assert got == [timedelta(seconds=s) for s in (10, 20, 40, 80, 160)]


def test_exponential_retry_delay_is_capped_by_max_retry_delay() -> None:
    delay = timedelta(seconds=10)
    cap = timedelta(seconds=30)
    assert retry_delay(delay, 2, exponential=True, max_delay=cap) == timedelta(seconds=20)
    assert retry_delay(delay, 3, exponential=True, max_delay=cap) == cap
    assert retry_delay(delay, 10, exponential=True, max_delay=cap) == cap


def test_exponential_retry_delay_default_cap_is_one_day() -> None:
    delay = timedelta(hours=1)
    assert retry_delay(delay, 5, exponential=True, max_delay=None) == timedelta(hours=16)
    assert retry_delay(delay, 6, exponential=True, max_delay=None) == timedelta(days=1)
    assert retry_delay(delay, 1000, exponential=True, max_delay=None) == timedelta(days=1)


def test_fixed_retry_delay_respects_max_retry_delay() -> None:
    assert retry_delay(
        timedelta(minutes=10), 3, exponential=False, max_delay=timedelta(minutes=1)
    ) == timedelta(minutes=1)


def test_try_number_zero_is_treated_as_first_try() -> None:
    delay = timedelta(seconds=10)
    assert retry_delay(delay, 0, exponential=True, max_delay=None) == delay


def test_exponential_retry_delay_with_many_tries_does_not_overflow() -> None:
    # A task with retries=40 and a day-long retry_delay must still get a
    # delay (capped at the default day), not an OverflowError in the server.
    delay = timedelta(days=1)
    for try_number in (30, 31, 33, 40):
        assert retry_delay(delay, try_number, exponential=True, max_delay=None) == timedelta(days=1)


FINAL = (S, F, UF, K)


def _rule_lets_a_count_queue(rule: TriggerRule) -> bool:
    """Replay every order in which 1 to 3 upstream tasks can finish, judging the task as
    promotion does: after a finish that may decide early, and after the last one. The
    count of the last finish may queue the task itself iff the rule never runs it
    before that, and runs it whenever it is still waiting when the last finish is a
    success."""
    for k in (1, 2, 3):
        for finals in itertools.product(FINAL, repeat=k):
            for order in itertools.permutations(range(k)):
                seen = [N] * k
                waiting = True
                for i in order[:-1]:
                    seen[i] = finals[i]
                    if may_decide_early(rule, finals[i]):
                        decision = decide(rule, seen)
                        if decision is RUN:
                            return False  # runs before its last upstream task finished
                        if decision is not WAIT:
                            waiting = False
                            break
                if waiting and finals[order[-1]] is S and decide(rule, list(finals)) is not RUN:
                    return False
    return True


def test_the_rules_whose_tasks_a_count_queues_are_derived_from_decide() -> None:
    assert {rule for rule in TriggerRule if _rule_lets_a_count_queue(rule)} == RUN_ON_LAST_SUCCESS
