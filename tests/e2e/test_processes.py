"""Real `weir` processes on free ports: the example DAGs, isolation, shutdown."""

from __future__ import annotations

import itertools
import signal
import subprocess
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, free_port
from tests.helpers import WEIR, Proc, spawn, wait_until
from weir import Client
from weir.states import RunState, TaskState

pytestmark = pytest.mark.e2e


@dataclass
class Cluster:
    server: Proc
    workers: list[Proc]
    address: str
    client: Client
    tmp: Path
    db_url: str

    def add_worker(self, dags: Path, *extra: str) -> Proc:
        worker = spawn(
            f"worker{len(self.workers)}",
            ["worker", "--dags", str(dags), "--server", self.address, *extra],
            self.tmp,
        )
        self.workers.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()}" for p in [self.server, *self.workers])


def start_cluster(
    db_url: str, tmp: Path, dags: Path, *worker_args: str, env: dict[str, str] | None = None
) -> Cluster:
    """`weir db upgrade`, a server on a free port, and one worker on `dags`."""
    upgrade = subprocess.run(
        [WEIR, "db", "upgrade", "--db", db_url], capture_output=True, text=True, check=False
    )
    assert upgrade.returncode == 0, upgrade.stderr + upgrade.stdout
    port = free_port()
    server = spawn("server", ["server", "--db", db_url, "--port", str(port), "--bind", "127.0.0.1"], tmp, env)
    address = f"127.0.0.1:{port}"
    client = Client(address, timeout=10)
    wait_until(lambda: client.list_dags() is not None, what="server up")
    cluster = Cluster(server, [], address, client, tmp, db_url)
    args = ["worker", "--dags", str(dags), "--server", address, "--concurrency", "4", *worker_args]
    cluster.workers.append(spawn("worker0", args, tmp, env))
    return cluster


def one_dag_cluster(tmp: Path, source: str, env: dict[str, str] | None = None) -> Cluster:
    """A SQLite server and one worker on a DAG folder holding `source`, its DAGs registered."""
    dags = tmp / "dags"
    dags.mkdir()
    (dags / "dag.py").write_text(source)
    cluster = start_cluster(f"sqlite:///{tmp / 'weir.db'}", tmp, dags, env=env)
    wait_until(cluster.client.list_dags, what="DAG registered")
    return cluster


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'weir.db'}"
    return str(request.getfixturevalue("pg_empty_url"))


@pytest.fixture
def examples_cluster(backend_url: str, tmp_path: Path) -> Iterator[Cluster]:
    cluster = start_cluster(backend_url, tmp_path, EXAMPLES)
    try:
        wait_until(lambda: len(cluster.client.list_dags()) == 3, what="examples registered")
        yield cluster
    finally:
        stop_all(cluster)


def stop_all(cluster: Cluster) -> None:
    codes = [w.stop() for w in cluster.workers]
    code = cluster.server.stop()
    cluster.client.close()
    assert codes == [0] * len(codes), cluster.logs()
    assert code == 0, cluster.logs()


def test_example_dags_run_to_success_with_results_and_logs(examples_cluster: Cluster) -> None:
    client = examples_cluster.client
    etl = client.trigger("etl_orders", {"min_amount": 10})
    fan = client.trigger("fanout_regions")
    bash = client.trigger("bash_pipeline")
    for run in (etl, fan, bash):
        final = client.wait(run.run_id, timeout=60)
        assert final.state is RunState.SUCCESS, examples_cluster.logs()

    results = client.results(etl.run_id)
    # Only paid orders of at least 10 survive cleaning; totals per customer, largest first.
    assert results["aggregate"] == {"barbara": 99.99, "ada": 62.0}
    assert results["load"]["rows"] == len(results["aggregate"])
    assert results["report"] == f"revenue loaded for run {etl.run_id}"
    assert "kept 3 of 7 orders (min_amount=10)" in client.logs(etl.run_id, "clean")
    assert "dropping order 4" in client.logs(etl.run_id, "clean")

    fan_results = client.results(fan.run_id)
    assert fan_results["combine"]["regions"] == 6
    assert {k for k in fan_results if k.startswith("measure_")} == {
        "measure_eu_west",
        "measure_eu_central",
        "measure_us_east",
        "measure_us_west",
        "measure_ap_south",
        "measure_ap_northeast",
    }

    bash_results = client.results(bash.run_id)
    assert bash_results["generate"] == "2000"
    assert bash_results["cleanup"] == "removed"
    assert "weir" in client.logs(bash.run_id, "count_words")


