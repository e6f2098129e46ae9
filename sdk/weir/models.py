"""Values exchanged with the server: runs, task instances, assignments.

Frozen dataclasses; weir._convert maps them to and from protobuf so no other
module handles generated message types.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from weir.spec import BashCommand, DagSpec, Schedule
from weir.states import RunState, RunType, TaskState


@dataclass(frozen=True, slots=True)
class DagVersion:
    id: int
    hash: str
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class DagInfo:
    """A registered DAG as listings show it."""

    dag_id: str
    is_paused: bool
    description: str
    tags: tuple[str, ...]
    schedule: Schedule | None
    latest_version: DagVersion | None
    task_count: int
    fileloc: str
    spec: DagSpec | None = None


@dataclass(frozen=True, slots=True)
class DagRun:
    run_id: str
    dag_id: str
    state: RunState
    run_type: RunType
    version: DagVersion | None
    logical_date: datetime | None
    conf: dict[str, Any]
    queued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    data_interval_start: datetime | None = None
    data_interval_end: datetime | None = None

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.ended_at:
            return self.ended_at - self.started_at
        return None


@dataclass(frozen=True, slots=True)
class TaskError:
    type: str
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


@dataclass(frozen=True, slots=True)
class TaskInstance:
    run_id: str
    dag_id: str
    task_id: str
    map_index: int
    state: TaskState
    try_number: int
    max_tries: int
    queue: str
    priority: int
    worker_id: str
    queued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    error: TaskError | None = None
    result: Any = None
    has_result: bool = False

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.ended_at:
            return self.ended_at - self.started_at
        return None


@dataclass(frozen=True, slots=True)
class PythonInvocation:
    args: list[Any]
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Assignment:
    """One claimed attempt, as a worker receives it."""

    task_instance_id: int
    attempt: int
    dag_id: str
    task_id: str
    map_index: int
    run_id: str
    dag_version: str
    try_number: int
    max_tries: int
    lease_expires_at: datetime | None
    logical_date: datetime | None
    timeout: timedelta | None
    params: dict[str, Any]
    body: PythonInvocation | BashCommand

    @property
    def key(self) -> tuple[int, int]:
        return (self.task_instance_id, self.attempt)


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """A worker's report of how one attempt ended."""

    task_instance_id: int
    attempt: int
    outcome: Outcome
    result_json: bytes = b""
    error: TaskError | None = None
    log_tail: bytes = b""


class AckStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class OutcomeAck:
    task_instance_id: int
    attempt: int
    status: AckStatus
    message: str = ""


class Directive(StrEnum):
    CONTINUE = "continue"
    STOP_CANCELLED = "stop_cancelled"
    STOP_LEASE_LOST = "stop_lease_lost"


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    task_instance_id: int
    attempt: int
    directive: Directive
    lease_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LogChunk:
    task_instance_id: int
    attempt: int
    data: bytes


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    """What the server tells a worker when it registers."""

    worker_id: str
    lease: timedelta
    heartbeat_interval: timedelta
    max_result_bytes: int
    server_version: str = ""


@dataclass(frozen=True, slots=True)
class RegisteredDag:
    dag_id: str
    version: DagVersion
    created: bool


@dataclass(frozen=True, slots=True)
class LogPage:
    data: bytes
    cursor: int
    try_number: int
    complete: bool
