"""Promotion by counters, checked against a reference on random DAGs.

The store promotes a downstream task when its count of unfinished upstream
tasks reaches zero, or early when one finish decides it. A rule's final
decision never depends on the order tasks finish in, so the reference
simply applies the trigger rules until nothing moves, with the outcome each
task is given when it runs; the store must end every task in that state,
whatever batches its completions arrive in.
"""

from __future__ import annotations

import random

import pytest

from tests.helpers import dag_spec, py
from tests.integration.store_fixtures import Plane, complete_from_replicas, failed, ok
from weir import _rules
from weir.server import queries
from weir.spec import DagSpec
from weir.states import RunState, TaskState, TriggerRule

RULES = [r for r in TriggerRule if r is not TriggerRule.ALWAYS]


def random_dag(rng: random.Random, dag_id: str, n: int) -> DagSpec:
    tasks = []
    for i in range(n):
        ups = sorted({f"t{j}" for j in range(i) if rng.random() < 0.3})
        rule = rng.choice(RULES) if ups else TriggerRule.ALL_SUCCESS
        tasks.append(py(f"t{i}", *ups, trigger_rule=rule))
    return dag_spec(dag_id, *tasks)


def reference(spec: DagSpec, succeeds: dict[str, bool]) -> dict[str, TaskState]:
    """Final states when each task that runs ends as `succeeds` says."""
    state = {t.task_id: TaskState.NONE for t in spec.tasks}
    moved = True
    while moved:
        moved = False
        for t in spec.tasks:
            if state[t.task_id] is not TaskState.NONE:
                continue
            decision = _rules.decide(t.trigger_rule, [state[u] for u in t.upstream_task_ids])
            if decision is _rules.Decision.RUN:
                state[t.task_id] = TaskState.SUCCESS if succeeds[t.task_id] else TaskState.FAILED
            elif decision is _rules.Decision.UPSTREAM_FAILED:
                state[t.task_id] = TaskState.UPSTREAM_FAILED
            elif decision is _rules.Decision.SKIP:
                state[t.task_id] = TaskState.SKIPPED
            else:
                continue
            moved = True
    return state


def final_states(plane: Plane, run_id: str) -> dict[str, TaskState]:
    return {
        t.task_id: t.state for t in plane.db.read_sync(queries.task_instances, run_id, include_results=False)
    }


@pytest.mark.parametrize("seed", range(12))
def test_random_dags_end_as_the_reference_says(plane: Plane, seed: int) -> None:
    rng = random.Random(seed)
    spec = random_dag(rng, f"random_{seed}", rng.randint(4, 14))
    succeeds = {t.task_id: rng.random() < 0.7 for t in spec.tasks}
    plane.register(spec)
    run = plane.trigger(spec.dag_id).run
    while claimed := plane.claim(100):
        rng.shuffle(claimed)
        while claimed:
            k = rng.randint(1, 3)
            batch, claimed = claimed[:k], claimed[k:]
            plane.complete(*[ok(a) if succeeds[a.task_id] else failed(a) for a in batch])
    expected = reference(spec, succeeds)
    assert final_states(plane, run.run_id) == expected
    leaves_failed = any(
        expected[t] in (TaskState.FAILED, TaskState.UPSTREAM_FAILED)
        for t in {t.task_id for t in spec.tasks} - {u for t in spec.tasks for u in t.upstream_task_ids}
    )
    want = RunState.FAILED if leaves_failed else RunState.SUCCESS
    assert plane.db.read_sync(queries.run, run.run_id).state is want


@pytest.mark.parametrize("rule", [TriggerRule.ALL_SUCCESS, TriggerRule.ONE_FAILED, TriggerRule.ALL_DONE])
def test_concurrent_finishes_of_a_diamond_decide_each_task_once(
    plane: Plane, db_url: str, rule: TriggerRule
) -> None:
    """Eight replicas complete 1 -> 60 -> {a, b} -> end at once; every counter meets zero once."""
    mids = [py(f"m{i}", "start") for i in range(60)]
    ids = [m.task_id for m in mids]
    spec = dag_spec(
        "diamond",
        py("start"),
        *mids,
        py("a", *ids, trigger_rule=rule),
        py("b", *ids, trigger_rule=TriggerRule.ALL_DONE),
        py("end", "a", "b", trigger_rule=TriggerRule.ALL_DONE),
    )
    plane.register(spec)
    run = plane.trigger("diamond").run
    [start] = plane.claim()
    plane.complete(ok(start))
    middle = plane.claim(100)
    assert len(middle) == 60
    outcomes = [failed(a) if a.task_id == "m7" else ok(a) for a in middle]
    # Eight replicas, each reporting its share two outcomes at a time.
    shares = [outcomes[n::8] for n in range(8)]
    replicas = [[share[i : i + 2] for i in range(0, len(share), 2)] for share in shares]
    # Every transaction locks the rows it counts down in one order: no deadlock to retry.
    assert not complete_from_replicas(plane, db_url, replicas)
    while claimed := plane.claim(100):
        plane.complete(*[ok(a) for a in claimed])
    states = final_states(plane, run.run_id)
    expected_a = {
        TriggerRule.ALL_SUCCESS: TaskState.UPSTREAM_FAILED,
        TriggerRule.ONE_FAILED: TaskState.SUCCESS,
        TriggerRule.ALL_DONE: TaskState.SUCCESS,
    }[rule]
    assert states["a"] is expected_a
    assert states["b"] is TaskState.SUCCESS and states["end"] is TaskState.SUCCESS
    assert plane.db.read_sync(queries.run, run.run_id).state is RunState.SUCCESS


def test_runs_of_one_dag_ending_at_once_do_not_deadlock(plane: Plane, db_url: str) -> None:
    """Two replicas end runs of one DAG side by side; each end takes the DAG row to start queued runs."""
    plane.register(dag_spec("single", py("only"), max_active_runs=1000))
    runs = [plane.trigger("single").run for _ in range(120)]
    claimed = plane.claim(1000)
    assert len(claimed) == len(runs)
    replicas = [[[ok(a)] for a in claimed[n::2]] for n in range(2)]
    # FOR UPDATE on the DAG row waited for foreign-key KEY SHARE locks: deadlocks.
    assert not complete_from_replicas(plane, db_url, replicas)
    assert {plane.db.read_sync(queries.run, r.run_id).state for r in runs} == {RunState.SUCCESS}
