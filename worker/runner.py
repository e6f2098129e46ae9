"""Runner processes: one child per slot, reused across tasks.

Each child (weir.worker.child) runs in its own session, so the whole process
tree of a task (bash and everything it starts) can be killed at once on a
timeout or a cancellation. A child that dies is replaced; the task it was
running fails with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weir.models import Assignment, Outcome, PythonInvocation, TaskError

log = logging.getLogger("weir.worker")

LogSink = Callable[[bytes], None]

#: Compact JSON, one encoder for every request (json.dumps with options builds one per call).
_encode = json.JSONEncoder(separators=(",", ":")).encode

#: How long a new runner may take to import the DAG folder.
START_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: Outcome
    result_json: bytes = b""
    error: TaskError | None = None


class RunnerDied(Exception):
    pass


class Runner:
    """One child process and its two pipes (replies and log)."""

    def __init__(self, dags_folder: Path, index: int) -> None:
        self.dags_folder = dags_folder
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self._log_fd = -1
        self._sink: LogSink | None = None
        self.current: Assignment | None = None
        #: monotonic time the current task was handed to the process
        self.started = 0.0
        self.kill_reason: TaskError | None = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> dict[str, Any]:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "weir.worker.child",
                "--dags",
                str(self.dags_folder),
                "--parent",
                str(os.getpid()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=write_fd,
                start_new_session=True,
                limit=64 * 1024 * 1024,  # a reply carries a result of up to the result cap
            )
        finally:
            os.close(write_fd)
        self._log_fd = read_fd
        asyncio.get_running_loop().add_reader(read_fd, self._drain_log)
        ready = await asyncio.wait_for(self._reply(), START_TIMEOUT)
        if ready.get("type") != "ready":
            raise RunnerDied(f"runner {self.index} did not start: {ready}")
        return ready

    def _drain_log(self) -> None:
        """Read everything the log pipe holds now and pass it on."""
        while True:
            try:
                data = os.read(self._log_fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._close_log()
                return
            if self._sink is not None:
                self._sink(data)
            else:
                log.debug("runner %d: %s", self.index, data.decode(errors="replace").rstrip())

    def _close_log(self) -> None:
        if self._log_fd >= 0:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._log_fd)
            os.close(self._log_fd)
            self._log_fd = -1

    async def _reply(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            code = await self.proc.wait()
            raise RunnerDied(_exit_reason(code))
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def run(self, a: Assignment, sink: LogSink, max_result_bytes: int) -> RunResult:
        assert self.proc is not None and self.proc.stdin is not None
        self.current, self._sink, self.kill_reason = a, sink, None
        self.started = time.monotonic()
        request: dict[str, Any] = {
            "type": "run",
            "id": a.task_instance_id,
            "attempt": a.attempt,
            "dag_id": a.dag_id,
            "task_id": a.task_id,
            "context": {
                "run_id": a.run_id,
                "try_number": a.try_number,
                "max_tries": a.max_tries,
                "map_index": a.map_index,
                "logical_date": a.logical_date.isoformat() if a.logical_date else None,
                "params": a.params,
            },
        }
        if isinstance(a.body, PythonInvocation):
            request.update(kind="python", args=a.body.args, kwargs=a.body.kwargs)
        else:
            request.update(kind="bash", command=a.body.command, env=dict(a.body.env), cwd=a.body.cwd)
        try:
            self.proc.stdin.write(_encode(request).encode() + b"\n")
            await self.proc.stdin.drain()
            try:
                if not a.timeout:  # none (a zero timeout is none too)
                    reply = await self._reply()
                else:
                    reply = await asyncio.wait_for(self._reply(), a.timeout.total_seconds())
            except TimeoutError:
                assert a.timeout is not None
                self.kill(TaskError("Timeout", f"the task ran longer than its timeout ({a.timeout})"))
                reply = await self._reply()  # raises RunnerDied once the process is gone
        except (RunnerDied, ConnectionError, BrokenPipeError) as exc:
            self._drain_log()
            error = self.kill_reason or TaskError(
                "RunnerDied", f"the process running the task died ({exc}); see the log for its last output"
            )
            return RunResult(Outcome.FAILED, error=error)
        finally:
            if self._log_fd >= 0:
                self._drain_log()  # output written before the reply is already in the pipe
            self.current, self._sink = None, None
        if reply["outcome"] == "success":
            data = reply["result"].encode()
            if len(data) > max_result_bytes:
                return RunResult(
                    Outcome.FAILED,
                    error=TaskError(
                        "ResultTooLarge",
                        f"the result is {len(data):,} bytes of JSON; the limit is {max_result_bytes:,} "
                        "(WEIR_MAX_RESULT_BYTES): store large data elsewhere and return a reference",
                    ),
                )
            return RunResult(Outcome.SUCCESS, result_json=data)
        if reply["outcome"] == "skipped":
            return RunResult(Outcome.SKIPPED)
        e = reply.get("error") or {}
        return RunResult(
            Outcome.FAILED,
            error=TaskError(e.get("type", "Error"), e.get("message", ""), e.get("traceback", "")),
        )

    def kill(self, reason: TaskError) -> None:
        """Kill the child and everything it started; the task fails with `reason`."""
        self.kill_reason = reason
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        if self._log_fd >= 0:
            self._close_log()


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with status {code}"


class RunnerPool:
    """`size` runners. Whoever claims work (the poll loop, or a report that asks
    for more) first reserves the idle runners (`reserve`) and claims at most
    that many tasks, so the worker never claims more than it can start at once;
    unused runners are given back (`give_back`); `finished` gives a runner back
    once its work is done, or replaces it if it died."""

    def __init__(self, size: int, dags_folder: Path) -> None:
        self.size = size
        self.dags_folder = dags_folder
        # Last in, first out: the runner that just finished takes the next task, its
        # process still warm (on a chain, the same runner runs every task; first in,
        # first out woke each of them in turn, for 0.1-0.3 ms more per hop in W1).
        self._idle: asyncio.Queue[Runner] = asyncio.LifoQueue()
        self._all: set[Runner] = set()
        self._next_index = 0
        self.ready_info: dict[str, Any] = {}
        self._freed = asyncio.Event()
        #: Called whenever a runner becomes idle.
        self.on_free: Callable[[], None] | None = None
        #: Runners starting (or being replaced) in the background, to join the pool.
        self._starting: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        """Start one runner and return once it is ready; the others start then, in
        the background, and join the pool as they come up. On two cores, eight
        Python processes importing the DAG folder together all finish late (a few
        tenths of a second); one alone is ready in about a tenth, so the first task
        need not wait for the rest. A runner that fails to start is retried in the
        background; raises only if none starts."""
        runners = [self._new() for _ in range(self.size)]
        failed: list[BaseException] = []
        for i, runner in enumerate(runners):
            try:
                self.ready_info = await runner.start()
            except Exception as exc:
                failed.append(exc)
                await self._drop(runner)
                continue
            self.give_back(runner)
            for rest in runners[i + 1 :]:
                self._background(self._join(rest))
            for _ in failed:
                self._background(self._replace())
            if not self._starting:
                log.info("task runners: all %d up", len(self._all))
            return
        raise failed[0]

    @property
    def starting(self) -> int:
        """Runners starting (or being replaced) that will join the pool."""
        return len(self._starting)

    async def _join(self, runner: Runner) -> None:
        """Start a runner after the pool started: idle once ready, else replaced."""
        try:
            await runner.start()
        except Exception as exc:
            log.error("could not start a task runner: %s (retrying)", exc)
            await self._drop(runner)
            await self._replace()
        else:
            self.give_back(runner)

    async def _drop(self, runner: Runner) -> None:
        await runner.stop()
        self._all.discard(runner)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Start or replace a runner in the background (counted in `starting`)."""
        task = asyncio.ensure_future(work)
        self._starting.add(task)
        task.add_done_callback(self._started)

    def _started(self, task: asyncio.Future[None]) -> None:
        self._starting.discard(task)
        if not self._starting:
            log.info("task runners: all %d up", len(self._all))

    def _new(self) -> Runner:
        runner = Runner(self.dags_folder, self._next_index)
        self._next_index += 1
        self._all.add(runner)
        return runner

    @property
    def free(self) -> int:
        """Idle runners."""
        return self._idle.qsize()

    async def wait_free(self) -> int:
        """Wait until at least one runner is idle; returns how many are."""
        while self._idle.empty():
            self._freed.clear()
            await self._freed.wait()
        return self._idle.qsize()

    def reserve(self) -> list[Runner]:
        """Take every idle runner, for a claim, the most recently used first; give
        back what it does not use."""
        return [self._idle.get_nowait() for _ in range(self._idle.qsize())]

    def take(self) -> Runner | None:
        """One idle runner, if any."""
        return None if self._idle.empty() else self._idle.get_nowait()

    async def finished(self, runner: Runner) -> None:
        """A runner's work is done: it is idle again, or replaced if it died."""
        if runner.alive:
            self.give_back(runner)
        else:
            await self._drop(runner)
            self._background(self._replace())

    def give_back(self, runner: Runner) -> None:
        self._idle.put_nowait(runner)
        self._freed.set()
        if self.on_free is not None:
            self.on_free()

    async def _replace(self) -> None:
        runner = self._new()
        delay = 0.5
        while True:
            try:
                await runner.start()
                break
            except Exception as exc:
                log.error("could not start a task runner: %s (retrying in %.0fs)", exc, delay)
                await runner.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        self.give_back(runner)

    def busy_longer_than(self, seconds: float) -> int:
        """How many runners have been running their current task longer than `seconds`."""
        since = time.monotonic() - seconds
        return sum(1 for r in self._all if r.current is not None and r.started < since)

    def running(self) -> dict[tuple[int, int], Runner]:
        return {r.current.key: r for r in self._all if r.current is not None}

    def kill(self, key: tuple[int, int], reason: TaskError) -> bool:
        runner = self.running().get(key)
        if runner is None:
            return False
        runner.kill(reason)
        return True

    async def close(self) -> None:
        for pending in list(self._starting):
            pending.cancel()
        await asyncio.gather(*(r.stop() for r in list(self._all)), return_exceptions=True)
        self._all.clear()
