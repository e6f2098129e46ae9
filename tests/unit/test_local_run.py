"""In-process runs (`run_locally`, `DAG.test`) and loading DAG files from a folder."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from weir import DAG, RunState, SkipTask, TaskState, bash_task, dag, get_current_context, task
from weir._loader import dag_files, load_folder
from weir._local import LocalTaskResult, run_locally
from weir.context import TaskContext

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "dags"


def states(run: Any) -> dict[str, TaskState]:
    return {t: r.state for t, r in run.tasks.items()}


# -- local runs ------------------------------------------------------------------------


def test_results_are_passed_between_tasks() -> None:
    @dag(params={"factor": 2})
    def passing(start: int = 3) -> None:
        @task
        def numbers(start: int) -> list[int]:
            return list(range(start))

        @task
        def scale(values: list[int], factor: int) -> list[int]:
            return [v * factor for v in values]

        @task
        def total(values: list[int], extra: dict[str, Any]) -> dict[str, Any]:
            return {"sum": sum(values), "extra": extra}

        n = numbers(start)
        total(scale(n), {"raw": n, "lit": "x"})

    run = passing().test()
    assert run.state is RunState.SUCCESS
    assert run.results == {
        "numbers": [0, 1, 2],
        "scale": [0, 2, 4],
        "total": {"sum": 6, "extra": {"raw": [0, 1, 2], "lit": "x"}},
    }


def test_conf_overrides_params() -> None:
    @dag
    def configured(limit: int = 10) -> None:
        @task
        def use(limit: int) -> int:
            return limit

        use()

    d = configured()
    assert d.test().results == {"use": 10}
    assert d.test(conf={"limit": 3}).results == {"use": 3}


def test_results_go_through_json() -> None:
    @dag
    def jsonish() -> None:
        @task
        def make() -> tuple[int, int]:
            return (1, 2)

        @task
        def keys() -> dict[int, str]:
            return {1: "a"}

        make()
        keys()

    run = jsonish().test()
    assert run.results == {"make": [1, 2], "keys": {"1": "a"}}


def test_a_non_json_result_fails_the_task() -> None:
    @dag
    def unserialisable() -> None:
        @task
        def bad() -> Any:
            return {1, 2}

        bad()

    run = unserialisable().test()
    assert run.state is RunState.FAILED
    assert run.tasks["bad"].state is TaskState.FAILED
    assert "set" in (run.tasks["bad"].error or "")


def test_failure_makes_downstream_upstream_failed_and_the_run_failed() -> None:
    @dag
    def failing() -> None:
        @task
        def ok() -> int:
            return 1

        @task
        def boom(x: int) -> int:
            raise ValueError("exploded on purpose")

        @task
        def after(x: int) -> int:
            return x

        @task
        def after_after(x: int) -> int:
            return x

        after_after(after(boom(ok())))

    run = failing().test()
    assert run.state is RunState.FAILED
    assert states(run) == {
        "ok": TaskState.SUCCESS,
        "boom": TaskState.FAILED,
        "after": TaskState.UPSTREAM_FAILED,
        "after_after": TaskState.UPSTREAM_FAILED,
    }
    error = run.tasks["boom"].error or ""
    assert "ValueError: exploded on purpose" in error
    assert "Traceback" in error
    assert run.results == {"ok": 1}


def test_all_done_leaf_runs_after_a_failure_and_decides_the_run() -> None:
    ran: list[str] = []

    @dag
    def cleanup_after_failure() -> None:
        @task
        def boom() -> None:
            raise RuntimeError("no")

        @task(trigger_rule="all_done")
        def cleanup() -> str:
            ran.append("cleanup")
            return "cleaned"

        boom() >> cleanup()

    run = cleanup_after_failure().test()
    assert ran == ["cleanup"]
    assert states(run) == {"boom": TaskState.FAILED, "cleanup": TaskState.SUCCESS}
    # Airflow's rule: the run is judged by its leaves, and the leaf succeeded.
    assert run.state is RunState.SUCCESS


def test_failed_leaf_beside_an_all_done_leaf_fails_the_run() -> None:
    @dag
    def two_leaves() -> None:
        @task
        def boom() -> None:
            raise RuntimeError("no")

        @task(trigger_rule="all_done")
        def cleanup() -> None:
            return None

        boom() >> cleanup()
        bash_task("failing_leaf", "exit 3")

    run = two_leaves().test()
    assert run.tasks["cleanup"].state is TaskState.SUCCESS
    assert run.tasks["failing_leaf"].state is TaskState.FAILED
    assert "status 3" in (run.tasks["failing_leaf"].error or "")
    assert run.state is RunState.FAILED


def test_all_done_task_receives_none_for_a_failed_upstream_result() -> None:
    # The server resolves a missing upstream result to None (weir.server.claims);
    # `weir dags test` promises the same argument resolution.
    @dag
    def report_failure() -> None:
        @task
        def boom() -> int:
            raise RuntimeError("no")

        @task(trigger_rule="all_done")
        def report(value: int | None) -> str:
            return f"got {value}"

        report(boom())

    run = report_failure().test()
    assert run.tasks["report"].state is TaskState.SUCCESS, run.tasks["report"].error
    assert run.results == {"report": "got None"}
    assert run.state is RunState.SUCCESS


def test_skip_task_skips_and_all_success_downstream_skips() -> None:
    @dag
    def skipping() -> None:
        @task
        def maybe() -> int:
            raise SkipTask("nothing to do today")

        @task
        def downstream(x: int) -> int:
            return x

        @task(trigger_rule="none_failed")
        def tolerant() -> str:
            return "ran"

        m = maybe()
        downstream(m)
        m >> tolerant()

    run = skipping().test()
    assert states(run) == {
        "maybe": TaskState.SKIPPED,
        "downstream": TaskState.SKIPPED,
        "tolerant": TaskState.SUCCESS,
    }
    assert run.tasks["maybe"].error == "nothing to do today"
    assert run.state is RunState.SUCCESS


def test_bash_result_is_the_last_output_line() -> None:
    with DAG("bash_result") as d:
        bash_task("lines", "echo first; echo; echo last line; echo '   '")
        bash_task("silent", "true")
        bash_task("env", 'echo "$WEIR_DAG_ID/$WEIR_TASK_ID/$CUSTOM"', env={"CUSTOM": "yes"})

    run = d.test()
    assert run.state is RunState.SUCCESS
    assert run.results == {"lines": "last line", "silent": "", "env": "bash_result/env/yes"}


def test_bash_cwd(tmp_path: Path) -> None:
    with DAG("bash_cwd") as d:
        bash_task("where", "pwd", cwd=str(tmp_path))
    assert d.test().results == {"where": str(tmp_path)}


def test_bash_exit_99_skips_and_other_codes_fail() -> None:
    with DAG("bash_codes") as d:
        skip = bash_task("skip", "echo going; exit 99")
        after_skip = bash_task("after_skip", "echo never")
        bash_task("fail", "exit 1")
        skip >> after_skip

    run = d.test()
    assert states(run) == {
        "skip": TaskState.SKIPPED,
        "after_skip": TaskState.SKIPPED,
        "fail": TaskState.FAILED,
    }
    assert run.state is RunState.FAILED


def test_get_current_context_inside_a_task() -> None:
    @dag(params={"p": 1})
    def contextual() -> None:
        @task(retries=2)
        def inspect_context() -> dict[str, Any]:
            ctx = get_current_context()
            assert isinstance(ctx, TaskContext)
            return {
                "dag_id": ctx.dag_id,
                "task_id": ctx.task_id,
                "run_id": ctx.run_id,
                "try": ctx.try_number,
                "max_tries": ctx.max_tries,
                "params": ctx.params,
                "has_date": ctx.logical_date is not None,
            }

        inspect_context()

    got = contextual().test(conf={"p": 5, "q": "x"}).results["inspect_context"]
    assert got["dag_id"] == "contextual"
    assert got["task_id"] == "inspect_context"
    assert got["run_id"].startswith("contextual__test__")
    assert (got["try"], got["max_tries"]) == (1, 3)
    assert got["params"] == {"p": 5, "q": "x"}
    assert got["has_date"] is True


def test_get_current_context_outside_a_task_raises() -> None:
    with pytest.raises(RuntimeError, match="outside a running task"):
        get_current_context()


def test_context_is_cleared_after_a_task() -> None:
    @dag
    def clears() -> None:
        @task
        def t() -> None:
            get_current_context()

        t()

    assert clears().test().state is RunState.SUCCESS
    with pytest.raises(RuntimeError):
        get_current_context()


def test_tasks_run_in_dependency_order_and_are_reported() -> None:
    with DAG("ordered") as d:
        c = bash_task("c", "echo c")
        b = bash_task("b", "echo b")
        a = bash_task("a", "echo a")
        a >> b >> c

    events: list[tuple[str, TaskState | None]] = []

    def report(task_id: str, result: LocalTaskResult | None) -> None:
        events.append((task_id, None if result is None else result.state))

    run = run_locally(d, report=report)
    assert run.state is RunState.SUCCESS
    assert events == [
        ("a", None),
        ("a", TaskState.SUCCESS),
        ("b", None),
        ("b", TaskState.SUCCESS),
        ("c", None),
        ("c", TaskState.SUCCESS),
    ]


# -- loading DAG files ------------------------------------------------------------------


@pytest.fixture
def clean_import_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_folder puts the DAG folder on sys.path; undo that after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


GOOD = """
    from weir import DAG, bash_task

    with DAG("{dag_id}") as d:
        bash_task("hello", "echo hello")
