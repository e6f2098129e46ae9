"""What a running task can learn about itself: `get_current_context()`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The run and attempt a task is executing in."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    max_tries: int
    map_index: int = -1
    logical_date: datetime | None = None
    #: The DAG's params overlaid with the run's conf.
    params: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[TaskContext | None] = ContextVar("weir_task_context", default=None)


def get_current_context() -> TaskContext:
    """The context of the task being executed; call it from inside a task."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("get_current_context() was called outside a running task")
    return ctx


@contextmanager
def running(ctx: TaskContext) -> Iterator[None]:
    token = _current.set(ctx)
    try:
        yield
    finally:
        _current.reset(token)
