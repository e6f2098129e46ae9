"""The control plane: transactions plus what must happen after they commit.

gRPC services are thin wrappers over this class. Each operation runs one
store transaction on a database thread, then, on the event loop, wakes the
long-polls that can take newly queued work, arms timers for retries and
tells run watchers about finished runs. The transaction and its wake-ups run
shielded from the caller's cancellation: a client hanging up mid-call never
leaves committed work without its wake-up, nor claimed work undelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from weir.config import Settings
from weir.models import (
    AckStatus,
    Assignment,
    DagInfo,
    DagRun,
    LeaseStatus,
    LogChunk,
    OutcomeAck,
    RegisteredDag,
    TaskInstance,
    TaskOutcome,
    WorkerLimits,
)
from weir.server import claims, completion, leases, logs, queries, runs
from weir.server.catalog import Catalog
from weir.server.claims import ClaimRequest
from weir.server.clock import Clock
from weir.server.group_commit import GroupCommit, first_error
from weir.server.store import dags, workers
from weir.server.store import task_instances as tis
from weir.server.store.db import Database
from weir.server.waker import Waker
from weir.spec import DagSpec
from weir.states import RunState

log = logging.getLogger("weir.server")
T = TypeVar("T")

#: Longest a poll or a run wait is held by the server in one call.
MAX_WAIT = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Reported:
    """What one report call gets back: an ack per outcome, and the tasks its claim took."""

    acks: list[OutcomeAck]
    tasks: list[Assignment]
    #: The claim got fewer tasks than it asked for.
    short: bool = False


class RunWatch:
    """Wakes WaitDagRun calls when a run this replica finished ends."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}

    def subscribe(self, run_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events.setdefault(run_id, set()).add(event)
        return event

    def unsubscribe(self, run_id: str, event: asyncio.Event) -> None:
        waiting = self._events.get(run_id)
        if waiting is not None:
            waiting.discard(event)
            if not waiting:
                del self._events[run_id]

    def finished(self, run_ids: Sequence[str]) -> None:
        for run_id in run_ids:
            for event in self._events.get(run_id, ()):
                event.set()


class ControlPlane:
    def __init__(self, db: Database, clock: Clock, settings: Settings, *, version: str = "") -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.version = version
        self.catalog = Catalog()
        self.waker = Waker()
        self.run_watch = RunWatch()
        self.lease = timedelta(seconds=settings.lease_seconds)
        self._timers: set[asyncio.TimerHandle] = set()
        self._inflight: set[asyncio.Task[Any]] = set()
        # One transaction at a time for each: it makes each transaction larger,
        # and W3 ran 5 to 25 % faster than with two at a time (same-hour A/B). Two
        # at a time are safe (replicas do it): the deadlock they once hit on
        # the DAG row is gone (see dags.lock_for_runs).
        self._reports: GroupCommit[completion.Report, Reported] = GroupCommit(
            self._apply_reports,
            transactions=1,
            batch=500,
            what="worker reports",
            weight=lambda r: max(1, len(r.outcomes)),
        )
        # Triggers queue up to a limit: past it a caller is told to retry
        # (RESOURCE_EXHAUSTED) instead of waiting behind a backlog that only grows.
        self._triggers: GroupCommit[runs.TriggerRequest, DagRun] = GroupCommit(
            self._apply_triggers,
            transactions=1,
            batch=200,
            max_waiting=settings.max_waiting_triggers,
            what="triggers",
        )
        #: worker_id -> loop time its leases ran out; its polls parked before then get no work
        self._lapsed: dict[str, float] = {}
        #: Called with newly queued work per queue after it commits (other replicas).
        self.announce: Callable[[Mapping[str, int]], None] | None = None

    # -- plumbing --------------------------------------------------------------
    async def _shielded(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` to the end even if the caller is cancelled."""
        task = asyncio.ensure_future(work())
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    def _after_commit(
        self,
        queued: Mapping[str, int],
        retries: Sequence[tuple[str, datetime]] = (),
        finished_runs: Sequence[tuple[str, RunState]] = (),
    ) -> None:
        if queued:
            self._wake(queued)
        if retries:
            loop = asyncio.get_running_loop()
            now = self.clock.now()
            for queue, at in retries:
                handle = loop.call_later(max(0.0, (at - now).total_seconds()), self._wake_queue, queue)
                self._timers.add(handle)
        if finished_runs:
            self.run_watch.finished([run_id for run_id, _ in finished_runs])

    def _wake(self, queued: Mapping[str, int]) -> None:
        self.waker.notify(queued)
        if self.announce is not None:
            self.announce(queued)

    def _wake_queue(self, queue: str) -> None:
        now = asyncio.get_running_loop().time()
        self._timers = {h for h in self._timers if not h.cancelled() and h.when() > now}
        self._wake({queue: 1})

    async def drain(self) -> None:
        """Wait for shielded transactions still running (graceful shutdown)."""
        running = self._inflight | self._reports.inflight | self._triggers.inflight
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        for handle in self._timers:
            handle.cancel()

    # -- DAGs --------------------------------------------------------------------
    async def register_dags(self, specs: Sequence[DagSpec | dags.Prepared]) -> list[RegisteredDag]:
        def register_all(conn: Any, now: datetime) -> list[RegisteredDag]:
            out = []
            for spec in specs:
                r = dags.register(conn, now, spec)
                out.append(RegisteredDag(dag_id=r.dag_id, version=r.version, created=r.created))
            return out

        registered = await self._shielded(lambda: self.db.write(register_all, self.clock.now()))
        # Compile the versions now, off the event loop, rather than in the first
        # trigger's transaction (a 10,000-task DAG takes ~0.1 s to load and compile).
        plain = [s.spec if isinstance(s, dags.Prepared) else s for s in specs]
        versions = [(r.version, s) for r, s in zip(registered, plain, strict=True)]
        await asyncio.to_thread(self.catalog.learn, versions)
        return registered

    async def list_dags(self, tags: Sequence[str]) -> list[DagInfo]:
        return await self.db.read(dags.list_all, list(tags))

    async def get_dag(self, dag_id: str) -> tuple[DagInfo, DagSpec]:
        return await self.db.read(queries.dag_with_spec, self.catalog, dag_id)

    async def set_paused(self, dag_id: str, paused: bool) -> DagInfo:
        async def work() -> DagInfo:
            queued = await self.db.write(runs.set_paused, self.clock.now(), self.catalog, dag_id, paused)
            self._after_commit(queued)
            info, _ = await self.get_dag(dag_id)
            return info

        return await self._shielded(work)

    # -- runs ----------------------------------------------------------------------
    async def trigger(
        self, dag_id: str, *, conf: dict[str, Any], run_id: str | None, logical_date: datetime | None
    ) -> DagRun:
        """Create a run; triggers arriving together share one transaction (group commit)."""
        request = runs.TriggerRequest(dag_id=dag_id, conf=conf, run_id=run_id, logical_date=logical_date)
        [run] = first_error(await self._triggers.submit([request]))
        return run

    async def _apply_triggers(self, requests: list[runs.TriggerRequest]) -> list[DagRun | Exception]:
        done = await self.db.write(runs.trigger_for_api, self.clock.now(), self.catalog, requests)
        self.catalog.remember(done.created)
        self._after_commit(done.queued)
        return list(done.results)

    async def get_run(self, run_id: str) -> DagRun:
        return await self.db.read(queries.run, run_id)

    async def list_runs(self, *, dag_id: str | None, states: Sequence[RunState], limit: int) -> list[DagRun]:
        return await self.db.read(queries.list_runs, dag_id=dag_id, states=states, limit=limit)

    async def wait_run(self, run_id: str, timeout: float) -> DagRun:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout, MAX_WAIT.total_seconds())
        while True:
            event = self.run_watch.subscribe(run_id)
            try:
                run = await self.get_run(run_id)
                remaining = deadline - loop.time()
                if run.state.finished or remaining <= 0:
                    return run
                # Another replica may finish the run: look again now and then.
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, 2.0))
                except TimeoutError:
                    pass
            finally:
                self.run_watch.unsubscribe(run_id, event)

    async def task_instances(self, run_id: str, *, include_results: bool) -> list[TaskInstance]:
        return await self.db.read(queries.task_instances, run_id, include_results=include_results)

    async def logs(
        self, *, run_id: str, task_id: str, map_index: int, try_number: int, after: int
    ) -> queries.Logs:
        return await self.db.read(
            queries.logs,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
            try_number=try_number,
            after=after,
        )

    # -- workers -------------------------------------------------------------------
    async def register_worker(
        self,
        *,
        worker_id: str,
        hostname: str,
        pid: int,
        queues: Sequence[str],
        concurrency: int,
        version: str,
    ) -> WorkerLimits:
        await self.db.write(
            workers.upsert,
            self.clock.now(),
            worker_id=worker_id,
            hostname=hostname,
            pid=pid,
            queues=queues,
            concurrency=concurrency,
            version=version,
        )
        return WorkerLimits(
            worker_id=worker_id,
            lease=self.lease,
            heartbeat_interval=timedelta(seconds=self.settings.heartbeat_seconds),
            max_result_bytes=self.settings.max_result_bytes,
            server_version=self.version,
        )

    async def poll(
        self, *, worker_id: str, queues: Sequence[str], slots: int, wait: float
    ) -> list[Assignment]:
        """Claim up to `slots` tasks, holding the call up to `wait` seconds while there are none."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + min(wait, MAX_WAIT.total_seconds())
        # A new poll shows the worker is alive again.
        self._lapsed.pop(worker_id, None)
        while True:
            # Subscribe before claiming: work queued while the claim runs wakes us.
            waiter = self.waker.subscribe(queues, slots)
            try:
                if self._lapsed.get(worker_id, began) > began:
                    # The worker's leases ran out while this poll was parked: it may
                    # be frozen (SIGSTOP, a long GC pause), holding its connection
                    # open. Work given to it now would be lost again; pass the
                    # wake-up on to a poll that can take it.
                    self.waker.unsubscribe(waiter)
                    self.waker.notify(dict.fromkeys(queues, 1))
                    return []
                claimed: list[Assignment] = []
                if self.waker.worth_claiming(queues):
                    before = self.waker.snapshot(queues)
                    claimed = await self._claim_or_release(worker_id, queues, slots)
                    if len(claimed) < slots:
                        # Fewer than asked: the claim took all there was, so the
                        # worker's next poll need not claim until more is queued.
                        self.waker.found_empty(before)
                if claimed:
                    self.waker.unsubscribe(waiter)
                    if len(claimed) >= slots:
                        # More may be waiting than the polls woken so far can take.
                        self.waker.notify(dict.fromkeys(queues, 1))
                    return claimed
                remaining = deadline - loop.time()
                if remaining <= 0 or not await waiter.wait(remaining):
                    return []
            finally:
                self.waker.unsubscribe(waiter)

    async def _claim_or_release(self, worker_id: str, queues: Sequence[str], slots: int) -> list[Assignment]:
        return await self._delivered(self._claim(worker_id, queues, slots), lambda claimed: claimed)

    async def _delivered(self, work: Awaitable[T], claimed: Callable[[T], Sequence[Assignment]]) -> T:
        """Await `work`, which claims tasks; if the caller hangs up first, the work
        still finishes and what it claimed goes back to the queue at once."""
        future = asyncio.ensure_future(work)
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:

            def give_back(done: asyncio.Future[T]) -> None:
                if not done.cancelled() and done.exception() is None and (taken := claimed(done.result())):
                    release = asyncio.ensure_future(self.release([a.key for a in taken]))
                    self._inflight.add(release)
                    release.add_done_callback(self._inflight.discard)

            future.add_done_callback(give_back)
            raise

    async def _claim(self, worker_id: str, queues: Sequence[str], slots: int) -> list[Assignment]:
        # The claim is one statement; what follows only reads immutable facts
        # (run params, finished upstream results), so it needs no transaction.
        return await self.db.single(
            claims.claim,
            self.clock.now(),
            self.catalog,
            worker_id=worker_id,
            queues=queues,
            limit=slots,
            lease=self.lease,
        )

    async def release(self, refs: Sequence[tuple[int, int]]) -> int:
        """Give running attempts back to the queue at once (a poll nobody received,
        or a worker shutting down); returns how many were given back."""

        async def work() -> int:
            queued = await self.db.write(tis.release, self.clock.now(), refs)
            self._after_commit(queued)
            return sum(queued.values())

        return await self._shielded(work)

    async def sweep(self, fn: Callable[..., completion.Completion], now: datetime, *, limit: int) -> int:
        """Run one expiry sweep (leases, start timeouts) and its wake-ups."""

        async def work() -> int:
            done = await self.db.write(fn, now, self.catalog, limit=limit)
            lapsed_at = asyncio.get_running_loop().time()
            if self._lapsed:
                # No poll is parked longer than MAX_WAIT: older marks can go.
                horizon = lapsed_at - MAX_WAIT.total_seconds()
                self._lapsed = {w: t for w, t in self._lapsed.items() if t > horizon}
            for worker_id in done.lapsed_workers:
                self._lapsed[worker_id] = lapsed_at
            self._after_commit(done.queued, done.retries, done.finished_runs)
            return done.ended

        return await self._shielded(work)

    async def cancel(self, run_id: str) -> DagRun:
        async def work() -> DagRun:
            done = await self.db.write(completion.cancel_run, self.clock.now(), self.catalog, run_id)
            self._after_commit(done.queued, done.retries, done.finished_runs)
            return await self.get_run(run_id)

        return await self._shielded(work)

    async def heartbeat(self, *, worker_id: str, running: Sequence[tuple[int, int]]) -> list[LeaseStatus]:
        return await self._shielded(
            lambda: self.db.write(
                leases.heartbeat, self.clock.now(), worker_id=worker_id, running=running, lease=self.lease
            )
        )

    async def complete(self, outcomes: Sequence[TaskOutcome]) -> list[OutcomeAck]:
        """Apply outcomes; reports arriving together share one transaction (group commit)."""
        return (await self.report(outcomes)).acks

    async def report(self, outcomes: Sequence[TaskOutcome], claim: ClaimRequest | None = None) -> Reported:
        """Apply a worker's outcomes and, with `claim`, claim its next tasks in the
        same transaction (never waiting for work). Reports arriving together share
        one transaction (group commit)."""
        # Queues known empty are claimed from only if the outcomes queue work there
        # (work queued by others since moves the queue's generation on, and wakes polls).
        known_empty = False
        if claim is not None:
            self._lapsed.pop(claim.worker_id, None)  # a worker asking for work is alive
            known_empty = not self.waker.worth_claiming(claim.queues)
        request = completion.Report(outcomes, claim, only_if_queued=known_empty)
        if claim is None:
            [done] = first_error(await self._reports.submit([request]))
            return done
        before = self.waker.snapshot(claim.queues)

        async def work() -> Reported:
            [done] = first_error(await self._reports.submit([request]))
            if done.short:
                # The claim took all there was: the worker's next poll need not claim.
                self.waker.found_empty(before)
            return done

        return await self._delivered(work(), lambda done: done.tasks)

    async def _apply_reports(self, reports: list[completion.Report]) -> list[Reported | Exception]:
        now, limit = self.clock.now(), self.settings.max_result_bytes
        done: completion.ReportsApplied | None = None
        committed: completion.HopCommitted | None = None
        if (
            len(reports) == 1
            and not self.db.is_sqlite
            and completion.may_report_alone(self.catalog, reports[0])
        ):
            # A chain's hop: one statement that commits by itself, when it can be.
            alone = await self.db.single(
                completion.report_alone,
                now,
                self.catalog,
                reports[0],
                max_result_bytes=limit,
                lease=self.lease,
            )
            if isinstance(alone, completion.HopCommitted):
                committed = alone
            else:
                done = alone
        if done is None:
            done = await self.db.write(
                completion.report,
                now,
                self.catalog,
                reports,
                max_result_bytes=limit,
                lease=self.lease,
                committed=committed,
            )
        applied = done.applied
        self._after_commit(applied.queued, applied.retries, applied.finished_runs)
        out: list[Reported | Exception] = []
        acks = iter(applied.acks)  # one per outcome, in order
        for r, tasks, short in zip(reports, done.claimed, done.short, strict=True):
            out.append(Reported([next(acks) for _ in r.outcomes], tasks, short))
        return out

    async def append_logs(self, chunks: Sequence[LogChunk]) -> list[AckStatus]:
        return await self._shielded(lambda: self.db.write(logs.append, self.clock.now(), chunks))