"""


@pytest.mark.usefixtures("clean_import_path")
def test_one_broken_file_does_not_hide_the_others(tmp_path: Path) -> None:
    write(tmp_path, "good.py", GOOD.format(dag_id="good_dag"))
    syntax = write(tmp_path, "syntax.py", "def broken(:\n    pass\n")
    invalid = write(
        tmp_path,
        "invalid.py",
        """
        from weir import DAG, bash_task

        with DAG("invalid_dag"):
            bash_task("same", "true")
            bash_task("same", "true")
        """,
    )
    bag = load_folder(tmp_path)
    assert set(bag.dags) == {"good_dag"}
    assert set(bag.errors) == {str(syntax), str(invalid)}
    assert "SyntaxError" in bag.errors[str(syntax)]
    assert "DAG 'invalid_dag': duplicate task_id 'same'" in bag.errors[str(invalid)]
    assert "(line 6)" in bag.errors[str(invalid)]
    assert bag.get("good_dag").test().state is RunState.SUCCESS


@pytest.mark.usefixtures("clean_import_path")
def test_runtime_error_in_a_file_is_reported_with_its_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "crash.py", "import weir\nraise RuntimeError('cannot reach S3')\n")
    bag = load_folder(tmp_path)
    assert bag.dags == {}
    assert "RuntimeError: cannot reach S3" in bag.errors[str(path)]
    assert "crash.py" in bag.errors[str(path)]


@pytest.mark.usefixtures("clean_import_path")
def test_files_and_folders_starting_with_underscore_or_dot_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "kept.py", GOOD.format(dag_id="kept"))
    write(tmp_path, "nested/also_kept.py", GOOD.format(dag_id="also_kept"))
    write(tmp_path, "_private.py", "raise RuntimeError('must not be imported')\n")
    write(tmp_path, ".hidden.py", "raise RuntimeError('must not be imported')\n")
    write(tmp_path, "_helpers/mod.py", "raise RuntimeError('must not be imported')\n")
    write(tmp_path, ".venv/lib.py", "raise RuntimeError('must not be imported')\n")
    write(tmp_path, "notes.txt", "not python")
    assert [p.relative_to(tmp_path).as_posix() for p in dag_files(tmp_path)] == [
        "kept.py",
        "nested/also_kept.py",
    ]
    bag = load_folder(tmp_path)
    assert bag.errors == {}
    assert set(bag.dags) == {"kept", "also_kept"}


@pytest.mark.usefixtures("clean_import_path")
def test_the_same_dag_id_in_two_files_is_reported(tmp_path: Path) -> None:
    first = write(tmp_path, "a_first.py", GOOD.format(dag_id="twin"))
    second = write(tmp_path, "b_second.py", GOOD.format(dag_id="twin"))
    bag = load_folder(tmp_path)
    assert list(bag.dags) == ["twin"]
    assert bag.dags["twin"].fileloc == str(first)
    assert set(bag.errors) == {str(second)}
    assert bag.errors[str(second)] == f"DAG 'twin' is also defined in {first}"


@pytest.mark.usefixtures("clean_import_path")
def test_helper_module_beside_dag_files_is_importable(tmp_path: Path) -> None:
    helper = f"weir_test_helper_{uuid.uuid4().hex[:8]}"
    write(tmp_path, f"{helper}.py", "GREETING = 'hi from helper'\n")
    write(
        tmp_path,
        "uses_helper.py",
        f"""
        from {helper} import GREETING
        from weir import dag, task

        @dag
        def helped():
            @task
            def greet() -> str:
                return GREETING

            greet()

        helped()
        """,
    )
    try:
        bag = load_folder(tmp_path)
        assert bag.errors == {}
        assert set(bag.dags) == {"helped"}
        assert bag.get("helped").test().results == {"greet": "hi from helper"}
    finally:
        sys.modules.pop(helper, None)


@pytest.mark.usefixtures("clean_import_path")
def test_missing_folder_and_unknown_dag(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    bag = load_folder(missing)
    assert bag.dags == {}
    assert bag.errors == {str(missing): f"DAG folder {missing} does not exist"}
    with pytest.raises(KeyError, match=r"no DAG 'x'.*found: none"):
        bag.get("x")


@pytest.mark.usefixtures("clean_import_path")
def test_a_single_file_can_be_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, "only.py", GOOD.format(dag_id="only"))
    write(tmp_path, "other.py", GOOD.format(dag_id="other"))
    assert set(load_folder(path).dags) == {"only"}


@pytest.mark.usefixtures("clean_import_path")
def test_examples_load_cleanly() -> None:
    bag = load_folder(EXAMPLES)
    assert bag.errors == {}
    assert set(bag.dags) == {"bash_pipeline", "etl_orders", "fanout_regions"}
    for d in bag.dags.values():
        assert d.fileloc.startswith(str(EXAMPLES))
