"""DAG specs: canonical form, content hash, validation with field paths, cycles."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from weir import DAG, InvalidArgument, bash_task, dag, task
from weir.spec import (
    BashCommand,
    DagSpec,
    PythonCall,
    Schedule,
    TaskSpec,
    check_id,
    find_cycle,
    problems,
    validate,
)
from weir.states import TriggerRule


def build_rich_dag(retries: int = 2) -> DAG:
    """A DAG using every feature the spec carries."""

    @dag(
        schedule="0 3 * * *",
        start_date=datetime(2026, 1, 1, 6, tzinfo=ZoneInfo("Europe/Paris")),
        end_date=datetime(2027, 1, 1),
        catchup=True,
        max_active_runs=3,
        tags=["etl", "nightly"],
        params={"limit": 100, "nested": {"a": [1, 2]}},
        default_args={"retry_delay": timedelta(seconds=5)},
        doc_md="# Rich",
    )
    def rich(limit: int = 100) -> None:
        """A DAG with everything."""

        @task(
            retries=retries,
            retry_exponential_backoff=True,
            max_retry_delay=timedelta(minutes=5),
            timeout=timedelta(minutes=10),
            schedule_to_start_timeout=timedelta(minutes=1),
            queue="gpu",
            pool="db",
            priority=7,
        )
        def extract(limit: int) -> list[int]:
            """Extract rows."""
            return list(range(limit))

        @task(trigger_rule="all_done")
        def load(rows: list[int], extra: dict[str, Any]) -> int:
            return len(rows)

        rows = extract(limit)
        done = load(rows, {"copy": rows, "lit": [1.5, None, True]})
        report = bash_task("report", 'echo "$X"', env={"X": "1", "A": "b"}, cwd="/tmp")
        done >> report

    return rich()


def python_task(task_id: str, upstream: tuple[str, ...] = (), **arguments: Any) -> TaskSpec:
    args = arguments or {"args": [], "kwargs": {}}
    return TaskSpec(
        task_id=task_id, body=PythonCall(arguments=args, callable="m:f"), upstream_task_ids=upstream
    )


def bash(task_id: str, upstream: tuple[str, ...] = (), command: str = "true") -> TaskSpec:
    return TaskSpec(task_id=task_id, body=BashCommand(command=command), upstream_task_ids=upstream)


def spec_of(*tasks: TaskSpec, **fields: Any) -> DagSpec:
    return DagSpec(dag_id="hand", tasks=tasks, **fields)


# -- canonical form ---------------------------------------------------------------------


def test_to_dict_from_dict_round_trip_is_lossless() -> None:
    spec = build_rich_dag().to_spec()
    through_json = json.loads(json.dumps(spec.to_dict()))
    again = DagSpec.from_dict(through_json)
    assert again == spec
    assert again.to_dict() == spec.to_dict()
    assert again.content_hash() == spec.content_hash()


def test_rich_spec_carries_every_field() -> None:
    spec = build_rich_dag().to_spec()
    assert spec.dag_id == "rich"
    assert spec.description == "A DAG with everything."
    assert spec.schedule == Schedule(cron="0 3 * * *", timezone="Europe/Paris")
    assert spec.start_date == datetime(2026, 1, 1, 5, tzinfo=UTC)
    assert spec.end_date == datetime(2027, 1, 1, tzinfo=UTC)
    assert (spec.catchup, spec.max_active_runs, spec.tags) == (True, 3, ("etl", "nightly"))
    assert spec.params == {"limit": 100, "nested": {"a": [1, 2]}}
    extract = spec.task("extract")
    assert extract.retries == 2 and extract.max_tries == 3
    assert extract.retry_delay == timedelta(seconds=5)
    assert extract.retry_exponential_backoff is True
    assert extract.max_retry_delay == timedelta(minutes=5)
    assert extract.timeout == timedelta(minutes=10)
    assert extract.schedule_to_start_timeout == timedelta(minutes=1)
    assert (extract.queue, extract.pool, extract.priority, extract.doc) == ("gpu", "db", 7, "Extract rows.")
    load = spec.task("load")
    assert load.trigger_rule is TriggerRule.ALL_DONE
    assert load.upstream_task_ids == ("extract",)
    assert spec.task("report").upstream_task_ids == ("load",)
    assert spec.task("report").body == BashCommand(command='echo "$X"', env={"X": "1", "A": "b"}, cwd="/tmp")
    with pytest.raises(KeyError):
        spec.task("missing")


def test_interval_schedule_round_trips() -> None:
    with DAG("every", schedule=timedelta(hours=6, seconds=1)) as d:
        bash_task("t", "true")
    spec = d.to_spec()
    assert spec.schedule == Schedule(every=timedelta(hours=6, seconds=1))
    assert DagSpec.from_dict(json.loads(spec.canonical_json())) == spec


def test_manual_dag_round_trips() -> None:
    with DAG("manual") as d:
        bash_task("t", "true")
    spec = d.to_spec()
    assert spec.schedule is None and spec.start_date is None
    assert DagSpec.from_dict(spec.to_dict()) == spec


def test_content_hash_is_stable_across_builds() -> None:
    first, second = build_rich_dag().to_spec(), build_rich_dag().to_spec()
    assert first.canonical_json() == second.canonical_json()
    assert first.content_hash() == second.content_hash()
    assert len(first.content_hash()) == 64


def test_content_hash_changes_when_a_task_option_changes() -> None:
    assert (
        build_rich_dag(retries=2).to_spec().content_hash()
        != build_rich_dag(retries=3).to_spec().content_hash()
    )


def test_content_hash_ignores_dict_order() -> None:
    a = spec_of(bash("t"), params={"x": 1, "y": 2})
    b = spec_of(bash("t"), params={"y": 2, "x": 1})
    assert a.content_hash() == b.content_hash()


def test_content_hash_sees_every_field() -> None:
    base = spec_of(bash("t"))
    changed = [
        replace(base, description="other"),
        replace(base, tags=("x",)),
        replace(base, params={"p": 1}),
        replace(base, catchup=True),
        replace(base, tasks=(replace(bash("t"), queue="gpu"),)),
        replace(base, tasks=(bash("t", command="false"),)),
    ]
    hashes = {base.content_hash(), *(c.content_hash() for c in changed)}
    assert len(hashes) == len(changed) + 1


def test_canonical_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        spec_of(bash("t"), params={"x": float("nan")}).canonical_json()


# -- validation ---------------------------------------------------------------------------


def test_valid_spec_has_no_problems() -> None:
    spec = build_rich_dag().to_spec()
    assert list(problems(spec)) == []
    validate(spec)


def test_unknown_upstream() -> None:
    spec = spec_of(bash("a"), bash("b", upstream=("ghost",)))
    assert list(problems(spec)) == [
        ("dag.tasks[1].upstream_task_ids", "DAG 'hand', task 'b': upstream task 'ghost' does not exist")
    ]


def test_self_dependency() -> None:
    found = dict(problems(spec_of(bash("a"), bash("b", upstream=("b",)))))
    assert found["dag.tasks[1].upstream_task_ids"] == "DAG 'hand', task 'b': a task cannot depend on itself"


def test_ref_to_a_non_upstream_task() -> None:
    spec = spec_of(bash("a"), python_task("b", args=[{"ref": "a"}], kwargs={}))
    found = list(problems(spec))
    assert found == [
        (
            "dag.tasks[1].python.arguments",
            "DAG 'hand', task 'b': argument uses the result of 'a', which is not an upstream task",
        )
    ]


def test_undeclared_param() -> None:
    spec = spec_of(python_task("a", args=[], kwargs={"x": {"param": "nope"}}))
    assert [p for p, _ in problems(spec)] == ["dag.tasks[0].python.arguments"]
    assert (
        list(
            problems(spec_of(python_task("a", args=[], kwargs={"x": {"param": "nope"}}), params={"nope": 1}))
        )
        == []
    )


def test_cycle() -> None:
    spec = spec_of(bash("a", upstream=("c",)), bash("b", upstream=("a",)), bash("c", upstream=("b",)))
    found = list(problems(spec))
    assert len(found) == 1
    path, message = found[0]
    assert path == "dag.tasks"
    assert message.startswith("DAG 'hand' has a cycle: ")
    cycle = message.split(": ")[1].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_duplicate_task_ids() -> None:
    found = list(problems(spec_of(bash("a"), bash("b"), bash("a"))))
    assert ("dag.tasks[2].task_id", "DAG 'hand': duplicate task_id 'a'") in found


def test_empty_bash_command() -> None:
    found = list(problems(spec_of(bash("a"), bash("b", command="  \n"))))
    assert found == [("dag.tasks[1].bash.command", "DAG 'hand', task 'b': the bash command is empty")]


def test_invalid_ids_and_numbers() -> None:
    assert list(problems(DagSpec(dag_id="bad id", tasks=()))) == [
        ("dag.dag_id", "dag_id 'bad id' may only contain letters, digits, '_', '-' and '.'")
    ]
    spec = spec_of(
        bash("bad/id"),
        replace(bash("neg"), retries=-1, timeout=timedelta(0), queue="bad queue"),
        max_active_runs=0,
    )
    paths = {p for p, _ in problems(spec)}
    assert paths == {
        "dag.max_active_runs",
        "dag.tasks[0].task_id",
        "dag.tasks[1].retries",
        "dag.tasks[1].timeout",
        "dag.tasks[1].queue",
    }


def test_no_tasks() -> None:
    assert list(problems(DagSpec(dag_id="empty", tasks=()))) == [("dag.tasks", "DAG 'empty' has no tasks")]


def test_problems_use_the_given_path() -> None:
    spec = spec_of(bash("a", upstream=("ghost",)))
    assert [p for p, _ in problems(spec, "dags[3]")] == ["dags[3].tasks[0].upstream_task_ids"]


def test_several_problems_are_all_reported() -> None:
    spec = spec_of(bash("a", upstream=("ghost",)), bash("b", command=""), bash("a"))
    paths = [p for p, _ in problems(spec)]
    assert "dag.tasks[0].upstream_task_ids" in paths
    assert "dag.tasks[1].bash.command" in paths
    assert "dag.tasks[2].task_id" in paths


def test_validate_raises_invalid_argument_with_the_field() -> None:
    spec = spec_of(bash("a"), bash("b", upstream=("ghost",)))
    with pytest.raises(InvalidArgument) as info:
        validate(spec)
    assert info.value.field == "dag.tasks[1].upstream_task_ids"
    assert "upstream task 'ghost' does not exist" in str(info.value)
    assert str(info.value).startswith("dag.tasks[1].upstream_task_ids: ")


def test_validate_reports_malformed_argument_nodes_as_invalid_argument() -> None:
    # Specs come from any client; a malformed template is a client error.
    spec = spec_of(python_task("a", args=[{"list": [5]}], kwargs={}))
    with pytest.raises(InvalidArgument) as info:
        validate(spec)
    assert info.value.field == "dag.tasks[0].python.arguments"


# -- ids and cycles -------------------------------------------------------------------------


def test_check_id() -> None:
    assert check_id("task_id", "ok-1.2_x") is None
    assert check_id("task_id", "x" * 250) is None
    assert check_id("task_id", "") == "task_id must not be empty"
    assert "251 characters long" in (check_id("dag_id", "x" * 251) or "")
    assert "may only contain" in (check_id("queue", "a b") or "")


@pytest.mark.parametrize("value", ["a\n", "task\n", "\n"])
def test_check_id_refuses_a_trailing_newline(value: str) -> None:
    # An id is stored, printed and used in file names: "a\n" is not "a".
    assert check_id("task_id", value) is not None


def test_find_cycle_none_for_a_dag() -> None:
    assert find_cycle({"a": (), "b": ("a",), "c": ("a", "b"), "d": ("c", "unknown")}) is None
    assert find_cycle({}) is None


def test_find_cycle_returns_the_cycle_in_run_order() -> None:
    # b runs after a, c after b, a after c.
    cycle = find_cycle({"a": ("c",), "b": ("a",), "c": ("b",), "x": ()})
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert len(cycle) == 4
    start = cycle.index("a")
    rotated = cycle[start:-1] + cycle[:start]
    assert rotated == ["a", "b", "c"]


def test_find_cycle_self_loop() -> None:
    assert find_cycle({"a": ("a",)}) == ["a", "a"]


def test_find_cycle_on_a_long_chain_does_not_recurse() -> None:
    n = 10_000
    chain = {f"t{i}": ((f"t{i - 1}",) if i else ()) for i in range(n)}
    limit = sys.getrecursionlimit()
    assert n > limit
    assert find_cycle(chain) is None
    chain["t0"] = (f"t{n - 1}",)
    cycle = find_cycle(chain)
    assert cycle is not None and len(cycle) == n + 1


def test_problems_on_a_long_chain() -> None:
    tasks = tuple(bash(f"t{i}", upstream=(f"t{i - 1}",) if i else ()) for i in range(10_000))
    assert list(problems(spec_of(*tasks))) == []


def test_long_chain_dag_definition() -> None:
    with DAG("long") as d:
        previous = bash_task("t0", "true")
        for i in range(1, 3_000):
            current = bash_task(f"t{i}", "true")
            previous >> current
            previous = current
    assert len(d.to_spec().tasks) == 3_000
