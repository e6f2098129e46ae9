"""Kill workers, restart servers, cut database connections: nothing is lost or applied twice.

Each test prints its figures (lost, duplicates, tasks, faults injected and
tasks that ran more than once, which at-least-once execution allows).
Run alone with `pytest -m faults -s` to watch them.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultCluster, PrivatePostgres, fault_cluster
from tests.helpers import wait_until
from weir.states import RunState, TaskState

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(300)]

TASKS = 2000


@pytest.fixture(scope="module")
def pg() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres().init()
    try:
        yield cluster
    finally:
        cluster.destroy()


def report(capsys: pytest.CaptureFixture[str], name: str, line: str) -> None:
    with capsys.disabled():
        print(f"\n[faults] {name}: {line}")


def inject_while_running(
    cluster: FaultCluster, run_id: str, times: int, every: float, fault: Callable[[int], None]
) -> int:
    """Call fault(i) every `every` seconds until done `times` times or the run ends."""
    client = cluster.client()
    done = 0
    try:
        while done < times:
            time.sleep(every)
            if client.get_run(run_id).state.finished:
                break
            fault(done)
            done += 1
    finally:
        client.close()
    return done


def finish(cluster: FaultCluster, run_id: str, timeout: float = 180, server: int = 0) -> RunState:
    client = cluster.client(server)
    try:
        return client.wait(run_id, timeout=timeout).state
    finally:
        client.close()


def assert_nothing_lost(
    cluster: FaultCluster,
    run_id: str,
    capsys: pytest.CaptureFixture[str],
    name: str,
    server: int = 0,
    **faults: int,
) -> None:
    """Wait for the burst run, print its figures, and check every task succeeded exactly once."""
    state = finish(cluster, run_id, server=server)
    figures = cluster.figures([run_id])
    report(capsys, name, figures.line(**faults))
    assert state is RunState.SUCCESS, cluster.logs()
    assert (figures.lost, figures.duplicates, figures.tasks) == (0, 0, TASKS)


def test_sigkill_random_workers_twenty_times(pg: PrivatePostgres, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with fault_cluster(pg, tmp_path, TASKS) as cluster:
        client = cluster.start()
        run = client.trigger("burst")
        rng = random.Random(7)

        def kill_one(_: int) -> None:
            # A worker that is running tasks right now, so every kill interrupts work.
            busy = wait_until(cluster.busy_workers, timeout=30, interval=0.02, what="a busy worker")
            victim = rng.choice(busy)
            cluster.kill_worker(victim)
            cluster.restart_worker(victim)

        kills = inject_while_running(cluster, run.run_id, times=20, every=0.35, fault=kill_one)
        assert_nothing_lost(cluster, run.run_id, capsys, "sigkill workers", kills=kills)
        assert kills == 20, "the run ended before every kill: make it longer"


def test_restart_the_server_five_times(pg: PrivatePostgres, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with fault_cluster(pg, tmp_path, TASKS) as cluster:
        client = cluster.start()
        run = client.trigger("burst")

        def restart(i: int) -> None:
            # Alternate a clean stop and a crash.
            cluster.kill_server(0, signal.SIGTERM if i % 2 else signal.SIGKILL)
            cluster.start_server(0)

        restarts = inject_while_running(cluster, run.run_id, times=5, every=1.0, fault=restart)
        assert_nothing_lost(cluster, run.run_id, capsys, "server restarts", restarts=restarts)
        assert restarts == 5, "the run ended before every restart: make it longer"


def test_killed_connections_and_a_postgres_restart(pg: PrivatePostgres, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with fault_cluster(pg, tmp_path, TASKS) as cluster:
        client = cluster.start()
        run = client.trigger("burst")
        killed: list[int] = []

        def terminate(i: int) -> None:
            if i == 5:
                pg.restart()  # a full restart in the middle, with everything connected
                return
            rows = pg.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE application_name = 'weir-server' AND datname = '{cluster.db}'"
            )
            killed.append(len(rows))

        faults = inject_while_running(cluster, run.run_id, times=11, every=0.6, fault=terminate)
        assert_nothing_lost(
            cluster,
            run.run_id,
            capsys,
            "killed connections",
            terminations=len(killed),
            connections_killed=sum(killed),
            pg_restarts=int(faults > 5),
        )
        assert faults == 11, "the run ended before every fault: make it longer"
        assert sum(killed) > 0
        server = cluster.servers[0]
        assert server is not None and server.alive(), "the server must ride through the outage"


def test_a_frozen_workers_late_report_is_refused(pg: PrivatePostgres, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with fault_cluster(pg, tmp_path, 1) as cluster:
        cluster.env["WEIR_FAULT_SLOW"] = "2"
        cluster.start_server()
        frozen = cluster.start_worker()
        client = cluster.client()
        wait_until(client.list_dags, timeout=60, what="DAGs registered")
        run = client.trigger("slow_one")
        wait_until(
            lambda: client.task_instances(run.run_id)[0].state is TaskState.RUNNING,
            timeout=30,
            what="running",
        )
        cluster.workers[frozen].signal(signal.SIGSTOP)
        # The lease (3 s) runs out; the task goes back to the queue; another worker runs it.
        cluster.start_worker()
        state = finish(cluster, run.run_id, timeout=60)
        cluster.workers[frozen].signal(signal.SIGCONT)
        time.sleep(4)  # the frozen worker wakes, finds its lease gone, tries to report
        [ti] = client.task_instances(run.run_id, include_results=True)
        attempts = pg.execute(
            "SELECT a.attempt, a.outcome, a.error FROM task_attempts a ORDER BY a.attempt", db=cluster.db
        )
        starts = pg.execute("SELECT count(*) FROM executions WHERE kind = 'start'", db=cluster.db)[0][0]
        log = cluster.workers[frozen].output()
        report(
            capsys, "frozen worker", f"attempts={attempts} executions={starts} results=1 state={state.value}"
        )
        assert state is RunState.SUCCESS
        assert ti.state is TaskState.SUCCESS and ti.try_number == 2
        assert [(a, outcome) for a, outcome, _ in attempts] == [(1, "up_for_retry"), (2, "success")]
        assert "refused" in log or "no longer considers this attempt current" in log or "lease" in log, log


def test_two_replicas_and_one_dies(pg: PrivatePostgres, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with fault_cluster(pg, tmp_path, TASKS) as cluster:
        first, second = cluster.start_server(), cluster.start_server()
        a, b = cluster.address(first), cluster.address(second)
        # Each worker prefers one replica and fails over to the other (gRPC pick_first).
        cluster.start_worker(f"ipv4:{a},{b}")
        cluster.start_worker(f"ipv4:{b},{a}")
        cluster.start_worker(f"ipv4:{a},{b}")
        client = cluster.client(second)
        wait_until(client.list_dags, timeout=60, what="DAGs registered")
        run = client.trigger("burst")
        wait_until(
            lambda: sum(t.state is TaskState.SUCCESS for t in client.task_instances(run.run_id)) > TASKS // 4,
            timeout=120,
            what="a quarter done",
        )
        cluster.kill_server(first)
        assert_nothing_lost(
            cluster, run.run_id, capsys, "replica killed", server=second, replicas=2, killed=1
        )


def test_a_poison_task_stops_after_its_tries(pg: PrivatePostgres, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    with fault_cluster(pg, tmp_path, 1) as cluster:
        client = cluster.start()
        stop = threading.Event()

        def supervise() -> None:  # restart workers the poison task killed, like systemd would
            while not stop.is_set():
                for i, w in enumerate(cluster.workers):
                    if not w.alive():
                        cluster.restart_worker(i)
                time.sleep(0.2)

        supervisor = threading.Thread(target=supervise, daemon=True)
        supervisor.start()
        try:
            run = client.trigger("poison")
            state = finish(cluster, run.run_id, timeout=120)
        finally:
            stop.set()
            supervisor.join(5)
        tis = {t.task_id: t for t in client.task_instances(run.run_id)}
        poison = tis.pop("kill_my_worker")
        attempts = pg.execute(
            "SELECT a.outcome FROM task_attempts a JOIN task_instances ti ON ti.id = a.ti_id "
            "WHERE ti.task_id = 'kill_my_worker' ORDER BY a.attempt",
            db=cluster.db,
        )
        report(
            capsys,
            "poison task",
            f"attempts={len(attempts)} poison={poison.state.value} bystanders_ok="
            f"{sum(t.state is TaskState.SUCCESS for t in tis.values())}/{len(tis)} run={state.value}",
        )
        assert poison.state is TaskState.FAILED and poison.try_number == 3
        assert [a[0] for a in attempts] == ["up_for_retry", "up_for_retry", "failed"]
        assert poison.error is not None and poison.error.type == "LeaseExpired"
        assert all(t.state is TaskState.SUCCESS for t in tis.values())
        assert state is RunState.FAILED
