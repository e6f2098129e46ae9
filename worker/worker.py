"""`weir worker`: claim tasks, run them in runner processes, report back.

Four loops share one event loop:
- poll: wait for an idle runner, long-poll the server for at most as many
  tasks as runners are idle, start each on a runner (runners are reserved
  before claiming). While tasks are short it also claims ahead (prefetch):
  those tasks wait in the worker, and the next runner that frees takes one
  without a call;
- report: send captured logs and outcomes in batches, in order (a task's
  logs always reach the server before its outcome). When the last claim
  drained the queues, a report also claims work for the idle runners in the
  same call, so the downstream tasks its outcomes queue start at once;
- flush logs: once a second, move running tasks' new output to the outbox;
- heartbeat: renew every lease held, and stop attempts the server says are
  no longer ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from weir import __version__
from weir._loader import load_folder
from weir.errors import Unavailable, WeirError
from weir.models import (
    AckStatus,
    Assignment,
    Directive,
    LogChunk,
    Outcome,
    TaskError,
    TaskOutcome,
    WorkerLimits,
)
from weir.worker.connection import Backoff, Connection
from weir.worker.runner import Runner, RunnerPool, RunResult

log = logging.getLogger("weir.worker")

Key = tuple[int, int]
T = TypeVar("T")

#: Seconds a lease is assumed to end before the server's (claim latency, clock drift).
LEASE_MARGIN = 0.5
#: Flush a running task's log once this much output is buffered.
LOG_FLUSH_BYTES = 256 * 1024
LOG_FLUSH_SECONDS = 1.0
REPORT_BATCH = 500
#: Tasks are claimed ahead of idle runners only while recent tasks ran at most this long (seconds):
#: short tasks are where a poll per free runner costs more than the task.
PREFETCH_SHORT_TASK = 0.05
#: A runner whose task has run this long (seconds) is not counted on to free soon.
PREFETCH_LONG_RUNNING = 0.2
#: A task claimed ahead that no runner took within this long goes back to the queue.
PREFETCH_MAX_WAIT = 1.0
#: Default tasks claimed ahead per slot, at most. Celery's multiplier is 4; ours
#: is higher because PREFETCH_HORIZON, not the count, bounds how long they wait:
#: bigger claims are fewer calls and transactions, which short tasks cost most.
PREFETCH_PER_SLOT = 16
#: Tasks are claimed ahead only as many as the runners get through in this long
#: (seconds) at the recent task duration.
PREFETCH_HORIZON = 0.25


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class WorkerOptions:
    server: str
    dags_folder: Path
    queues: Sequence[str] = ("default",)
    concurrency: int = 8
    #: Tasks claimed ahead of idle runners while tasks are short; None: PREFETCH_PER_SLOT
    #: per slot; 0: claim only for idle runners.
    prefetch: int | None = None
    poll_wait: float = 60.0
    token: str | None = None
    worker_id: str = field(default_factory=default_worker_id)
    #: On shutdown, how long running tasks may take to finish.
    shutdown_grace: float = 60.0


class Outbox:
    """Logs and outcomes waiting to be sent, in the order they happened."""

    def __init__(self) -> None:
        self.logs: list[LogChunk] = []
        self.outcomes: list[TaskOutcome] = []
        self.ready = asyncio.Event()
        #: Set when everything added has been sent (or given up on).
        self.sent = asyncio.Event()
        self.sent.set()

    def add_log(self, chunk: LogChunk) -> None:
        self.logs.append(chunk)
        self.ready.set()
        self.sent.clear()

    def add_outcome(self, outcome: TaskOutcome) -> None:
        self.outcomes.append(outcome)
        self.ready.set()
        self.sent.clear()

    def take(self) -> tuple[list[LogChunk], list[TaskOutcome]]:
        logs, self.logs = self.logs, []
        outcomes, self.outcomes = self.outcomes[:REPORT_BATCH], self.outcomes[REPORT_BATCH:]
        if not self.outcomes:
            self.ready.clear()
        return logs, outcomes

    def __len__(self) -> int:
        return len(self.logs) + len(self.outcomes)


class Worker:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.conn = Connection(options.server, worker_id=options.worker_id, token=options.token)
        self.pool = RunnerPool(options.concurrency, options.dags_folder)
        self.prefetch = (
            options.prefetch if options.prefetch is not None else PREFETCH_PER_SLOT * options.concurrency
        )
        self.outbox = Outbox()
        #: Attempts claimed and not yet acknowledged by the server.
        self.held: dict[Key, Assignment] = {}
        #: Attempts the server told us to stop: their outcome is not reported.
        self.abandoned: set[Key] = set()
        self._log_buffers: dict[Key, bytearray] = {}
        #: monotonic time after which a running attempt's lease may have run out
        self.lease_deadline: dict[Key, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.limits: WorkerLimits | None = None
        self.started = asyncio.Event()
        #: The poll loop's last claim got fewer tasks than it asked for: the queues
        #: were drained, and it is waiting for work.
        self._drained = True
        #: Tasks claimed ahead of idle runners, oldest first, with when they were claimed.
        self._ready: dict[Key, tuple[Assignment, float]] = {}
        #: Recent task run time, seconds (moving average); unknown counts as long.
        self._task_seconds = 1.0
        #: Set when a runner frees or a task claimed ahead is taken: the poll loop looks again.
        self._nudge = asyncio.Event()
        self.pool.on_free = self._nudge.set
        #: Shutting down: claim nothing more.
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        opts = self.options
        bag = await asyncio.to_thread(load_folder, opts.dags_folder)
        for path, error in bag.errors.items():
            log.error("could not load %s:\n%s", path, error)
        if not bag.dags:
            log.warning("no DAGs found in %s", opts.dags_folder)
        self.limits = await self._until(
            stop,
            self.conn.register(
                hostname=socket.gethostname(),
                pid=os.getpid(),
                queues=opts.queues,
                concurrency=opts.concurrency,
                version=__version__,
                dag_ids=sorted(bag.dags),
            ),
        )
        if self.limits is None:
            return
        if bag.dags:
            registered = await self._until(
                stop, self.conn.register_dags([d.to_spec() for d in bag.dags.values()])
            )
            for r in registered or []:
                log.info("DAG %s: version %s%s", r.dag_id, r.version.hash[:12], " (new)" if r.created else "")
        await self.pool.start()
        log.info(
            "worker %s: %d slots on queues %s, server %s",
            opts.worker_id,
            opts.concurrency,
            ",".join(opts.queues),
            opts.server,
        )
        background = [
            asyncio.create_task(self._report_loop(), name="report"),
            asyncio.create_task(self._flush_logs_loop(), name="flush-logs"),
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
        ]
        poller = asyncio.create_task(self._poll_loop(stop), name="poll")
        self.started.set()
        try:
            await stop.wait()
        finally:
            await self._shutdown(poller, background)

    async def _until(self, stop: asyncio.Event, work: Awaitable[T]) -> T | None:
        """Await `work` unless `stop` is set first (then None)."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if task in done:
            return task.result()
        task.cancel()
        return None

    async def _shutdown(self, poller: asyncio.Task[None], background: list[asyncio.Task[None]]) -> None:
        self._stopping = True
        log.info(
            "stopping: no new tasks; waiting up to %.0fs for %d running",
            self.options.shutdown_grace,
            len(self._tasks),
        )
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        if self._ready:
            self._hand_back(list(self._ready))
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.options.shutdown_grace)
            if pending:
                await self._give_back(pending)
        # Let the reporter send what is left (it retries while the server is away).
        try:
            await asyncio.wait_for(self.outbox.sent.wait(), 10)
        except TimeoutError:
            log.error("gave up reporting %d outcomes: the server is unreachable", len(self.outbox.outcomes))
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await self.pool.close()
        await self.conn.close()

    async def _give_back(self, pending: set[asyncio.Task[None]]) -> None:
        """Kill what is still running and hand it back: claimable again at once."""
        leftover = list(self.pool.running())
        for key in leftover:
            self.abandoned.add(key)
            self.pool.kill(key, TaskError("WorkerShutdown", "the worker stopped before the task finished"))
        await asyncio.gather(*pending, return_exceptions=True)
        try:
            released = await asyncio.wait_for(self.conn.release(leftover), 10)
            log.warning("shutdown grace period over: gave %d running tasks back to the queue", released)
        except (WeirError, TimeoutError) as exc:
            log.error(
                "could not give %d tasks back (%s): they run again once their leases expire",
                len(leftover),
                exc,
            )

    # -- poll ------------------------------------------------------------------------
    async def _poll_loop(self, stop: asyncio.Event) -> None:
        backoff = Backoff(first=0.2, cap=5.0)
        while not stop.is_set():
            await self._want_work()
            runners = self.pool.reserve()
            ahead = self._prefetch_room()
            asked = len(runners) + ahead
            assignments: list[Assignment] = []
            failed = True
            try:
                assignments = await self.conn.poll(
                    queues=self.options.queues, free_slots=asked, wait=self.options.poll_wait
                )
                failed = False
                # Fewer than asked: the queues are drained. While runners are still
                # starting, a claim is capped by the runners up, not by the queues:
                # count them as drained too, so reports claim for idle runners (at
                # worst a claim that finds nothing, in the report's transaction).
                self._drained = len(assignments) < asked or self.pool.starting > 0
            except Unavailable as exc:
                log.warning("poll failed: %s", exc)
            except WeirError as exc:
                log.error("poll refused: %s", exc)
            finally:
                self._start(assignments, runners)
            if failed:
                await asyncio.sleep(backoff.next())
            else:
                backoff.reset()

    async def _want_work(self) -> None:
        """Until a runner is idle, or tasks claimed ahead run low while tasks are short."""
        while True:
            self._dispatch_ready()
            if self.pool.free:
                return
            ahead = self._prefetch_target()
            if ahead - len(self._ready) >= max(1, ahead // 2):
                return
            self._nudge.clear()
            await self._nudge.wait()

    def _prefetch_target(self) -> int:
        """How many tasks to hold claimed ahead of idle runners now: none unless recent
        tasks were short and the queues were not found drained; no more than the runners
        get through in PREFETCH_HORIZON, and fewer while some runners are held by a long
        task (they will not free soon)."""
        if self._drained or self._stopping or self._task_seconds > PREFETCH_SHORT_TASK:
            return 0
        size = self.pool.size
        soon_free = size - self.pool.busy_longer_than(PREFETCH_LONG_RUNNING)
        within_horizon = soon_free * PREFETCH_HORIZON / max(self._task_seconds, 1e-3)
        return min(self.prefetch * soon_free // size, int(within_horizon))

    def _prefetch_room(self) -> int:
        """How many more tasks to claim ahead of idle runners now."""
        return max(0, self._prefetch_target() - len(self._ready))

    def _start(self, assignments: Sequence[Assignment], runners: list[Runner]) -> None:
        """Start claimed tasks on the reserved runners and give the unused runners back;
        tasks claimed ahead wait in `_ready` for the next runner that frees."""
        now = time.monotonic()
        lease_ends = now + self._lease_seconds - LEASE_MARGIN
        for a in assignments:
            self.held[a.key] = a
            self.lease_deadline[a.key] = lease_ends
        for a, runner in zip(assignments, runners, strict=False):
            self._spawn_execute(a, runner)
        for runner in runners[len(assignments) :]:
            self.pool.give_back(runner)
        for a in assignments[len(runners) :]:
            self._ready[a.key] = (a, now)
        self._dispatch_ready()

    def _spawn_execute(self, a: Assignment, runner: Runner) -> None:
        task = asyncio.create_task(self._execute(a, runner), name=f"task-{a.task_instance_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _dispatch_ready(self) -> None:
        """Start tasks claimed ahead on idle runners (one that replaced a dead runner, say)."""
        while self._ready:
            runner = self.pool.take()
            if runner is None:
                return
            self._spawn_execute(self._pop_ready(), runner)

    def _pop_ready(self) -> Assignment:
        key = next(iter(self._ready))
        a, _ = self._ready.pop(key)
        self._nudge.set()  # room to claim ahead again
        return a

    def _hand_back(self, keys: Sequence[Key]) -> None:
        """Give claimed tasks that never started back to the queue (claimable at once)."""
        for key in keys:
            self._ready.pop(key, None)
            self.held.pop(key, None)
            self.lease_deadline.pop(key, None)

        async def release() -> None:
            try:
                await self.conn.release(keys)
            except WeirError as exc:
                log.warning(
                    "could not give back %d unstarted tasks (%s): they run again once their leases end",
                    len(keys),
                    exc,
                )

        task = asyncio.create_task(release(), name="hand-back")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hand_back_stale(self) -> None:
        """Tasks claimed ahead that waited too long (the tasks before them turned out
        long) go back to the queue, for a worker with a free runner."""
        horizon = time.monotonic() - PREFETCH_MAX_WAIT
        stale = [key for key, (_, since) in self._ready.items() if since < horizon]
        if stale:
            log.info("gave %d tasks claimed ahead back to the queue: no runner freed in time", len(stale))
            self._hand_back(stale)

    async def _execute(self, a: Assignment, runner: Runner) -> None:
        """Run `a`, then tasks claimed ahead while there are any, then free the runner."""
        while True:
            await self._run_one(a, runner)
            if not self._ready or not runner.alive or self._stopping:
                break
            a = self._pop_ready()
        await self.pool.finished(runner)

    async def _run_one(self, a: Assignment, runner: Runner) -> None:
        label = f"{a.dag_id}.{a.task_id} (run {a.run_id}, try {a.try_number}/{a.max_tries})"
        log.debug("start %s", label)
        started = time.monotonic()
        buffer = self._log_buffers.setdefault(a.key, bytearray())

        def sink(data: bytes) -> None:
            buffer.extend(data)
            if len(buffer) >= LOG_FLUSH_BYTES:
                self._flush_log(a.key)

        assert self.limits is not None
        try:
            result = await runner.run(a, sink, self.limits.max_result_bytes)
        except Exception as exc:  # a bug here must not lose the task's outcome
            log.exception("running %s failed", label)
            result = RunResult(Outcome.FAILED, error=TaskError("WorkerError", f"{type(exc).__name__}: {exc}"))
        tail = bytes(self._log_buffers.pop(a.key, b""))
        self.lease_deadline.pop(a.key, None)
        elapsed = time.monotonic() - started
        self._task_seconds += (elapsed - self._task_seconds) * 0.2
        if a.key in self.abandoned:
            log.warning(
                "dropped %s after %.3fs: the server no longer considers this attempt current", label, elapsed
            )
            self.abandoned.discard(a.key)
            self.held.pop(a.key, None)
            return
        # One line per task at thousands of tasks a second is noise (and CPU):
        # successes are logged at DEBUG, failures stand out at WARNING.
        if result.outcome is Outcome.FAILED:
            log.warning("failed %s in %.3fs: %s", label, elapsed, result.error)
        else:
            log.debug("%s %s in %.3fs", result.outcome.value, label, elapsed)
        self.outbox.add_outcome(
            TaskOutcome(
                task_instance_id=a.task_instance_id,
                attempt=a.attempt,
                outcome=result.outcome,
                result_json=result.result_json,
                error=result.error,
                log_tail=tail,
            )
        )

    # -- report ------------------------------------------------------------------
    async def _report_loop(self) -> None:
        while True:
            await self.outbox.ready.wait()
            logs, outcomes = self.outbox.take()
            # When the queues were drained (the poll loop waits for work), ask for
            # work for the idle runners in the same call: a downstream task these
            # outcomes queue starts without waking a poll. While the queues hold
            # more, the poll loop claims (a claim here would only be an extra one).
            claim = bool(outcomes) and self._drained and not self._stopping
            runners = self.pool.reserve() if claim else []
            assignments: list[Assignment] = []
            try:
                if logs:
                    await self.conn.append_logs(logs)
                if outcomes:
                    acks, assignments = await self.conn.complete(
                        outcomes, claim_slots=len(runners), queues=self.options.queues
                    )
                    for ack in acks:
                        self.held.pop((ack.task_instance_id, ack.attempt), None)
                        if ack.status is AckStatus.STALE:
                            log.warning(
                                "server refused the outcome of task instance %d attempt %d: %s",
                                ack.task_instance_id,
                                ack.attempt,
                                ack.message,
                            )
            except WeirError as exc:
                log.error("could not report %d outcomes: %s", len(outcomes), exc)
                for o in outcomes:
                    self.held.pop((o.task_instance_id, o.attempt), None)
            finally:
                self._start(assignments, runners)
                if not len(self.outbox):
                    self.outbox.sent.set()

    def _flush_log(self, key: Key) -> None:
        buffer = self._log_buffers.get(key)
        if buffer:
            self.outbox.add_log(LogChunk(key[0], key[1], bytes(buffer)))
            buffer.clear()

    async def _flush_logs_loop(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_SECONDS)
            for key in list(self._log_buffers):
                self._flush_log(key)

    # -- heartbeat ----------------------------------------------------------------------
    @property
    def _lease_seconds(self) -> float:
        assert self.limits is not None
        return self.limits.lease.total_seconds()

    async def _heartbeat_loop(self) -> None:
        assert self.limits is not None
        interval = self.limits.heartbeat_interval.total_seconds()
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, interval))
            self._stop_expired()
            self._hand_back_stale()
            if not self.held or time.monotonic() - last < interval:
                continue
            last = sent = time.monotonic()
            try:
                statuses = await asyncio.wait_for(self.conn.heartbeat(list(self.held)), interval)
            except (WeirError, TimeoutError) as exc:
                log.warning("heartbeat failed: %s", exc or "no answer in time")
                continue
            for status in statuses:
                key = (status.task_instance_id, status.attempt)
                if status.directive is Directive.CONTINUE:
                    if key in self.lease_deadline:
                        self.lease_deadline[key] = sent + self._lease_seconds - LEASE_MARGIN
                    continue
                reason = (
                    "the task was cancelled"
                    if status.directive is Directive.STOP_CANCELLED
                    else "the lease on this attempt was lost"
                )
                self._stop(key, TaskError("Stopped", reason))

    def _stop_expired(self) -> None:
        """A lease we could not renew in time: another worker may run the task now, so stop ours."""
        now = time.monotonic()
        for key in list(self.pool.running()):
            if self.lease_deadline.get(key, now + 1) < now:
                self._stop(key, TaskError("LeaseExpired", "the worker could not renew its lease in time"))

    def _stop(self, key: Key, reason: TaskError) -> None:
        if self._ready.pop(key, None) is not None:  # claimed ahead, never started: forget it
            self.held.pop(key, None)
            self.lease_deadline.pop(key, None)
            log.warning("dropped task instance %d attempt %d before it started: %s", *key, reason.message)
            return
        if self.pool.kill(key, reason):
            self.abandoned.add(key)
            log.warning("stopping task instance %d attempt %d: %s", key[0], key[1], reason.message)
