"""Weir: DAGs of Python tasks, run by a gRPC control plane and stateless workers.

The public surface::

    from weir import dag, task, bash_task, DAG, Client

See README.md for a tour and docs/ for the design.
"""

from weir.client import Client
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

__version__ = "0.1.0"

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
