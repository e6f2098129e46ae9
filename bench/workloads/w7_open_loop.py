"""W7 open loop: runs offered at a fixed rate whatever happens; schedule-to-start per step, and the knee.

Offers do not wait for earlier ones to finish (an open loop, as real
traffic): a generator fires TriggerDagRun calls at fixed instants from an
asyncio process and keeps them all in flight. Each run has one no-op task.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from bench.cluster import Cluster, wait_until
from bench.database import seconds
from bench.harness import Harness
from bench.model import Case, CaseResult, Metric, Values, Workload, fmt, percentile
from weir.client import CHANNEL_OPTIONS
from weir.v1 import control_pb2 as cpb
from weir.v1 import control_pb2_grpc as cgrpc

DAG = "bench_single"
WORKERS = 4
#: The issue's steps, plus 100 to place the knee between 50 and 200.
STEPS = (50, 100, 200, 1000)
DURATION = 30.0
DRAIN = 180.0


class Offers:
    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.latency: list[float] = []
        self.lag: list[float] = []
        self.failures = 0


async def _offer(address: str, rate: float, duration: float) -> Offers:
    offers = Offers()
    channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    stub = cgrpc.ControlServiceStub(channel)

    async def one(run_id: str, at: float) -> None:
        request = cpb.TriggerDagRunRequest(dag_id=DAG, run_id=run_id, conf_json=b"{}")
        try:
            await stub.TriggerDagRun(request, timeout=DRAIN)
        except grpc.aio.AioRpcError:
            offers.failures += 1
            return
        offers.latency.append(time.time() - at)

    calls = []
    start = time.time() + 0.2
    try:
        for i in range(round(rate * duration)):
            at = start + i / rate
            delay = at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            offers.lag.append(max(0.0, time.time() - at))
            run_id = f"open-{i:06d}"
            offers.at[run_id] = at
            calls.append(asyncio.create_task(one(run_id, at)))
        await asyncio.gather(*calls)
    finally:
        await channel.close()
    return offers


def step(c: Cluster, rate: float, duration: float) -> Values:
    offers = asyncio.run(_offer(c.address, rate, duration))
    accepted = len(offers.at) - offers.failures
    try:
        wait_until(lambda: c.db.count_finished_runs(DAG) >= accepted, timeout=DRAIN, interval=0.5)
    except TimeoutError:
        pass  # what has not started by now counts as still waiting
    observed = time.time()
    tasks = {t.run_id: t for t in c.db.tasks(dag_id=DAG) if t.run_id in offers.at}
    failed = sum(1 for r in c.db.runs(dag_id=DAG) if r.run_id in offers.at and r.state == "failed")
    started = [t for t in tasks.values() if t.started_at is not None]
    # Runs never started count as waiting until the end of the observation: a
    # lower bound, so a collapsed step still shows how far behind it fell.
    from_offer = []
    for run_id, at in offers.at.items():
        t = tasks.get(run_id)
        began = t.started_at.timestamp() if t is not None and t.started_at is not None else observed
        from_offer.append((began - at) * 1000)
    from_queue = [seconds(t.started_at, t.queued_at) * 1000 for t in started]
    first_offer = min(offers.at.values())
    last_start = max((t.started_at.timestamp() for t in started if t.started_at), default=first_offer)
    return {
        "offered": rate,
        "achieved": len(started) / max(1e-9, last_start - first_offer),
        "s2s_p50": percentile(from_offer, 50),
        "s2s_p99": percentile(from_offer, 99),
        "queue_p50": percentile(from_queue, 50),
        "queue_p99": percentile(from_queue, 99),
        "trigger_p99": percentile(offers.latency, 99) * 1000,
        "started": len(started) / len(offers.at) * 100,
        "failed": failed / len(offers.at) * 100,
        "lag_p99": percentile(offers.lag, 99) * 1000,
    }


def case(rate: float, duration: float) -> Case:
    metrics = (
        Metric("offered", "offered", "tasks/s"),
        Metric("achieved", "tasks started per second", "tasks/s", higher_is_better=True),
        Metric("s2s_p50", "schedule-to-start p50 (offered → started, or → end if never)", "ms"),
        Metric("s2s_p99", "schedule-to-start p99 (offered → started, or → end if never)", "ms"),
        Metric("queue_p50", "queued_at → started_at p50", "ms"),
        Metric("queue_p99", "queued_at → started_at p99", "ms"),
        Metric("trigger_p99", "TriggerDagRun latency p99", "ms"),
        Metric("started", "offered runs started within the drain time", "%"),
        Metric("failed", "offered runs that ended failed (no-op tasks: only leases lost)", "%"),
        Metric("lag_p99", "generator lag p99 (offer sent late)", "ms"),
    )

    def measure(h: Harness) -> Values:
        with h.cluster(f"w7-{rate:g}", [DAG], workers=WORKERS) as c:
            return step(c, rate, duration)

    return Case(f"{rate:,g} tasks/s for {duration:g} s", metrics, measure, setup=f"{WORKERS} workers")


def knee(results: list[CaseResult]) -> list[str]:
    """The first step Weir does not keep up with: < 90 % of the offer started per second, or p99 > 1 s."""
    rows = []
    for r in results:
        offered = r.summary("offered")
        achieved, p99, started = r.summary("achieved"), r.summary("s2s_p99"), r.summary("started")
        if offered is None or achieved is None or p99 is None or started is None:
            continue
        keeps_up = achieved.median >= 0.9 * offered.median and p99.median <= 1000 and started.median >= 99
        rows.append((offered.median, keeps_up, achieved.median, p99.median))
    if not rows:
        return ["Knee: no step produced figures."]
    rows.sort()
    good = [r for r in rows if r[1]]
    bad = [r for r in rows if not r[1]]
    if not bad:
        return [f"Knee: not reached; Weir kept up with every step up to {fmt(rows[-1][0])} tasks/s."]
    first_bad = bad[0]
    below = [r for r in good if r[0] < first_bad[0]]
    held = (
        f"keeps up with {fmt(below[-1][0])} tasks/s (p99 {fmt(below[-1][3])} ms)"
        if below
        else "keeps up with no step"
    )
    return [
        f"Knee: Weir {held}, but not with {fmt(first_bad[0])} tasks/s: {fmt(first_bad[2])} tasks/s "
        f"started, p99 schedule-to-start {fmt(first_bad[3])} ms (median of runs; keeping up means "
        "≥ 90 % of the offered rate started, p99 ≤ 1 s, ≥ 99 % started)."
    ]


WORKLOAD = Workload(
    id="W7",
    title="open loop",
    method=(
        f"One-task runs are triggered at a fixed rate for {DURATION:g} s per step (open loop: a "
        f"generator in the harness fires TriggerDagRun at fixed instants and never waits for earlier "
        f"calls), {WORKERS} workers. Schedule-to-start is the task's `started_at` minus the instant "
        "the run was offered (so it includes any backlog of trigger calls at the server); "
        "runs that never started count with the time until the end of the observation (a lower "
        "bound). `queued_at → started_at` is measured from the server's `queued_at`, which it stamps "
        f"when the trigger transaction begins. After the step, runs get up to {DRAIN:g} s to finish. "
        "The generator shares the machine's 2 cores; its lag is reported. Steps 50, 200 and 1,000 "
        "tasks/s are the issue's; 100 is added to place the knee."
    ),
    cases=lambda smoke: [case(20, 2.0)] if smoke else [case(r, DURATION) for r in STEPS],
    conclude=knee,
)