DAGS_THAT_MISBEHAVE = textwrap.dedent(
    """
    import os, signal, time
    from datetime import timedelta
    from weir import dag, task, bash_task

    @dag
    def misbehave():
        @task
        def exits():
            print("about to exit", flush=True)
            os._exit(3)

        @task
        def killed():
            os.kill(os.getpid(), signal.SIGKILL)

        @task(timeout=timedelta(seconds=1))
        def too_slow():
            print("sleeping", flush=True)
            time.sleep(60)

        @task
        def raises():
            raise ValueError("bad input row 7")

        slow_shell = bash_task("slow_shell", "sleep 60 & echo started child; wait", timeout=1)

        @task(trigger_rule="all_done")
        def afterwards():
            print("still here")
            return "fine"

        [exits(), killed(), too_slow(), raises(), slow_shell] >> afterwards()

    misbehave()
    """
)


def test_a_crashing_or_hanging_task_never_takes_the_worker_down(tmp_path: Path) -> None:
    cluster = one_dag_cluster(tmp_path, DAGS_THAT_MISBEHAVE)
    try:
        client = cluster.client
        run = client.trigger("misbehave")
        final = client.wait(run.run_id, timeout=60)
        tis = {t.task_id: t for t in client.task_instances(run.run_id)}
        errors = {k: t.error for k, t in tis.items()}
        assert tis["exits"].state is TaskState.FAILED and errors["exits"] is not None
        assert errors["exits"].type == "RunnerDied" and "exited with status 3" in errors["exits"].message
        assert errors["killed"] is not None and "SIGKILL" in errors["killed"].message
        assert errors["too_slow"] is not None and errors["too_slow"].type == "Timeout"
        assert errors["slow_shell"] is not None and errors["slow_shell"].type == "Timeout"
        assert errors["raises"] is not None and errors["raises"].type == "ValueError"
        assert "bad input row 7" in errors["raises"].message
        assert 'raise ValueError("bad input row 7")' in errors["raises"].traceback
        assert "Traceback" in client.logs(run.run_id, "raises")
        assert "about to exit" in client.logs(run.run_id, "exits")
        assert tis["afterwards"].state is TaskState.SUCCESS
        assert final.state is RunState.SUCCESS  # the all_done leaf succeeded
        assert cluster.workers[0].alive(), cluster.logs()
        # The timed-out shell's child was killed with its process group.
        ps = subprocess.run(["pgrep", "-f", "sleep 60"], capture_output=True, text=True, check=False)
        assert ps.stdout.strip() == "", f"orphaned processes: {ps.stdout}"
    finally:
        stop_all(cluster)


SLOW_DAG = textwrap.dedent(
    """
    import time
    from weir import dag, task

    @dag
    def slow():
        @task
        def nap():
            time.sleep(2)
            return "rested"
        nap()

    slow()
    """
)


def test_sigterm_lets_running_tasks_finish_before_the_worker_exits(tmp_path: Path) -> None:
    cluster = one_dag_cluster(tmp_path, SLOW_DAG)
    try:
        client = cluster.client
        run = client.trigger("slow")
        wait_until(
            lambda: client.task_instances(run.run_id)[0].state is TaskState.RUNNING, what="task running"
        )
        worker = cluster.workers[0]
        worker.signal(signal.SIGTERM)
        assert worker.popen.wait(30) == 0, cluster.logs()
        assert client.get_run(run.run_id).state is RunState.SUCCESS
        assert client.results(run.run_id) == {"nap": "rested"}
    finally:
        stop_all(cluster)


