"""A task runner process: `python -m weir.worker.child --dags DIR`.

The worker keeps one of these per slot. It imports the DAG files once, then
runs one task at a time as its parent asks, so a task that crashes, leaks or
calls os._exit takes down only this process, never the worker.

Channels (set up by weir.worker.runner):
- stdin: requests from the parent, one JSON object per line;
- the original stdout: replies to the parent, one JSON object per line;
- fd 1 and 2 (stdout/stderr of the task, and of any program it starts):
  the task's log, read by the parent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import traceback
from datetime import datetime
from typing import IO, Any

# Bash's exit status that means "skip me" (Airflow's default).
BASH_SKIP_EXIT_CODE = 99


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies, so no task outlives its worker."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker's own cleanup still applies
        pass


def main() -> None:
    die_with_parent()
    parser = argparse.ArgumentParser(prog="weir.worker.child")
    parser.add_argument("--dags", required=True)
    parser.add_argument("--parent", type=int, default=0)
    ns = parser.parse_args()
    if ns.parent and os.getppid() != ns.parent:  # the worker died before we could ask
        sys.exit(1)

    # Keep the real stdout for replies; send everything printed to the log pipe.
    replies = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    from weir._loader import load_folder

    bag = load_folder(ns.dags)
    _reply(replies, {"type": "ready", "dags": sorted(bag.dags), "errors": bag.errors})
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("type") == "exit":
            break
        reply = run(bag, request)
        sys.stdout.flush()
        sys.stderr.flush()
        _reply(replies, reply)


_encode = json.JSONEncoder(separators=(",", ":")).encode
#: A task's return value: JSON, with no NaN or Infinity (other languages cannot read them).
_encode_result = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode


def _reply(out: IO[str], message: dict[str, Any]) -> None:
    out.write(_encode(message) + "\n")
    out.flush()


def run(bag: Any, request: dict[str, Any]) -> dict[str, Any]:
    base = {"type": "done", "id": request["id"], "attempt": request["attempt"]}
    try:
        if request["kind"] == "bash":
            outcome, result = _run_bash(request)
        else:
            outcome, result = _run_python(bag, request)
    except _Failure as failure:
        return {**base, "outcome": "failed", "error": failure.error}
    except _Skip as skip:
        print(f"task skipped: {skip}", file=sys.stderr)
        return {**base, "outcome": "skipped"}
    return {**base, "outcome": outcome, "result": result}


class _Failure(Exception):
    def __init__(self, type_: str, message: str, tb: str = "") -> None:
        super().__init__(message)
        self.error = {"type": type_, "message": message, "traceback": tb}


class _Skip(Exception):
    pass


def _run_python(bag: Any, request: dict[str, Any]) -> tuple[str, str]:
    from weir.context import TaskContext, running
    from weir.errors import SkipTask
    from weir.tasks import PythonTask

    dag_id, task_id = request["dag_id"], request["task_id"]
    dag = bag.dags.get(dag_id)
    if dag is None:
        detail = "; ".join(f"{path}: {err.splitlines()[-1]}" for path, err in bag.errors.items())
        raise _Failure(
            "DagNotFound",
            f"this worker has no DAG {dag_id!r} in {bag.folder}"
            + (f" (load errors: {detail})" if detail else ""),
        )
    task = dag.tasks.get(task_id)
    if not isinstance(task, PythonTask):
        raise _Failure("TaskNotFound", f"DAG {dag_id!r} on this worker has no Python task {task_id!r}")
    ctx = request.get("context") or {}
    context = TaskContext(
        dag_id=dag_id,
        task_id=task_id,
        run_id=ctx.get("run_id", ""),
        try_number=ctx.get("try_number", 1),
        max_tries=ctx.get("max_tries", 1),
        map_index=ctx.get("map_index", -1),
        logical_date=datetime.fromisoformat(ctx["logical_date"]) if ctx.get("logical_date") else None,
        params=ctx.get("params") or {},
    )
    try:
        with running(context):
            value = task.function(*request.get("args", []), **request.get("kwargs", {}))
    except SkipTask as exc:
        raise _Skip(str(exc)) from None
    except BaseException as exc:  # SystemExit too: a task must not end its runner quietly
        if isinstance(exc, KeyboardInterrupt):
            raise
        tb = _user_traceback(exc)
        sys.stderr.write(tb)
        raise _Failure(type(exc).__name__, str(exc), tb) from None
    try:
        return "success", _encode_result(value)
    except (TypeError, ValueError) as exc:
        raise _Failure(
            "InvalidResult",
            f"the return value of {task_id!r} is not JSON-serialisable ({exc}); return JSON data "
            "(dict, list, str, int, float, bool, None)",
        ) from None


def _user_traceback(exc: BaseException) -> str:
    """The traceback without this runner's own frames."""
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != __file__])
    return "".join(te.format())


def _run_bash(request: dict[str, Any]) -> tuple[str, str]:
    ctx = request.get("context") or {}
    env = {
        **os.environ,
        "WEIR_DAG_ID": request["dag_id"],
        "WEIR_TASK_ID": request["task_id"],
        "WEIR_RUN_ID": ctx.get("run_id", ""),
        "WEIR_TRY_NUMBER": str(ctx.get("try_number", 1)),
        **(request.get("env") or {}),
    }
    import tempfile  # here: tempfile brings shutil, bz2 and lzma, which python tasks never need

    with tempfile.TemporaryDirectory(prefix="weir-") as tmp:
        proc = subprocess.Popen(
            ["bash", "-c", request["command"]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=request.get("cwd") or tmp,
            env=env,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - this process is single-threaded
        )
        assert proc.stdout is not None
        last = b""
        out = sys.stdout.buffer
        for line in proc.stdout:
            out.write(line)
            out.flush()
            if line.strip():
                last = line
        code = proc.wait()
    if code == BASH_SKIP_EXIT_CODE:
        raise _Skip(f"the command exited with status {BASH_SKIP_EXIT_CODE}")
    if code != 0:
        reason = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        raise _Failure("BashCommandFailed", f"the command {reason}")
    text = last.decode(errors="replace").rstrip("\r\n")
    return "success", json.dumps(text, ensure_ascii=False)


if __name__ == "__main__":
    main()
