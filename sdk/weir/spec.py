"""DAG specs: the serialised, language-neutral form of a DAG.

The SDK builds a `DagSpec` from the objects an author writes; the server
stores each distinct spec as a version and schedules from it without ever
importing user code. `weir._convert` maps these dataclasses to and from
protobuf; the rest of the code only sees the dataclasses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from weir.errors import InvalidArgument
from weir.states import TriggerRule

ID_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
DEFAULT_QUEUE = "default"
DEFAULT_POOL = "default_pool"
DEFAULT_MAX_ACTIVE_RUNS = 16

JSON = Any  # a value json.dumps accepts: dict, list, str, int, float, bool, None


def check_id(kind: str, value: str) -> str | None:
    """Return why `value` is not a valid DAG or task id, or None when it is."""
    if not value:
        return f"{kind} must not be empty"
    if len(value) > 250:
        return f"{kind} {value[:40]!r}... is {len(value)} characters long; at most 250 are allowed"
    if not ID_PATTERN.fullmatch(value):
        return f"{kind} {value!r} may only contain letters, digits, '_', '-' and '.'"
    return None


@dataclass(frozen=True, slots=True)
class PythonCall:
    """Call a function of the DAG file with arguments built from a template.

    `arguments` is {"args": [node...], "kwargs": {name: node}}; weir._template
    defines the nodes.
    """

    arguments: Mapping[str, JSON]
    callable: str = ""


@dataclass(frozen=True, slots=True)
class BashCommand:
    """Run `command` with `bash -c`."""

    command: str
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = ""


TaskBody = PythonCall | BashCommand


@dataclass(frozen=True, slots=True)
class TaskSpec:
    task_id: str
    body: TaskBody
    upstream_task_ids: tuple[str, ...] = ()
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    queue: str = DEFAULT_QUEUE
    pool: str = DEFAULT_POOL
    priority: int = 0
    retries: int = 0
    retry_delay: timedelta = timedelta(seconds=300)
    retry_exponential_backoff: bool = False
    max_retry_delay: timedelta | None = None
    timeout: timedelta | None = None
    schedule_to_start_timeout: timedelta | None = None
    doc: str = ""

    @property
    def kind(self) -> str:
        return "python" if isinstance(self.body, PythonCall) else "bash"

    @property
    def max_tries(self) -> int:
        return self.retries + 1


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron expression (or preset) or a fixed interval, read in `timezone`."""

    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class DagSpec:
    dag_id: str
    tasks: tuple[TaskSpec, ...]
    description: str = ""
    schedule: Schedule | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    catchup: bool = False
    max_active_runs: int = DEFAULT_MAX_ACTIVE_RUNS
    tags: tuple[str, ...] = ()
    params: Mapping[str, JSON] = field(default_factory=dict)
    fileloc: str = ""
    doc_md: str = ""

    def task(self, task_id: str) -> TaskSpec:
        for t in self.tasks:
            if t.task_id == task_id:
                return t
        raise KeyError(task_id)

    # -- canonical form --------------------------------------------------
    def to_dict(self) -> dict[str, JSON]:
        """JSON-ready form; the server stores it and hashes it."""
        return {
            "dag_id": self.dag_id,
            "description": self.description,
            "schedule": None
            if self.schedule is None
            else {
                "cron": self.schedule.cron,
                "every": _secs(self.schedule.every),
                "timezone": self.schedule.timezone,
            },
            "start_date": _ts(self.start_date),
            "end_date": _ts(self.end_date),
            "catchup": self.catchup,
            "max_active_runs": self.max_active_runs,
            "tags": list(self.tags),
            "params": dict(self.params),
            "fileloc": self.fileloc,
            "doc_md": self.doc_md,
            "tasks": [_task_to_dict(t) for t in self.tasks],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, JSON]) -> DagSpec:
        sched = d.get("schedule")
        return cls(
            dag_id=d["dag_id"],
            description=d.get("description", ""),
            schedule=None
            if sched is None
            else Schedule(
                cron=sched.get("cron"),
                every=_delta(sched.get("every")),
                timezone=sched.get("timezone") or "UTC",
            ),
            start_date=_parse_ts(d.get("start_date")),
            end_date=_parse_ts(d.get("end_date")),
            catchup=bool(d.get("catchup", False)),
            max_active_runs=int(d.get("max_active_runs") or DEFAULT_MAX_ACTIVE_RUNS),
            tags=tuple(d.get("tags", ())),
            params=dict(d.get("params") or {}),
            fileloc=d.get("fileloc", ""),
            doc_md=d.get("doc_md", ""),
            tasks=tuple(_task_from_dict(t) for t in d["tasks"]),
        )

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def content_hash(self) -> str:
        """sha256 of the canonical JSON; equal specs hash equally in any process."""
        import hashlib  # here, not at the top: task runners import this module and never hash

        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def _task_to_dict(t: TaskSpec) -> dict[str, JSON]:
    body: dict[str, JSON]
    if isinstance(t.body, PythonCall):
        body = {"python": {"arguments": dict(t.body.arguments), "callable": t.body.callable}}
    else:
        body = {"bash": {"command": t.body.command, "env": dict(t.body.env), "cwd": t.body.cwd}}
    return {
        "task_id": t.task_id,
        **body,
        "upstream_task_ids": sorted(t.upstream_task_ids),
        "trigger_rule": t.trigger_rule.value,
        "queue": t.queue,
        "pool": t.pool,
        "priority": t.priority,
        "retries": t.retries,
        "retry_delay": _secs(t.retry_delay),
        "retry_exponential_backoff": t.retry_exponential_backoff,
        "max_retry_delay": _secs(t.max_retry_delay),
        "timeout": _secs(t.timeout),
        "schedule_to_start_timeout": _secs(t.schedule_to_start_timeout),
        "doc": t.doc,
    }


