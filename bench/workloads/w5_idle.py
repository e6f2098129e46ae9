"""W5 idle: many long-polling workers and no work; what does waiting cost, and how fast is a wake-up?

The pollers are simulated in this process, 1,000 asyncio loops each on its
own gRPC connection, behaving like an idle `weir worker`: register, then
PollTasks with the worker's default wait, again as soon as a poll returns
empty, with the worker's keepalive settings. A task they receive is
reported done at once.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import grpc

from bench.cluster import Cluster
from bench.database import seconds
from bench.harness import Harness
from bench.model import Case, Metric, Target, Values, Workload
from bench.procs import cpu_seconds, rss_mb
from weir import _convert as cv
from weir.client import CHANNEL_OPTIONS
from weir.config import Settings
from weir.v1 import control_pb2 as cpb
from weir.v1 import control_pb2_grpc as cgrpc
from weir.v1 import worker_pb2 as wpb
from weir.v1 import worker_pb2_grpc as wgrpc

DAG = "bench_single"
#: What `weir worker` waits per poll unless configured otherwise.
POLL_WAIT = float(Settings.model_fields["poll_wait_seconds"].default)
#: As weir.worker.connection sets them.
KEEPALIVE = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000)]


@dataclass
class Pollers:
    polls: int = 0
    errors: int = 0
    received: asyncio.Queue[tuple[str, float]] = field(default_factory=asyncio.Queue)


async def _poller(stub: Any, worker_id: str, stats: Pollers) -> None:
    request = wpb.PollTasksRequest(
        worker_id=worker_id, queues=["default"], free_slots=1, wait=cv.dur(timedelta(seconds=POLL_WAIT))
    )
    while True:
        try:
            response = await stub.PollTasks(request, timeout=POLL_WAIT + 30)
        except grpc.aio.AioRpcError:
            stats.errors += 1
            await asyncio.sleep(1)
            continue
        stats.polls += 1
        for t in response.tasks:
            stats.received.put_nowait((t.run_id, time.time()))
            outcome = wpb.TaskOutcome(
                task_instance_id=t.task_instance_id,
                attempt=t.attempt,
                outcome=wpb.OUTCOME_SUCCESS,
                result_json=b"null",
            )
            await stub.CompleteTasks(wpb.CompleteTasksRequest(worker_id=worker_id, outcomes=[outcome]))


async def _idle(c: Cluster, *, polls: int, idle: float, settle: float, wakes: int) -> Values:
    assert c.server is not None
    server = c.server.pid
    rss_alone = rss_mb(server)
    channels = [
        grpc.aio.insecure_channel(
            c.address, options=[*CHANNEL_OPTIONS, *KEEPALIVE, ("weir.bench.poller", i)]
        )  # a distinct argument: its own connection, as a separate worker would have
        for i in range(polls)
    ]
    stubs = [wgrpc.WorkerServiceStub(ch) for ch in channels]
    control_channel = grpc.aio.insecure_channel(c.address, options=CHANNEL_OPTIONS)
    control = cgrpc.ControlServiceStub(control_channel)
    stats = Pollers()
    pollers: list[asyncio.Task[None]] = []
    try:
        for start in range(0, polls, 100):
            await asyncio.gather(
                *(
                    stubs[i].RegisterWorker(
                        wpb.RegisterWorkerRequest(
                            worker_id=f"idle-{i}",
                            hostname=socket.gethostname(),
                            queues=["default"],
                            concurrency=1,
                            version="bench",
                        ),
                        timeout=60,
                    )
                    for i in range(start, min(polls, start + 100))
                )
            )
        pollers = [asyncio.create_task(_poller(stubs[i], f"idle-{i}", stats)) for i in range(polls)]
        await asyncio.sleep(settle)

        cpu0, tx0, polls0, t0 = (
            cpu_seconds(server),
            await asyncio.to_thread(c.db.transactions),
            stats.polls,
            time.monotonic(),
        )
        await asyncio.sleep(idle)
        cpu1, tx1, polls1, t1 = (
            cpu_seconds(server),
            await asyncio.to_thread(c.db.transactions),
            stats.polls,
            time.monotonic(),
        )
        rss = rss_mb(server)

        client_ms = []
        run_ids = []
        for k in range(wakes):
            run_id = f"wake-{k}"
            sent = time.time()
            await control.TriggerDagRun(
                cpb.TriggerDagRunRequest(dag_id=DAG, run_id=run_id, conf_json=b"{}"), timeout=30
            )
            got_run, got_at = await asyncio.wait_for(stats.received.get(), 30)
            if got_run != run_id:
                raise RuntimeError(f"expected {run_id}, a poller got {got_run}")
            client_ms.append((got_at - sent) * 1000)
            run_ids.append(run_id)
            await asyncio.sleep(0.5)  # the poller reports, then polls again
    finally:
        for p in pollers:
            p.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)
        for ch in [*channels, control_channel]:
            await ch.close()
    wake_db = sorted(seconds(t.started_at, t.queued_at) * 1000 for t in c.db.tasks(run_ids=run_ids))
    elapsed = t1 - t0
    return {
        "rss": rss,
        "rss_alone": rss_alone,
        "cpu": (cpu1 - cpu0) / elapsed * 100,
        "tx_per_s": (tx1 - tx0) / elapsed if c.db.is_postgres else float("nan"),
        "polls_per_s": (polls1 - polls0) / elapsed,
        "wake": wake_db[len(wake_db) // 2],
        "wake_client": sorted(client_ms)[len(client_ms) // 2],
        "poll_errors": float(stats.errors),
    }


def case(*, smoke: bool) -> Case:
    # Settle past Postgres's 10 s idle flush of backend statistics (PGSTAT_IDLE_INTERVAL):
    # sooner, the registrations' transactions land in the idle window's count.
    polls, idle, settle, wakes = (20, 2.0, 1.0, 2) if smoke else (1000, 60.0, 12.0, 9)
    metrics = (
        Metric("rss", f"server RSS with {polls:,} idle polls", "MiB", target=Target("<", 150)),
        Metric("rss_alone", "server RSS before the polls", "MiB"),
        Metric("cpu", "server CPU while idle", "% of a core", target=Target("<", 2)),
        Metric("tx_per_s", "database transactions", "/s", target=Target("<=", 1)),
        Metric("polls_per_s", "PollTasks calls answered", "/s"),
        Metric("wake", "wake-up: queued_at → started_at (median)", "ms", target=Target("<=", 5)),
        Metric("wake_client", "wake-up seen by the client: trigger sent → task received (median)", "ms"),
        Metric("poll_errors", "failed polls", "calls"),
    )

    def measure(h: Harness) -> Values:
        with h.cluster("w5-idle", [DAG], workers=0) as c:
            c.register_dags()
            return asyncio.run(_idle(c, polls=polls, idle=idle, settle=settle, wakes=wakes))

    return Case(f"{polls:,} idle long-polls for {idle:g} s", metrics, measure, setup="simulated workers")


WORKLOAD = Workload(
    id="W5",
    title="idle",
    method=(
        "1,000 simulated idle workers, each on its own gRPC connection from one asyncio process, "
        f"long-poll a server with no work, as `weir worker` does: PollTasks with its default wait "
        f"({POLL_WAIT:g} s), again as soon as a poll returns, worker keepalives. After 12 s to settle "
        "(Postgres flushes an idle backend's statistics within 10 s, so the registrations are counted "
        "before), "
        "the server's CPU (utime + stime from /proc) and the database's transactions (pg_stat_database "
        "xact_commit + xact_rollback, read from another database; pg_stat_statements is not preloaded "
        "here, so statements are not counted one by one) are measured over 60 s; RSS is the server's "
        "VmRSS at the end. Then one single-task run is triggered at a time (9 times) and the wake-up "
        "is that task's `started_at - queued_at`: from the start of the trigger transaction that queued it "
        "to the claim by a woken poll."
    ),
    cases=lambda smoke: [case(smoke=smoke)],
)
