"""DAGs: `DAG` (classic, as a context manager) and the `@dag` decorator.

A DAG is checked when it is complete (the `with` block ends or the @dag
function returns): invalid ids, duplicate tasks, unknown trigger rules and
cycles raise `DagDefinitionError` naming the DAG and the task, at the line the
author wrote, not later on a server.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, overload

from weir import spec as specs
from weir.errors import DagDefinitionError

if TYPE_CHECKING:
    from weir.tasks import Task

_CRON_PRESETS = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"}

# DAGs being defined, innermost last (a `with DAG(...)` block or an @dag call).
_active: list[DAG] = []
# While weir._loader imports a DAG file, every DAG created is collected here.
_collector: ContextVar[list[DAG] | None] = ContextVar("weir_dag_collector", default=None)


def current_dag() -> DAG | None:
    """The DAG whose definition is in progress, if any."""
    return _active[-1] if _active else None


@contextmanager
def collect_dags() -> Iterator[list[DAG]]:
    """Collect every DAG created inside the block (used by the DAG loader)."""
    found: list[DAG] = []
    token = _collector.set(found)
    try:
        yield found
    finally:
        _collector.reset(token)


class ParamRef:
    """Stands for a DAG param inside an @dag function; resolved per run."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ParamRef({self.name!r})"