def _task_from_dict(d: Mapping[str, JSON]) -> TaskSpec:
    body: TaskBody
    if "python" in d:
        body = PythonCall(arguments=d["python"]["arguments"], callable=d["python"].get("callable", ""))
    else:
        b = d["bash"]
        body = BashCommand(command=b["command"], env=dict(b.get("env") or {}), cwd=b.get("cwd", ""))
    return TaskSpec(
        task_id=d["task_id"],
        body=body,
        upstream_task_ids=tuple(d.get("upstream_task_ids", ())),
        trigger_rule=TriggerRule(d.get("trigger_rule", "all_success")),
        queue=d.get("queue") or DEFAULT_QUEUE,
        pool=d.get("pool") or DEFAULT_POOL,
        priority=int(d.get("priority", 0)),
        retries=int(d.get("retries", 0)),
        retry_delay=_delta(d.get("retry_delay")) or timedelta(0),
        retry_exponential_backoff=bool(d.get("retry_exponential_backoff", False)),
        max_retry_delay=_delta(d.get("max_retry_delay")),
        timeout=_delta(d.get("timeout")),
        schedule_to_start_timeout=_delta(d.get("schedule_to_start_timeout")),
        doc=d.get("doc", ""),
    )


def _secs(d: timedelta | None) -> float | None:
    return None if d is None else d.total_seconds()


def _delta(s: float | None) -> timedelta | None:
    return None if s is None else timedelta(seconds=s)


def _ts(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat()


def _parse_ts(s: str | None) -> datetime | None:
    return None if s is None else datetime.fromisoformat(s)


# -- validation ----------------------------------------------------------------


def validate(spec: DagSpec, path: str = "dag") -> None:
    """Raise InvalidArgument naming the first field of `spec` that is wrong.

    The SDK checks DAGs at definition time with friendlier wording; the server
    runs this on every spec it receives, whatever language produced it.
    """
    for problem in problems(spec, path):
        raise InvalidArgument(problem[1], field=problem[0])


def problems(spec: DagSpec, path: str = "dag") -> Iterator[tuple[str, str]]:
    """Yield (field path, message) for everything wrong with `spec`."""
    from weir import _template  # late: _template imports this module's types

    if why := check_id("dag_id", spec.dag_id):
        yield f"{path}.dag_id", why
        return
    where = f"DAG {spec.dag_id!r}"
    if not spec.tasks:
        yield f"{path}.tasks", f"{where} has no tasks"
    if spec.max_active_runs < 1:
        yield f"{path}.max_active_runs", f"{where}: max_active_runs must be at least 1"
    seen: set[str] = set()
    for i, t in enumerate(spec.tasks):
        tpath = f"{path}.tasks[{i}]"
        if why := check_id("task_id", t.task_id):
            yield f"{tpath}.task_id", f"{where}: {why}"
            continue
        if t.task_id in seen:
            yield f"{tpath}.task_id", f"{where}: duplicate task_id {t.task_id!r}"
        seen.add(t.task_id)
    ids = {t.task_id for t in spec.tasks}
    for i, t in enumerate(spec.tasks):
        tpath = f"{path}.tasks[{i}]"
        twhere = f"{where}, task {t.task_id!r}"
        for up in t.upstream_task_ids:
            if up not in ids:
                yield f"{tpath}.upstream_task_ids", f"{twhere}: upstream task {up!r} does not exist"
            elif up == t.task_id:
                yield f"{tpath}.upstream_task_ids", f"{twhere}: a task cannot depend on itself"
        if t.retries < 0:
            yield f"{tpath}.retries", f"{twhere}: retries must not be negative"
        for name in ("timeout", "schedule_to_start_timeout"):
            value = getattr(t, name)
            if value is not None and value <= timedelta(0):
                yield f"{tpath}.{name}", f"{twhere}: {name} must be positive"
        if why := check_id("queue", t.queue):
            yield f"{tpath}.queue", f"{twhere}: {why}"
        if isinstance(t.body, PythonCall):
            for err in _template.check(t.body.arguments, set(t.upstream_task_ids), set(spec.params)):
                yield f"{tpath}.python.arguments", f"{twhere}: {err}"
        elif not t.body.command.strip():
            yield f"{tpath}.bash.command", f"{twhere}: the bash command is empty"
    cycle = find_cycle({t.task_id: t.upstream_task_ids for t in spec.tasks})
    if cycle:
        yield f"{path}.tasks", f"{where} has a cycle: {' -> '.join(cycle)}"


def find_cycle(upstream: Mapping[str, tuple[str, ...] | set[str] | frozenset[str]]) -> list[str] | None:
    """Return one cycle as a list of task ids (first == last), or None.

    Iterative depth-first search, so a 10,000-task chain does not hit the
    recursion limit.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(upstream, white)
    for root in upstream:
        if colour[root] != white:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(upstream[root]))]
        colour[root] = grey
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in colour:
                    continue
                if colour[child] == grey:
                    path = [n for n, _ in stack]
                    # Edges point upstream; print the cycle in run order.
                    cycle = [*path[path.index(child) :], child]
                    return list(reversed(cycle))
                if colour[child] == white:
                    colour[child] = grey
                    stack.append((child, iter(upstream[child])))
                    break
            else:
                colour[node] = black
                stack.pop()
    return None