def test_server_refuses_an_unmigrated_database_with_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    proc = subprocess.run(
        [WEIR, "server", "--db", f"sqlite:///{db}", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "weir db upgrade" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_standalone_migrates_and_runs_the_examples(tmp_path: Path) -> None:
    port = free_port()
    proc = spawn(
        "standalone",
        ["standalone", "--dags", str(EXAMPLES), "--port", str(port), "--concurrency", "2"],
        tmp_path,
    )
    client = Client(f"127.0.0.1:{port}", timeout=10)
    try:
        wait_until(lambda: len(client.list_dags()) == 3, timeout=30, what="standalone up")
        run = client.trigger("etl_orders")
        assert client.wait(run.run_id, timeout=60).state is RunState.SUCCESS
        assert (tmp_path / "home" / "weir.db").exists()
    finally:
        client.close()
        code = proc.stop()
    assert code == 0, proc.output()


GIVE_BACK_DAG = textwrap.dedent(
    """
    import os, time
    from weir import dag, task

    @dag
    def handoff():
        @task
        def job():
            if os.environ.get("WEIR_TEST_SLOW"):
                time.sleep(120)
            return os.getpid()
        job()

    handoff()
    """
)


def test_a_stopping_worker_gives_unfinished_tasks_back_at_once(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "handoff.py").write_text(GIVE_BACK_DAG)
    db = f"sqlite:///{tmp_path / 'weir.db'}"
    cluster = start_cluster(db, tmp_path, dags)  # its first worker is not slow: stop it
    try:
        wait_until(lambda: "slots on queues" in cluster.workers[0].output(), what="first worker up")
        assert cluster.workers[0].stop() == 0
        slow = spawn(
            "slow-worker",
            ["worker", "--dags", str(dags), "--server", cluster.address],
            tmp_path,
            {"WEIR_TEST_SLOW": "1", "WEIR_SHUTDOWN_GRACE_SECONDS": "1"},
        )
        cluster.workers.append(slow)
        client = cluster.client
        wait_until(client.list_dags, what="DAG registered")
        run = client.trigger("handoff")
        wait_until(lambda: client.task_instances(run.run_id)[0].state is TaskState.RUNNING, what="running")
        stopped_at = time.monotonic()
        slow.signal(signal.SIGTERM)
        assert slow.popen.wait(30) == 0, slow.output()
        # Back in the queue well before its 30 s lease could have expired.
        wait_until(lambda: client.task_instances(run.run_id)[0].state is TaskState.QUEUED, timeout=10)
        assert time.monotonic() - stopped_at < 15
        assert "gave 1 running tasks back" in slow.output()
        cluster.add_worker(dags)
        final = client.wait(run.run_id, timeout=30)
        [ti] = client.task_instances(run.run_id)
        assert final.state is RunState.SUCCESS
        assert ti.try_number == 1  # a given-back attempt is not a failed try
    finally:
        stop_all(cluster)


def test_cancelling_a_run_kills_its_running_task(tmp_path: Path) -> None:
    cluster = one_dag_cluster(tmp_path, GIVE_BACK_DAG, {"WEIR_TEST_SLOW": "1", "WEIR_HEARTBEAT_SECONDS": "1"})
    client, address, worker = cluster.client, cluster.address, cluster.workers[0]
    try:
        run = client.trigger("handoff")
        wait_until(lambda: client.task_instances(run.run_id)[0].state is TaskState.RUNNING, what="running")
        out = subprocess.run(
            [WEIR, "runs", "cancel", run.run_id, "--server", address],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0 and "cancelled" in out.stdout, out.stderr
        [ti] = client.task_instances(run.run_id)
        assert (client.get_run(run.run_id).state, ti.state) == (RunState.FAILED, TaskState.REMOVED)
        wait_until(
            lambda: "the task was cancelled" in worker.output(), timeout=15, what="worker stops the task"
        )
        assert worker.alive()
    finally:
        stop_all(cluster)


def test_a_worker_that_cannot_renew_its_lease_stops_the_task_itself(tmp_path: Path) -> None:
    env = {"WEIR_TEST_SLOW": "1", "WEIR_LEASE_SECONDS": "3", "WEIR_HEARTBEAT_SECONDS": "1"}
    cluster = one_dag_cluster(tmp_path, GIVE_BACK_DAG, env)
    client, server, worker = cluster.client, cluster.server, cluster.workers[0]
    try:
        run = client.trigger("handoff")
        wait_until(lambda: client.task_instances(run.run_id)[0].state is TaskState.RUNNING, what="running")
        server.signal(signal.SIGSTOP)  # the server hangs: heartbeats go unanswered
        try:
            wait_until(
                lambda: "could not renew its lease in time" in worker.output(),
                timeout=15,
                what="local expiry",
            )
        finally:
            server.signal(signal.SIGCONT)
        assert worker.alive()
        # Once the server is back its reaper ends the attempt too; the task had no retries.
        final = client.wait(run.run_id, timeout=30)
        [ti] = client.task_instances(run.run_id)
        assert final.state is RunState.FAILED
        assert ti.error is not None and ti.error.type == "LeaseExpired"
    finally:
        stop_all(cluster)


CHAIN_DAG = textwrap.dedent(
    """
    from weir import DAG, task

    @task
    def step(n):
        return n + 1

    with DAG("steps", schedule=None):
        value = 0
        for i in range(5):
            value = step.override(task_id=f"s{i}")(value)
    """
)


def test_a_worker_waiting_for_work_claims_the_next_task_with_its_report(tmp_path: Path) -> None:
    cluster = one_dag_cluster(tmp_path, CHAIN_DAG)
    try:
        client = cluster.client
        run = client.trigger("steps")
        assert client.wait(run.run_id, timeout=60).state is RunState.SUCCESS, cluster.logs()
        assert client.results(run.run_id)["s4"] == 5
        tis = sorted(client.task_instances(run.run_id), key=lambda t: t.task_id)
        # Each downstream task was claimed by the transaction that recorded its
        # upstream's outcome: the report asked for work, no poll had to be woken.
        for up, down in itertools.pairwise(tis):
            assert down.started_at == up.ended_at, (up, down)
    finally:
        stop_all(cluster)


WIDE_DAG = textwrap.dedent(
    """
    from weir import DAG, task

    @task
    def noop():
        pass

    with DAG("wide", schedule=None, max_active_runs=10):
        for i in range(120):
            noop.override(task_id=f"w{i:03d}")()
    """
)


def largest_claim(client: Client, run_id: str) -> int:
    """The most tasks one claim took (a claim stamps its rows with one started_at)."""
    return max(Counter(ti.started_at for ti in client.task_instances(run_id)).values())


def test_a_worker_claims_ahead_of_its_runners_while_tasks_are_short(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "wide.py").write_text(WIDE_DAG)
    cluster = start_cluster(f"sqlite:///{tmp_path / 'weir.db'}", tmp_path, dags, "--concurrency", "2")
    try:
        client = cluster.client
        wait_until(client.list_dags, what="DAG registered")
        run = client.trigger("wide")
        assert client.wait(run.run_id, timeout=60).state is RunState.SUCCESS, cluster.logs()
        # Two runners, yet polls took more: tasks claimed ahead waited for the next free runner.
        assert largest_claim(client, run.run_id) > 2
        assert cluster.workers[0].stop() == 0
        cluster.add_worker(dags, "--concurrency", "2", "--prefetch", "0")
        again = client.trigger("wide")
        assert client.wait(again.run_id, timeout=60).state is RunState.SUCCESS, cluster.logs()
        assert largest_claim(client, again.run_id) <= 2
    finally:
        stop_all(cluster)


BEHIND_A_LONG_TASK_DAG = textwrap.dedent(
    """
    import time
    from weir import DAG, task

    @task
    def quick():
        pass

    @task
    def slow():
        time.sleep(3)

    with DAG("mixed", schedule=None):
        for i in range(30):
            quick.override(task_id=f"early_{i:02d}", priority=10)()
        slow.override(priority=5)()
        for i in range(3):
            quick.override(task_id=f"late_{i}", priority=1)()
    """
)


def test_tasks_claimed_ahead_of_a_long_task_go_back_to_the_queue_without_costing_a_try(
    tmp_path: Path,
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "mixed.py").write_text(BEHIND_A_LONG_TASK_DAG)
    cluster = start_cluster(f"sqlite:///{tmp_path / 'weir.db'}", tmp_path, dags, "--concurrency", "1")
    try:
        client = cluster.client
        wait_until(client.list_dags, what="DAG registered")
        run = client.trigger("mixed")
        assert client.wait(run.run_id, timeout=60).state is RunState.SUCCESS, cluster.logs()
        # The quick tasks claimed ahead of the slow one could not start for 3 s: they
        # went back to the queue (not charged a try) and ran once the runner was free.
        assert "claimed ahead back to the queue" in cluster.workers[0].output()
        late = [ti for ti in client.task_instances(run.run_id) if ti.task_id.startswith("late_")]
        assert [ti.try_number for ti in late] == [1, 1, 1]
    finally:
        stop_all(cluster)