class DAG:
    """A directed acyclic graph of tasks, run on a schedule or on demand.

    Use it as a context manager (tasks created inside belong to it) or build
    one with the `@dag` decorator.

    Args:
        dag_id: Unique name: letters, digits, `_`, `-`, `.`; at most 250 characters.
        schedule: None (manual runs only), a cron expression, a preset such as
            "@daily", or a timedelta between runs.
        start_date: First logical date a schedule may produce.
        end_date: Last logical date a schedule may produce.
        catchup: Create the runs missed between start_date and now.
        max_active_runs: Runs of this DAG allowed to run at once; more wait queued.
        tags: Labels for filtering in the CLI and dashboard.
        params: Defaults of the values a run can override with its conf.
        default_args: Defaults for every task's options (retries, queue, ...).
        description: One line shown in listings.
        doc_md: Longer documentation in Markdown.
    """

    def __init__(
        self,
        dag_id: str,
        *,
        schedule: str | timedelta | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
        catchup: bool = False,
        max_active_runs: int = specs.DEFAULT_MAX_ACTIVE_RUNS,
        tags: Sequence[str] = (),
        params: Mapping[str, Any] | None = None,
        default_args: Mapping[str, Any] | None = None,
        description: str = "",
        doc_md: str = "",
        _fileloc: str | None = None,
    ) -> None:
        if why := specs.check_id("dag_id", dag_id if isinstance(dag_id, str) else ""):
            raise DagDefinitionError(f"invalid DAG: {why}")
        self.dag_id = dag_id
        self.schedule = _parse_schedule(dag_id, schedule, start_date)
        self.start_date = _aware(start_date)
        self.end_date = _aware(end_date)
        self.catchup = catchup
        if max_active_runs < 1:
            raise DagDefinitionError(f"DAG {dag_id!r}: max_active_runs must be at least 1")
        self.max_active_runs = max_active_runs
        self.tags = tuple(tags)
        self.params: dict[str, Any] = dict(params or {})
        self.default_args: dict[str, Any] = dict(default_args or {})
        self.description = description
        self.doc_md = doc_md
        self.fileloc = _fileloc or _caller_file()
        self.tasks: dict[str, Task] = {}
        from weir.tasks import check_options

        check_options(self.default_args, where=f"DAG {dag_id!r}: default_args")
        collected = _collector.get()
        if collected is not None:
            collected.append(self)

    # -- definition --------------------------------------------------------
    def __enter__(self) -> DAG:
        _active.append(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _active.pop()
        if exc_type is None:
            self.validate()

    def add_task(self, task: Task) -> None:
        if task.task_id in self.tasks:
            raise DagDefinitionError(f"DAG {self.dag_id!r}: duplicate task_id {task.task_id!r}")
        self.tasks[task.task_id] = task

    def unique_task_id(self, base: str) -> str:
        """`base`, or `base__N` with the next free N (Airflow's rule for repeated calls)."""
        if base not in self.tasks:
            return base
        n = 1
        while f"{base}__{n}" in self.tasks:
            n += 1
        return f"{base}__{n}"

    def get_task(self, task_id: str) -> Task:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise KeyError(f"DAG {self.dag_id!r} has no task {task_id!r}") from None

    @property
    def roots(self) -> list[Task]:
        return [t for t in self.tasks.values() if not t.upstream_task_ids]

    @property
    def leaves(self) -> list[Task]:
        return [t for t in self.tasks.values() if not t.downstream_task_ids]

    def validate(self) -> None:
        """Raise DagDefinitionError if the DAG cannot run (for example a cycle)."""
        if not self.tasks:
            raise DagDefinitionError(f"DAG {self.dag_id!r} has no tasks")
        cycle = specs.find_cycle({t.task_id: t.upstream_task_ids for t in self.tasks.values()})
        if cycle:
            raise DagDefinitionError(f"DAG {self.dag_id!r} has a cycle: {' -> '.join(cycle)}")
        for _, message in specs.problems(self.to_spec()):
            raise DagDefinitionError(message)

    def to_spec(self) -> specs.DagSpec:
        """The serialised form the server stores and schedules from."""
        return specs.DagSpec(
            dag_id=self.dag_id,
            description=self.description,
            schedule=self.schedule,
            start_date=self.start_date,
            end_date=self.end_date,
            catchup=self.catchup,
            max_active_runs=self.max_active_runs,
            tags=self.tags,
            params=self.params,
            fileloc=self.fileloc,
            doc_md=self.doc_md,
            tasks=tuple(t.to_spec() for t in self.tasks.values()),
        )

    def test(self, conf: Mapping[str, Any] | None = None) -> Any:
        """Run the DAG once in this process, without a server (`weir dags test`)."""
        from weir._local import run_locally

        return run_locally(self, conf=conf)

    def __repr__(self) -> str:
        return f"<DAG {self.dag_id!r}: {len(self.tasks)} tasks>"


class DagFunction:
    """What `@dag` returns: call it to build (and register) the DAG."""

    def __init__(self, fn: Callable[..., Any], dag_id: str | None, kwargs: dict[str, Any]) -> None:
        self.function = fn
        self.dag_id = dag_id or fn.__name__
        self._kwargs = kwargs
        functools.update_wrapper(self, fn)

    def __call__(self, **param_overrides: Any) -> DAG:
        signature = inspect.signature(self.function)
        params = {
            name: p.default
            for name, p in signature.parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        params.update(self._kwargs.get("params") or {})
        unknown = set(param_overrides) - set(signature.parameters) - set(params)
        if unknown:
            raise DagDefinitionError(f"DAG {self.dag_id!r}: unknown params {sorted(unknown)}")
        params.update(param_overrides)
        kwargs = {**self._kwargs, "params": params}
        kwargs.setdefault("description", (inspect.getdoc(self.function) or "").split("\n\n")[0])
        new = DAG(self.dag_id, _fileloc=self.function.__code__.co_filename, **kwargs)
        with new:
            self.function(**{name: ParamRef(name) for name in signature.parameters})
        return new


@overload
def dag(fn: Callable[..., Any], /) -> DagFunction: ...
@overload
def dag(
    *,
    dag_id: str | None = None,
    schedule: str | timedelta | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    catchup: bool = False,
    max_active_runs: int = specs.DEFAULT_MAX_ACTIVE_RUNS,
    tags: Sequence[str] = (),
    params: Mapping[str, Any] | None = None,
    default_args: Mapping[str, Any] | None = None,
    description: str | None = None,
    doc_md: str = "",
) -> Callable[[Callable[..., Any]], DagFunction]: ...


def dag(
    fn: Callable[..., Any] | None = None, /, *, dag_id: str | None = None, **kwargs: Any
) -> DagFunction | Callable[[Callable[..., Any]], DagFunction]:
    """Turn a function into a DAG factory; calling it defines the DAG.

    The function's parameters become DAG params: pass them to tasks and each
    run resolves them from its conf (or the default). Accepts every keyword
    of `DAG`; the DAG id defaults to the function name and the description
    to the first paragraph of its docstring.
    """
    if kwargs.get("description") is None:
        kwargs.pop("description", None)

    def wrap(f: Callable[..., Any]) -> DagFunction:
        return DagFunction(f, dag_id, kwargs)

    return wrap(fn) if fn is not None else wrap


def _parse_schedule(dag_id: str, schedule: object, start_date: datetime | None) -> specs.Schedule | None:
    tz = _tz_name(start_date)
    if schedule is None:
        return None
    if isinstance(schedule, timedelta):
        if schedule <= timedelta(0):
            raise DagDefinitionError(f"DAG {dag_id!r}: schedule interval must be positive")
        return specs.Schedule(every=schedule, timezone=tz)
    if isinstance(schedule, str):
        expr = schedule.strip()
        if expr in _CRON_PRESETS:
            return specs.Schedule(cron=expr, timezone=tz)
        from croniter import croniter

        if not croniter.is_valid(expr):
            raise DagDefinitionError(
                f"DAG {dag_id!r}: schedule {schedule!r} is neither a cron expression "
                f"nor one of {sorted(_CRON_PRESETS)}"
            )
        return specs.Schedule(cron=expr, timezone=tz)
    raise DagDefinitionError(
        f"DAG {dag_id!r}: schedule must be None, a cron string or a timedelta, "
        f"not {type(schedule).__name__} (dataset schedules are not supported yet)"
    )


def _tz_name(start_date: datetime | None) -> str:
    if start_date is None or start_date.tzinfo is None:
        return "UTC"
    key = getattr(start_date.tzinfo, "key", None)
    return key if isinstance(key, str) else "UTC"


def _aware(when: datetime | None) -> datetime | None:
    """Naive datetimes in DAG files are UTC, as in Airflow."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


def _caller_file() -> str:
    frame = sys._getframe(2)
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame.f_code.co_filename
