"""Weir: DAGs of Python tasks, run by a gRPC control plane and stateless workers.

The public surface::

    from weir import dag, task, bash_task, DAG, Client

See README.md for a tour and docs/ for the design.
"""

from typing import TYPE_CHECKING, Any

from weir.context import TaskContext, get_current_context
from weir.dag import DAG, dag
from weir.errors import (
    AlreadyExists,
    DagDefinitionError,
    FailedPrecondition,
    InvalidArgument,
    LeaseLost,
    NotFound,
    SkipTask,
    Unavailable,
    WeirError,
)
from weir.models import DagInfo, DagRun, TaskError, TaskInstance
from weir.states import RunState, TaskState, TriggerRule
from weir.tasks import BashTask, PythonTask, Task, bash_task, task

if TYPE_CHECKING:
    from weir.client import Client

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The client (gRPC, pydantic) loads on first use: DAG files and task
    # runners import `weir` and never need it.
    if name == "Client":
        from weir.client import Client

        return Client
    raise AttributeError(f"module 'weir' has no attribute {name!r}")


__all__ = [
    "DAG",
    "AlreadyExists",
    "BashTask",
    "Client",
    "DagDefinitionError",
    "DagInfo",
    "DagRun",
    "FailedPrecondition",
    "InvalidArgument",
    "LeaseLost",
    "NotFound",
    "PythonTask",
    "RunState",
    "SkipTask",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskInstance",
    "TaskState",
    "TriggerRule",
    "Unavailable",
    "WeirError",
    "__version__",
    "bash_task",
    "dag",
    "get_current_context",
    "task",
]
