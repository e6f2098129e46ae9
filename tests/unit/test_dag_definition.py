"""DAG authoring: @dag/@task, classic DAG blocks, wiring, options, and definition-time errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from weir import DAG, BashTask, DagDefinitionError, PythonTask, TriggerRule, bash_task, dag, task
from weir.dag import ParamRef, collect_dags, current_dag
from weir.spec import BashCommand, PythonCall
from weir.tasks import Task


def _args(t: Task) -> dict[str, Any]:
    assert isinstance(t, PythonTask)
    return t.arguments


def _edges(d: DAG) -> set[tuple[str, str]]:
    return {(up, t.task_id) for t in d.tasks.values() for up in t.upstream_task_ids}


# -- @dag and @task ---------------------------------------------------------------


def test_task_results_become_refs_and_upstream_edges() -> None:
    @dag
    def pipeline() -> None:
        @task
        def extract() -> list[int]:
            return [1, 2]

        @task
        def transform(rows: list[int], factor: int) -> list[int]:
            return rows

        transform(extract(), factor=3)

    d = pipeline()
    assert set(d.tasks) == {"extract", "transform"}
    assert _args(d.tasks["transform"]) == {"args": [{"ref": "extract"}], "kwargs": {"factor": {"value": 3}}}
    assert _edges(d) == {("extract", "transform")}
    assert d.tasks["extract"].downstream_task_ids == {"transform"}
    assert [t.task_id for t in d.roots] == ["extract"]
    assert [t.task_id for t in d.leaves] == ["transform"]


def test_dag_id_and_description_come_from_the_function() -> None:
    @dag(schedule="@daily", tags=["a", "b"])
    def my_flow() -> None:
        """First paragraph.

        Second paragraph is not the description."""
        bash_task("t", "true")

    d = my_flow()
    assert d.dag_id == "my_flow"
    assert d.description == "First paragraph."
    assert d.tags == ("a", "b")
    assert d.schedule is not None and d.schedule.cron == "@daily"


def test_dag_decorator_accepts_an_explicit_dag_id() -> None:
    @dag(dag_id="renamed")
    def original() -> None:
        bash_task("t", "true")

    assert original().dag_id == "renamed"


def test_calling_one_task_several_times_numbers_the_ids() -> None:
    @dag
    def repeated() -> None:
        @task
        def t(n: int) -> int:
            return n

        first = t(0)
        t(first)
        t(1)

    d = repeated()
    assert list(d.tasks) == ["t", "t__1", "t__2"]
    assert _args(d.tasks["t__1"])["args"] == [{"ref": "t"}]
    assert _edges(d) == {("t", "t__1")}


def test_override_renames_and_reconfigures_one_call() -> None:
    @dag
    def overridden() -> None:
        @task(retries=1, queue="q1")
        def work() -> None:
            return None

        work()
        work.override(task_id="special", retries=5)()
        work.override(task_id="special")()

    d = overridden()
    assert list(d.tasks) == ["work", "special", "special__1"]
    assert d.tasks["work"].options["retries"] == 1
    assert d.tasks["special"].options["retries"] == 5
    assert d.tasks["special"].options["queue"] == "q1"
    assert d.tasks["special__1"].options["retries"] == 1


def test_override_rejects_unknown_options() -> None:
    @task
    def work() -> None:
        return None

    with pytest.raises(DagDefinitionError, match="unknown option 'retires'"):
        work.override(retires=2)


def test_default_args_apply_and_explicit_options_win() -> None:
    with DAG(
        "defaults",
        default_args={"retries": 4, "queue": "gpu", "retry_delay": 7, "pool": "db"},
    ) as d:
        plain = bash_task("plain", "true")
        explicit = bash_task("explicit", "true", retries=0, queue="cpu")

    assert plain.options["retries"] == 4
    assert plain.options["queue"] == "gpu"
    assert plain.options["retry_delay"] == timedelta(seconds=7)
    assert explicit.options["retries"] == 0
    assert explicit.options["queue"] == "cpu"
    assert explicit.options["pool"] == "db"
    spec = d.to_spec().task("plain")
    assert (spec.retries, spec.queue, spec.pool) == (4, "gpu", "db")


def test_default_args_apply_to_task_decorator_calls() -> None:
    @dag(default_args={"retries": 2, "priority": 9})
    def with_defaults() -> None:
        @task
        def a() -> None:
            return None

        @task(priority=1)
        def b() -> None:
            return None

        a() >> b()

    d = with_defaults()
    assert (d.tasks["a"].options["retries"], d.tasks["a"].options["priority"]) == (2, 9)
    assert (d.tasks["b"].options["retries"], d.tasks["b"].options["priority"]) == (2, 1)


def test_task_options_are_normalised() -> None:
    with DAG("normalised"):
        t = bash_task("t", "true", trigger_rule="all_done", timeout=60, retry_delay=1.5, max_retry_delay=None)
    assert t.trigger_rule is TriggerRule.ALL_DONE
    assert t.options["timeout"] == timedelta(seconds=60)
    assert t.options["retry_delay"] == timedelta(seconds=1.5)


def test_results_nested_in_lists_and_dicts_become_list_and_dict_nodes() -> None:
    @dag
    def nested() -> None:
        @task
        def a() -> int:
            return 1

        @task
        def b() -> int:
            return 2

        @task
        def join(items: list[Any], mapping: dict[str, Any], literal: list[int]) -> None:
            return None

        x, y = a(), b()
        join([x, 5, [y]], {"x": x, "k": "v"}, [1, 2])

    d = nested()
    kwargs_free = _args(d.tasks["join"])
    assert kwargs_free["args"] == [
        {"list": [{"ref": "a"}, {"value": 5}, {"list": [{"ref": "b"}]}]},
        {"dict": {"x": {"ref": "a"}, "k": {"value": "v"}}},
        {"value": [1, 2]},
    ]
    assert _edges(d) == {("a", "join"), ("b", "join")}


def test_dag_function_parameters_and_params_become_dag_params() -> None:
    @dag(params={"region": "eu"})
    def parametrised(limit: int = 100) -> None:
        @task
        def extract(limit: int) -> int:
            return limit

        @task
        def where(region: str) -> str:
            return region

        extract(limit)
        where()

    d = parametrised()
    assert d.params == {"limit": 100, "region": "eu"}
    assert _args(d.tasks["extract"]) == {"args": [{"param": "limit"}], "kwargs": {}}
    # Not passed explicitly, named like a DAG param: filled from the run's params.
    assert _args(d.tasks["where"]) == {"args": [], "kwargs": {"region": {"param": "region"}}}
    assert d.to_spec().params == {"limit": 100, "region": "eu"}


def test_explicit_argument_wins_over_param_auto_fill() -> None:
    @dag(params={"limit": 10})
    def explicit() -> None:
        @task
        def extract(limit: int = 5) -> int:
            return limit

        extract(limit=3)

    assert _args(explicit().tasks["extract"])["kwargs"] == {"limit": {"value": 3}}


def test_dag_call_overrides_param_defaults() -> None:
    @dag(params={"region": "eu"})
    def overridable(limit: int = 100) -> None:
        bash_task("t", "true")

    assert overridable(limit=5).params == {"limit": 5, "region": "eu"}
    assert overridable(region="us").params == {"limit": 100, "region": "us"}
    with pytest.raises(DagDefinitionError, match=r"DAG 'overridable': unknown params \['nope'\]"):
        overridable(nope=1)


def test_params_keyword_wins_over_function_default() -> None:
    @dag(params={"limit": 7})
    def both(limit: int = 100) -> None:
        bash_task("t", "true")

    assert both().params == {"limit": 7}


def test_param_ref_inside_dag_function() -> None:
    seen: list[Any] = []

    @dag
    def capture(limit: int = 1) -> None:
        seen.append(limit)
        bash_task("t", "true")

    capture()
    assert isinstance(seen[0], ParamRef)
    assert seen[0].name == "limit"


# -- classic style and operators ----------------------------------------------------


def test_classic_dag_and_shift_operators() -> None:
    with DAG("classic", schedule=None) as d:
        a, b, c, e, f = (bash_task(n, "true") for n in "abcef")
        assert current_dag() is d
        result = a >> b
        assert result is b
        c << b
        returned = b >> [e, f]
        assert returned == [e, f]
    assert current_dag() is None
    assert _edges(d) == {("a", "b"), ("b", "c"), ("b", "e"), ("b", "f")}


def test_list_on_the_left_of_shift_operators() -> None:
    with DAG("lists") as d:
        a, b, c, e = (bash_task(n, "true") for n in "abce")
        assert ([a, b] >> c) is c
        assert ([a, b] << e) is e
    assert _edges(d) == {("a", "c"), ("b", "c"), ("e", "a"), ("e", "b")}


def test_chained_fan_out_and_fan_in() -> None:
    with DAG("chain") as d:
        a, b, c, e = (bash_task(n, "true") for n in "abce")
        a >> [b, c] >> e
    assert _edges(d) == {("a", "b"), ("a", "c"), ("b", "e"), ("c", "e")}
    assert d.get_task("e").upstream_task_ids == {"b", "c"}


def test_lshift_with_a_list() -> None:
    with DAG("lshift") as d:
        a, b, c = (bash_task(n, "true") for n in "abc")
        a << [b, c]
    assert _edges(d) == {("b", "a"), ("c", "a")}


def test_get_task_names_the_dag_when_missing() -> None:
    with DAG("lookup") as d:
        bash_task("a", "true")
    with pytest.raises(KeyError, match="DAG 'lookup' has no task 'zz'"):
        d.get_task("zz")


def test_bash_task_is_a_bash_spec() -> None:
    with DAG("bashy") as d:
        t = bash_task("b", "echo hi", env={"A": "1"}, cwd="/tmp")
    assert isinstance(t, BashTask)
    spec = d.to_spec().task("b")
    assert spec.kind == "bash"
    assert isinstance(spec.body, BashCommand)
    assert spec.body.command == "echo hi"
    assert dict(spec.body.env) == {"A": "1"}
    assert spec.body.cwd == "/tmp"


def test_python_task_spec_names_its_callable() -> None:
    @dag
    def callables() -> None:
        @task
        def work() -> None:
            """Does the work."""

        work()

    spec = callables().to_spec().task("work")
    assert spec.kind == "python"
    assert isinstance(spec.body, PythonCall)
    module, qualname = spec.body.callable.split(":")
    assert module == __name__
    assert qualname == "test_python_task_spec_names_its_callable.<locals>.callables.<locals>.work"
    assert spec.doc == "Does the work."


def test_naive_start_date_is_utc_and_schedules_parse() -> None:
    d = DAG("dates", schedule=timedelta(hours=6), start_date=datetime(2026, 1, 1))
    assert d.start_date == datetime(2026, 1, 1, tzinfo=UTC)
    assert d.schedule is not None and d.schedule.every == timedelta(hours=6)
    assert DAG("cron", schedule="0 3 * * *").schedule.cron == "0 3 * * *"  # type: ignore[union-attr]
    assert DAG("manual").schedule is None


def test_collect_dags_collects_only_inside_the_block() -> None:
    with collect_dags() as found:
        inside = DAG("inside")
    DAG("outside")
    assert found == [inside]


# -- definition-time errors -----------------------------------------------------------


def test_cycle_is_reported_with_its_path() -> None:
    with pytest.raises(DagDefinitionError) as info, DAG("cyclic"):
        a, b, c = (bash_task(n, "true") for n in "abc")
        a >> b >> c >> a
    message = str(info.value)
    assert "DAG 'cyclic' has a cycle:" in message
    path = message.split("cycle: ")[1].split(" -> ")
    assert path[0] == path[-1]
    assert set(path) == {"a", "b", "c"} and len(path) == 4


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(DagDefinitionError, match="DAG 'selfish' has a cycle: a -> a"), DAG("selfish"):
        a = bash_task("a", "true")
        a >> a


def test_cycle_in_a_dag_function_is_reported() -> None:
    @dag
    def loop() -> None:
        @task
        def a() -> None:
            return None

        x, y = a(), a()
        x >> y >> x

    with pytest.raises(DagDefinitionError, match="DAG 'loop' has a cycle"):
        loop()


def test_duplicate_task_id_names_dag_and_task() -> None:
    with pytest.raises(DagDefinitionError, match="DAG 'dups': duplicate task_id 'same'"), DAG("dups"):
        bash_task("same", "true")
        bash_task("same", "echo again")


@pytest.mark.parametrize(
    ("task_id", "expected"),
    [
        ("has space", "task_id 'has space' may only contain letters, digits"),
        ("slash/y", "may only contain"),
        ("ünïcode", "may only contain"),
        ("", "task_id must not be empty"),
        ("x" * 251, "is 251 characters long; at most 250 are allowed"),
    ],
)
def test_invalid_task_ids(task_id: str, expected: str) -> None:
    with pytest.raises(DagDefinitionError) as info, DAG("ids"):
        bash_task(task_id, "true")
    assert "DAG 'ids'" in str(info.value)
    assert expected in str(info.value)


def test_longest_valid_id_is_accepted() -> None:
    with DAG("d" * 250) as d:
        bash_task("t" * 250, "true")
        bash_task("ok.name-with_chars.9", "true")
    assert len(d.tasks) == 2


@pytest.mark.parametrize(
    ("dag_id", "expected"),
    [
        ("", "dag_id must not be empty"),
        ("bad id", "dag_id 'bad id' may only contain"),
        ("x" * 251, "251 characters long"),
    ],
)
def test_invalid_dag_ids(dag_id: str, expected: str) -> None:
    with pytest.raises(DagDefinitionError, match="invalid DAG") as info:
        DAG(dag_id)
    assert expected in str(info.value)


def test_unknown_trigger_rule_lists_the_valid_rules() -> None:
    with pytest.raises(DagDefinitionError) as info, DAG("rules"):
        bash_task("t", "true", trigger_rule="sometimes")
    message = str(info.value)
    assert "DAG 'rules', task 't'" in message
    assert "unknown trigger_rule 'sometimes'" in message
    for rule in TriggerRule:
        assert rule.value in message


def test_unknown_trigger_rule_on_a_task_decorator() -> None:
    @dag
    def decorated_rules() -> None:
        @task(trigger_rule="nope")
        def t() -> None:
            return None

        t()

    with pytest.raises(DagDefinitionError, match="DAG 'decorated_rules', task 't': unknown trigger_rule"):
        decorated_rules()


def test_unknown_task_option() -> None:
    with pytest.raises(DagDefinitionError) as info, DAG("opts"):
        bash_task("t", "true", retires=3)
    assert "DAG 'opts', task 't': unknown option 'retires'" in str(info.value)
    assert "retries" in str(info.value)


def test_unknown_task_decorator_option() -> None:
    with pytest.raises(DagDefinitionError, match="@task 'f': unknown option 'colour'"):

        @task(colour="blue")  # type: ignore[call-overload,untyped-decorator]
        def f() -> None:
            return None


def test_unknown_default_args_key() -> None:
    with pytest.raises(DagDefinitionError, match="DAG 'da': default_args: unknown option 'retires'"):
        DAG("da", default_args={"retires": 1})


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"retries": -1}, "retries must not be negative"),
        ({"retries": "3"}, "retries must be an integer"),
        ({"retries": True}, "retries must be an integer"),
        ({"priority": 1.5}, "priority must be an integer"),
        ({"timeout": "10m"}, "timeout must be a timedelta or seconds"),
    ],
)
def test_invalid_option_values(options: dict[str, Any], expected: str) -> None:
    with pytest.raises(DagDefinitionError) as info, DAG("vals"):
        bash_task("t", "true", **options)
    assert "DAG 'vals', task 't'" in str(info.value)
    assert expected in str(info.value)


def test_bash_task_outside_a_dag() -> None:
    with pytest.raises(DagDefinitionError, match="task 'loose' was created outside a DAG"):
        bash_task("loose", "true")


def test_task_function_called_outside_a_dag() -> None:
    @task
    def free(x: int) -> int:
        return x

    with pytest.raises(DagDefinitionError, match="@task 'free' was called outside a DAG"):
        free(1)
    assert free.function(2) == 2


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (datetime(2026, 1, 1), "datetime"),
        ({1, 2}, "set"),
        (b"bytes", "bytes"),
        (float("nan"), "nan"),
        ({1: "int key"}, "dictionary key 1 is not a string"),
    ],
)
def test_non_json_argument(value: Any, kind: str) -> None:
    @task
    def take(x: Any) -> None:
        return None

    with pytest.raises(DagDefinitionError) as info, DAG("nonjson"):
        take(value)
    message = str(info.value)
    assert "DAG 'nonjson', task 'take': argument 1 cannot be passed to a task" in message
    assert kind in message


def test_non_json_keyword_argument_is_named() -> None:
    @task
    def take(when: Any) -> None:
        return None

    with pytest.raises(DagDefinitionError, match="argument 'when' cannot be passed"), DAG("kw"):
        take(when=datetime(2026, 1, 1))


def test_linking_tasks_of_different_dags() -> None:
    with DAG("first"):
        a = bash_task("a", "true")
    with pytest.raises(DagDefinitionError) as info, DAG("second"):
        b = bash_task("b", "true")
        a >> b
    assert "first.a" in str(info.value) and "second.b" in str(info.value)
    assert "different DAGs" in str(info.value)


def test_result_of_another_dag_cannot_be_passed() -> None:
    @task
    def take(x: Any) -> None:
        return None

    with DAG("one"):
        a = bash_task("a", "true")
    with pytest.raises(DagDefinitionError, match="different DAGs"), DAG("two"):
        take(a)


def test_invalid_cron_schedule() -> None:
    with pytest.raises(DagDefinitionError) as info:
        DAG("crony", schedule="every day at noon")
    assert "DAG 'crony': schedule 'every day at noon' is neither a cron expression" in str(info.value)
    assert "@daily" in str(info.value)


@pytest.mark.parametrize("schedule", [timedelta(0), timedelta(seconds=-5)])
def test_non_positive_interval_schedule(schedule: timedelta) -> None:
    with pytest.raises(DagDefinitionError, match="schedule interval must be positive"):
        DAG("interval", schedule=schedule)


def test_schedule_of_wrong_type() -> None:
    with pytest.raises(DagDefinitionError, match="schedule must be None, a cron string or a timedelta"):
        DAG("typed", schedule=42)  # type: ignore[arg-type]


def test_max_active_runs_must_be_positive() -> None:
    with pytest.raises(DagDefinitionError, match="DAG 'mar': max_active_runs must be at least 1"):
        DAG("mar", max_active_runs=0)


def test_missing_required_function_argument() -> None:
    @task
    def needs(x: int, y: int) -> int:
        return x + y

    with pytest.raises(DagDefinitionError) as info, DAG("missing"):
        needs(1)
    assert "DAG 'missing', task 'needs'" in str(info.value)
    assert "'y'" in str(info.value)


def test_too_many_arguments() -> None:
    @task
    def one(x: int) -> int:
        return x

    with pytest.raises(DagDefinitionError, match="DAG 'many', task 'one'"), DAG("many"):
        one(1, 2)


def test_undeclared_param_ref_is_refused() -> None:
    @task
    def take(x: Any) -> None:
        return None

    with pytest.raises(DagDefinitionError, match="uses undeclared param 'ghost'"), DAG("params"):
        take(ParamRef("ghost"))


def test_empty_dag_and_empty_command() -> None:
    with pytest.raises(DagDefinitionError, match="DAG 'nothing' has no tasks"), DAG("nothing"):
        pass
    with (
        pytest.raises(DagDefinitionError, match="DAG 'cmd', task 'b': command must not be empty"),
        DAG("cmd"),
    ):
        bash_task("b", "   ")


def test_dependency_on_a_non_task_is_refused() -> None:
    with pytest.raises(DagDefinitionError, match="it is not a task"), DAG("nontask"):
        a = bash_task("a", "true")
        a >> ["b"]  # type: ignore[list-item]


def test_error_inside_a_dag_block_leaves_no_active_dag() -> None:
    with pytest.raises(DagDefinitionError), DAG("broken"):
        bash_task("x", "true")
        bash_task("x", "true")
    assert current_dag() is None
