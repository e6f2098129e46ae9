"""Tasks: `@task` Python functions, `bash_task` commands, and their wiring.

Calling a `@task` function inside a DAG does not run it: it adds a task to
the DAG and returns it. Passing that task as an argument to another task call
makes its result an input (and the task an upstream); `a >> b` orders two
tasks without passing data.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, overload

from weir import _template
from weir import spec as specs
from weir.dag import DAG, ParamRef, current_dag
from weir.errors import DagDefinitionError
from weir.states import TriggerRule

P = ParamSpec("P")
R = TypeVar("R")

#: Options every task accepts, with their defaults. `default_args` on a DAG
#: may set any of them.
TASK_DEFAULTS: dict[str, Any] = {
    "trigger_rule": TriggerRule.ALL_SUCCESS,
    "retries": 0,
    "retry_delay": timedelta(seconds=300),
    "retry_exponential_backoff": False,
    "max_retry_delay": None,
    "timeout": None,
    "schedule_to_start_timeout": None,
    "queue": specs.DEFAULT_QUEUE,
    "pool": specs.DEFAULT_POOL,
    "priority": 0,
    "doc": "",
}


def check_options(options: Mapping[str, Any], *, where: str) -> None:
    unknown = sorted(set(options) - set(TASK_DEFAULTS))
    if unknown:
        raise DagDefinitionError(
            f"{where}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(TASK_DEFAULTS)})"
        )


def _normalise(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = dict(options)
    rule = out["trigger_rule"]
    try:
        out["trigger_rule"] = TriggerRule(rule)
    except ValueError:
        raise DagDefinitionError(
            f"{where}: unknown trigger_rule {rule!r} "
            f"(expected one of {', '.join(r.value for r in TriggerRule)})"
        ) from None
    for name in ("retry_delay", "max_retry_delay", "timeout", "schedule_to_start_timeout"):
        value = out[name]
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = timedelta(seconds=value)
        elif value is not None and not isinstance(value, timedelta):
            raise DagDefinitionError(f"{where}: {name} must be a timedelta or seconds, not {value!r}")
    for name in ("retries", "priority"):
        if not isinstance(out[name], int) or isinstance(out[name], bool):
            raise DagDefinitionError(f"{where}: {name} must be an integer, not {out[name]!r}")
    if out["retries"] < 0:
        raise DagDefinitionError(f"{where}: retries must not be negative")
    return out


class Task:
    """One node of a DAG. Use `@task` or `bash_task` rather than this class."""

    def __init__(self, task_id: str, *, dag: DAG | None = None, **options: Any) -> None:
        owner = dag or current_dag()
        if owner is None:
            raise DagDefinitionError(
                f"task {task_id!r} was created outside a DAG: create it inside `with DAG(...):` "
                "or in a function decorated with @dag"
            )
        where = f"DAG {owner.dag_id!r}, task {task_id!r}"
        if why := specs.check_id("task_id", task_id if isinstance(task_id, str) else ""):
            raise DagDefinitionError(f"DAG {owner.dag_id!r}: invalid task: {why}")
        check_options(options, where=where)
        self.task_id = task_id
        self.dag = owner
        self.options = _normalise({**TASK_DEFAULTS, **owner.default_args, **options}, where)
        self.upstream_task_ids: set[str] = set()
        self.downstream_task_ids: set[str] = set()
        owner.add_task(self)

    @property
    def trigger_rule(self) -> TriggerRule:
        rule: TriggerRule = self.options["trigger_rule"]
        return rule

    # -- wiring --------------------------------------------------------------
    def set_downstream(self, other: Task | Sequence[Task]) -> None:
        for t in _as_list(other):
            if t.dag is not self.dag:
                raise DagDefinitionError(
                    f"cannot link {self.dag.dag_id}.{self.task_id} to {t.dag.dag_id}.{t.task_id}: "
                    "tasks belong to different DAGs"
                )
            self.downstream_task_ids.add(t.task_id)
            t.upstream_task_ids.add(self.task_id)

    def set_upstream(self, other: Task | Sequence[Task]) -> None:
        for t in _as_list(other):
            t.set_downstream(self)

    @overload
    def __rshift__(self, other: Task) -> Task: ...
    @overload
    def __rshift__(self, other: Sequence[Task]) -> Sequence[Task]: ...
    def __rshift__(self, other: Task | Sequence[Task]) -> Task | Sequence[Task]:
        self.set_downstream(other)
        return other

    @overload
    def __lshift__(self, other: Task) -> Task: ...
    @overload
    def __lshift__(self, other: Sequence[Task]) -> Sequence[Task]: ...
    def __lshift__(self, other: Task | Sequence[Task]) -> Task | Sequence[Task]:
        self.set_upstream(other)
        return other

    def __rrshift__(self, other: Sequence[Task]) -> Task:
        """`[a, b] >> self`."""
        self.set_upstream(other)
        return self

    def __rlshift__(self, other: Sequence[Task]) -> Task:
        """`[a, b] << self`."""
        self.set_downstream(other)
        return self

    # -- serialisation ---------------------------------------------------------
    def _body(self) -> specs.TaskBody:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_spec(self) -> specs.TaskSpec:
        o = self.options
        return specs.TaskSpec(
            task_id=self.task_id,
            body=self._body(),
            upstream_task_ids=tuple(sorted(self.upstream_task_ids)),
            trigger_rule=o["trigger_rule"],
            queue=o["queue"],
            pool=o["pool"],
            priority=o["priority"],
            retries=o["retries"],
            retry_delay=o["retry_delay"],
            retry_exponential_backoff=o["retry_exponential_backoff"],
            max_retry_delay=o["max_retry_delay"],
            timeout=o["timeout"],
            schedule_to_start_timeout=o["schedule_to_start_timeout"],
            doc=o["doc"],
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.dag.dag_id}.{self.task_id}>"


def _as_list(other: Task | Sequence[Task]) -> list[Task]:
    if isinstance(other, Task):
        return [other]
    items = list(other)
    for t in items:
        if not isinstance(t, Task):
            raise DagDefinitionError(f"cannot set a dependency on {t!r}: it is not a task")
    return items


class PythonTask(Task):
    """A call of a Python function; its return value is the task's result."""

    def __init__(
        self,
        task_id: str,
        function: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(task_id, **options)
        self.function = function
        where = f"DAG {self.dag.dag_id!r}, task {task_id!r}"
        kwargs = dict(kwargs or {})
        signature = inspect.signature(function)
        try:
            bound = signature.bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise DagDefinitionError(f"{where}: {exc}") from None
        # A parameter named like a DAG param and not passed explicitly is
        # filled from the run's params.
        for name, p in signature.parameters.items():
            if (
                name not in bound.arguments
                and name in self.dag.params
                and p.kind
                in (
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    inspect.Parameter.KEYWORD_ONLY,
                )
            ):
                kwargs[name] = ParamRef(name)
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise DagDefinitionError(f"{where}: {exc}") from None
        self.arguments = {
            "args": [self._encode(a, where, f"argument {i + 1}") for i, a in enumerate(args)],
            "kwargs": {k: self._encode(v, where, f"argument {k!r}") for k, v in kwargs.items()},
        }

    def _encode(self, value: Any, where: str, what: str) -> _template.Node:
        def refs(v: Any) -> _template.Node | None:
            if isinstance(v, Task):
                self.set_upstream(v)
                return {"ref": v.task_id}
            if isinstance(v, ParamRef):
                if v.name not in self.dag.params:
                    raise DagDefinitionError(f"{where}: {what} uses undeclared param {v.name!r}")
                return {"param": v.name}
            return None

        try:
            return _template.encode(value, refs)
        except _template.NotJSON as exc:
            raise DagDefinitionError(
                f"{where}: {what} cannot be passed to a task: {exc}; "
                "pass JSON values (str, int, float, bool, None, list, dict) or task results"
            ) from None

    def _body(self) -> specs.PythonCall:
        return specs.PythonCall(
            arguments=self.arguments,
            callable=f"{self.function.__module__}:{self.function.__qualname__}",
        )


class BashTask(Task):
    """A shell command run with `bash -c`; its last line of output is its result."""

    def __init__(
        self,
        task_id: str,
        command: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(task_id, **options)
        if not isinstance(command, str) or not command.strip():
            raise DagDefinitionError(f"DAG {self.dag.dag_id!r}, task {task_id!r}: command must not be empty")
        self.command = command
        self.env = dict(env or {})
        self.cwd = cwd or ""

    def _body(self) -> specs.BashCommand:
        return specs.BashCommand(command=self.command, env=self.env, cwd=self.cwd)


def bash_task(
    task_id: str,
    command: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    **options: Any,
) -> BashTask:
    """Add a task that runs `command` with `bash -c` to the current DAG.

    A non-zero exit status fails the task; the last line the command prints
    becomes the task's result. Accepts every task option (retries, queue, ...).
    """
    return BashTask(task_id, command, env=env, cwd=cwd, **options)


class TaskFunction:
    """What `@task` returns. Calling it inside a DAG adds a task and returns it."""

    def __init__(self, function: Callable[..., Any], task_id: str | None, options: dict[str, Any]) -> None:
        self.function = function
        self.task_id = task_id or function.__name__
        self.options = options
        self.__doc__ = function.__doc__
        self.__name__ = function.__name__
        self.__wrapped__ = function

    def __call__(self, *args: Any, **kwargs: Any) -> PythonTask:
        owner = current_dag()
        if owner is None:
            raise DagDefinitionError(
                f"@task {self.task_id!r} was called outside a DAG; call it inside an @dag function "
                f"or `with DAG(...)`, or call {self.__name__}.function(...) to run the plain function"
            )
        options = {"doc": inspect.getdoc(self.function) or "", **self.options}
        return PythonTask(owner.unique_task_id(self.task_id), self.function, args, kwargs, **options)

    def override(self, *, task_id: str | None = None, **options: Any) -> TaskFunction:
        """A copy with another task id or other options, for one call."""
        check_options(options, where=f"task {task_id or self.task_id!r}")
        return TaskFunction(self.function, task_id or self.task_id, {**self.options, **options})

    def __repr__(self) -> str:
        return f"<@task {self.task_id}>"


@overload
def task(fn: Callable[P, R], /) -> TaskFunction: ...
@overload
def task(
    *,
    task_id: str | None = None,
    trigger_rule: str | TriggerRule = ...,
    retries: int = ...,
    retry_delay: timedelta | float = ...,
    retry_exponential_backoff: bool = ...,
    max_retry_delay: timedelta | float | None = ...,
    timeout: timedelta | float | None = ...,
    schedule_to_start_timeout: timedelta | float | None = ...,
    queue: str = ...,
    pool: str = ...,
    priority: int = ...,
    doc: str = ...,
) -> Callable[[Callable[P, R]], TaskFunction]: ...


def task(
    fn: Callable[..., Any] | None = None, /, *, task_id: str | None = None, **options: Any
) -> TaskFunction | Callable[[Callable[..., Any]], TaskFunction]:
    """Make a Python function a task. Its return value (JSON) is its result.

    Options: `trigger_rule` (default "all_success"), `retries`, `retry_delay`,
    `retry_exponential_backoff`, `max_retry_delay`, `timeout`,
    `schedule_to_start_timeout`, `queue`, `pool`, `priority`, `doc`. A DAG's
    `default_args` supplies the options a task does not set.
    """

    def wrap(f: Callable[..., Any]) -> TaskFunction:
        check_options(options, where=f"@task {task_id or f.__name__!r}")
        return TaskFunction(f, task_id, options)

    return wrap(fn) if fn is not None else wrap
