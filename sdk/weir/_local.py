"""Run a DAG once in this process, without a server (`weir dags test`, `DAG.test()`).

The same trigger rules and argument resolution as the server, the same JSON
round trip for results, so a DAG that passes here behaves the same deployed.
Tasks run one at a time in dependency order; retries are not attempted.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from weir import _template
from weir._rules import Decision, decide, run_outcome
from weir.context import TaskContext, running
from weir.dag import DAG
from weir.errors import SkipTask
from weir.states import RunState, TaskState
from weir.tasks import BashTask, PythonTask, Task


@dataclass
class LocalTaskResult:
    task_id: str
    state: TaskState
    result: Any = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class LocalRun:
    dag_id: str
    state: RunState
    tasks: dict[str, LocalTaskResult] = field(default_factory=dict)

    @property
    def results(self) -> dict[str, Any]:
        return {t: r.result for t, r in self.tasks.items() if r.state is TaskState.SUCCESS}


Reporter = Callable[[str, LocalTaskResult | None], None]


def run_locally(
    dag: DAG, *, conf: Mapping[str, Any] | None = None, report: Reporter | None = None
) -> LocalRun:
    """Run every task of `dag` in dependency order; `report(task_id, None)` before, with the result after."""
    params = {**dag.params, **(conf or {})}
    states: dict[str, TaskState] = dict.fromkeys(dag.tasks, TaskState.NONE)
    out = LocalRun(dag_id=dag.dag_id, state=RunState.RUNNING)
    run_id = f"{dag.dag_id}__test__{datetime.now(UTC):%Y-%m-%dT%H:%M:%S}"
    progress = True
    while progress:
        progress = False
        for task_id, task in dag.tasks.items():
            if states[task_id] is not TaskState.NONE:
                continue
            decision = decide(task.trigger_rule, [states[u] for u in task.upstream_task_ids])
            if decision is Decision.WAIT:
                continue
            progress = True
            if decision is not Decision.RUN:
                state = (
                    TaskState.UPSTREAM_FAILED if decision is Decision.UPSTREAM_FAILED else TaskState.SKIPPED
                )
                states[task_id] = state
                out.tasks[task_id] = LocalTaskResult(task_id, state)
                if report:
                    report(task_id, out.tasks[task_id])
                continue
            if report:
                report(task_id, None)
            # Like the server: an upstream that did not succeed passes None.
            result = _run_task(task, out.results, params, run_id)
            states[task_id] = result.state
            out.tasks[task_id] = result
            if report:
                report(task_id, result)
    out.state = RunState.SUCCESS if run_outcome(states[t.task_id] for t in dag.leaves) else RunState.FAILED
    return out


def _run_task(task: Task, results: dict[str, Any], params: dict[str, Any], run_id: str) -> LocalTaskResult:
    started = time.monotonic()
    try:
        value = _call(task, results, params, run_id)
        encoded = json.dumps(value, allow_nan=False)
    except SkipTask as exc:
        return LocalTaskResult(
            task.task_id, TaskState.SKIPPED, error=str(exc) or None, seconds=time.monotonic() - started
        )
    except Exception as exc:
        return LocalTaskResult(
            task.task_id,
            TaskState.FAILED,
            error="".join(traceback.format_exception(exc)).rstrip(),
            seconds=time.monotonic() - started,
        )
    return LocalTaskResult(
        task.task_id, TaskState.SUCCESS, json.loads(encoded), seconds=time.monotonic() - started
    )


def _call(task: Task, results: dict[str, Any], params: dict[str, Any], run_id: str) -> Any:
    """Call the task's function, or run its command, as a worker would."""
    if isinstance(task, PythonTask):
        args, kwargs = _template.resolve(task.arguments, results, params)
        ctx = TaskContext(
            dag_id=task.dag.dag_id,
            task_id=task.task_id,
            run_id=run_id,
            try_number=1,
            max_tries=task.options["retries"] + 1,
            logical_date=datetime.now(UTC),
            params=params,
        )
        with running(ctx):
            return task.function(*args, **kwargs)
    if isinstance(task, BashTask):
        proc = subprocess.run(
            ["bash", "-c", task.command],
            capture_output=True,
            text=True,
            env=_bash_env(task, run_id),
            cwd=task.cwd or None,
            check=False,
        )
        print(proc.stdout, end="")
        print(proc.stderr, end="")
        if proc.returncode == 99:
            raise SkipTask("the command exited with status 99")
        if proc.returncode != 0:
            raise RuntimeError(f"the command exited with status {proc.returncode}")
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        return lines[-1] if lines else ""
    raise TypeError(f"cannot run {task!r} locally")


def _bash_env(task: BashTask, run_id: str) -> dict[str, str]:
    return {
        **os.environ,
        "WEIR_DAG_ID": task.dag.dag_id,
        "WEIR_TASK_ID": task.task_id,
        "WEIR_RUN_ID": run_id,
        "WEIR_TRY_NUMBER": "1",
        **task.env,
    }
