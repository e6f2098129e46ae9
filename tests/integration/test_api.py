"""The gRPC API over a real socket: status codes, long-polls, fencing, logs."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import event

from tests.helpers import ServerThread, chain, dag_spec, py, running_server, settings_for
from weir import Client
from weir import _convert as cv
from weir.errors import AlreadyExists, InvalidArgument, NotFound
from weir.states import RunState, TaskState
from weir.v1 import control_pb2 as cpb
from weir.v1 import control_pb2_grpc as cgrpc
from weir.v1 import worker_pb2 as wpb
from weir.v1 import worker_pb2_grpc as wgrpc


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[ServerThread]:
    with running_server(db_url, tmp_path) as srv:
        yield srv


@pytest.fixture
def client(server: ServerThread) -> Iterator[Client]:
    with Client(server.address, timeout=10) as c:
        yield c


@pytest.fixture
def worker(server: ServerThread) -> Iterator[wgrpc.WorkerServiceStub]:
    channel = grpc.insecure_channel(server.address)
    stub = wgrpc.WorkerServiceStub(channel)
    stub.RegisterWorker(wpb.RegisterWorkerRequest(worker_id="w1", queues=["default"], concurrency=4))
    yield stub
    channel.close()


def poll(stub: wgrpc.WorkerServiceStub, wait: float = 0, slots: int = 4) -> list[wpb.TaskAssignment]:
    request = wpb.PollTasksRequest(worker_id="w1", free_slots=slots, wait=cv.dur(timedelta(seconds=wait)))
    return list(stub.PollTasks(request, timeout=wait + 10).tasks)


def success(t: wpb.TaskAssignment, result: bytes = b"null", log: bytes = b"") -> wpb.CompleteTaskRequest:
    return wpb.CompleteTaskRequest(
        worker_id="w1",
        outcome=wpb.TaskOutcome(
            task_instance_id=t.task_instance_id,
            attempt=t.attempt,
            outcome=wpb.OUTCOME_SUCCESS,
            result_json=result,
            log_tail=log,
        ),
    )


def test_register_list_get_and_pause(client: Client) -> None:
    [reg] = client.register_dags([dag_spec("etl", py("extract"), py("load", refs=["extract"]), tags=("a",))])
    assert reg.created
    [again] = client.register_dags(
        [dag_spec("etl", py("extract"), py("load", refs=["extract"]), tags=("a",))]
    )
    assert not again.created and again.version.hash == reg.version.hash
    [info] = client.list_dags()
    assert (info.dag_id, info.task_count, info.is_paused) == ("etl", 2, False)
    assert client.list_dags(tags=["nope"]) == []
    detail = client.get_dag("etl")
    assert detail.spec is not None and [t.task_id for t in detail.spec.tasks] == ["extract", "load"]
    assert client.pause("etl").is_paused
    assert not client.unpause("etl").is_paused


def test_registration_compiles_the_version_as_the_database_would_load_it(
    client: Client, server: ServerThread
) -> None:
    from weir.server.catalog import Catalog

    spec = dag_spec("etl", py("extract"), py("load", refs=["extract"]), tags=("a",), params={"n": 1})
    [reg] = client.register_dags([spec])
    plane = server.server.plane
    learned = plane.catalog.dag(None, reg.version.id)  # no connection: it must be cached already
    loaded = plane.db.read_sync(Catalog().dag, reg.version.id)  # a fresh catalog reads the row
    assert learned == loaded
    assert learned.version == reg.version


def test_errors_carry_status_codes_and_name_the_field(client: Client, server: ServerThread) -> None:
    client.register_dags([dag_spec("d", py("a"))])
    with pytest.raises(NotFound, match="'nope' is not registered"):
        client.trigger("nope")
    with pytest.raises(NotFound):
        client.get_run("no-such-run")
    client.trigger("d", run_id="r1")
    with pytest.raises(AlreadyExists, match="r1"):
        client.trigger("d", run_id="r1")
    stub = cgrpc.ControlServiceStub(grpc.insecure_channel(server.address))
    with pytest.raises(grpc.RpcError) as raised:
        stub.TriggerDagRun(cpb.TriggerDagRunRequest(dag_id="d", conf_json=b"[1, 2]"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "conf_json" in raised.value.details()
    # A spec with a cycle is refused with the path of the offending field.
    bad = dag_spec("cyc", py("a", "b"), py("b", "a"))
    with pytest.raises(InvalidArgument, match=r"dags\[0\].tasks.*cycle"):
        client.register_dags([bad])
    with pytest.raises(InvalidArgument, match=r"dags\[0\].dag_id"):
        client.register_dags([dag_spec("has space", py("a"))])


def test_poll_holds_until_work_is_queued_and_wakes_at_once(
    client: Client, worker: wgrpc.WorkerServiceStub
) -> None:
    client.register_dags([dag_spec("d", py("a"))])
    assert poll(worker, wait=0) == []
    got: list[wpb.TaskAssignment] = []
    waited: list[float] = []

    def long_poll() -> None:
        started = time.monotonic()
        got.extend(poll(worker, wait=20))
        waited.append(time.monotonic() - started)

    thread = threading.Thread(target=long_poll)
    thread.start()
    time.sleep(0.5)  # the poll is now parked on the server
    assert thread.is_alive()
    client.trigger("d")
    thread.join(15)
    assert [t.task_id for t in got] == ["a"]
    # Woken by the trigger, not by the end of its 20 s wait.
    assert waited[0] < 10


def test_poll_with_nothing_queued_returns_empty_when_its_wait_ends(worker: wgrpc.WorkerServiceStub) -> None:
    started = time.monotonic()
    assert poll(worker, wait=0.3) == []
    assert time.monotonic() - started >= 0.3


def test_fencing_refuses_stale_reports_with_failed_precondition(
    client: Client, worker: wgrpc.WorkerServiceStub
) -> None:
    client.register_dags([chain("c", 2)])
    run = client.trigger("c")
    [t] = poll(worker)
    stale = success(t)
    stale.outcome.attempt = t.attempt + 5
    with pytest.raises(grpc.RpcError) as raised:
        worker.CompleteTask(stale)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert worker.CompleteTask(success(t, b"1")).ack.status == wpb.ACK_STATUS_ACCEPTED
    assert worker.CompleteTask(success(t, b"1")).ack.status == wpb.ACK_STATUS_DUPLICATE
    assert [x.task_id for x in poll(worker)] == ["t1"]
    states = {ti.task_id: ti.state for ti in client.task_instances(run.run_id)}
    assert states == {"t0": TaskState.SUCCESS, "t1": TaskState.RUNNING}


def test_batch_completion_acknowledges_each_outcome(client: Client, worker: wgrpc.WorkerServiceStub) -> None:
    client.register_dags([dag_spec("w", py("a"), py("b"), py("c"))])
    run = client.trigger("w")
    tasks = poll(worker)
    outcomes = [success(t).outcome for t in tasks]
    outcomes[1].attempt = 99
    response = worker.CompleteTasks(wpb.CompleteTasksRequest(worker_id="w1", outcomes=outcomes))
    assert [a.status for a in response.acks] == [
        wpb.ACK_STATUS_ACCEPTED,
        wpb.ACK_STATUS_STALE,
        wpb.ACK_STATUS_ACCEPTED,
    ]
    assert client.get_run(run.run_id).state is RunState.RUNNING


def report(
    stub: wgrpc.WorkerServiceStub, *done: wpb.TaskAssignment, claim: int = 0, worker_id: str = "w1"
) -> wpb.CompleteTasksResponse:
    outcomes = [success(t).outcome for t in done]
    request = wpb.CompleteTasksRequest(worker_id=worker_id, outcomes=outcomes, claim_slots=claim)
    response: wpb.CompleteTasksResponse = stub.CompleteTasks(request, timeout=10)
    return response


def test_a_report_claims_the_downstream_task_its_outcome_queued_without_waking_polls(
    client: Client, server: ServerThread, worker: wgrpc.WorkerServiceStub
) -> None:
    client.register_dags([chain("c", 3)])
    run = client.trigger("c")
    [t0] = poll(worker)
    # Another worker's poll is parked, waiting for work.
    other = wgrpc.WorkerServiceStub(grpc.insecure_channel(server.address))
    other.RegisterWorker(wpb.RegisterWorkerRequest(worker_id="w2", queues=["default"], concurrency=4))
    parked: list[list[wpb.TaskAssignment]] = []
    waited: list[float] = []

    def long_poll() -> None:
        started = time.monotonic()
        request = wpb.PollTasksRequest(worker_id="w2", free_slots=4, wait=cv.dur(timedelta(seconds=1.5)))
        parked.append(list(other.PollTasks(request, timeout=10).tasks))
        waited.append(time.monotonic() - started)

    thread = threading.Thread(target=long_poll)
    thread.start()
    time.sleep(0.3)
    response = report(worker, t0, claim=4)
    assert [a.status for a in response.acks] == [wpb.ACK_STATUS_ACCEPTED]
    [t1] = response.tasks
    assert t1.task_id == "t1" and t1.run_id == run.run_id and t1.try_number == 1
    thread.join(10)
    # The claim took the only task queued: the parked poll was left to its wait.
    assert parked == [[]] and waited[0] >= 1.4
    rows = {ti.task_id: ti for ti in client.task_instances(run.run_id)}
    assert rows["t0"].state is TaskState.SUCCESS and rows["t1"].state is TaskState.RUNNING
    # Claimed by the transaction that recorded the upstream's outcome.
    assert rows["t1"].started_at == rows["t0"].ended_at
    # The claimed attempt is a real one: reporting it moves the run on.
    [t2] = report(worker, t1, claim=1).tasks
    assert report(worker, t2).tasks == []
    assert client.wait(run.run_id, timeout=10).state is RunState.SUCCESS


def test_a_report_claims_at_most_its_slots_and_polls_are_woken_for_the_rest(
    client: Client, worker: wgrpc.WorkerServiceStub
) -> None:
    client.register_dags([dag_spec("fan", py("a"), py("b", "a"), py("c", "a"), py("d", "a"))])
    client.trigger("fan")
    [a] = poll(worker)
    claimed = report(worker, a, claim=2).tasks
    assert len(claimed) == 2
    # The third downstream task is still queued, for a poll.
    [rest] = poll(worker, wait=5)
    assert {t.task_id for t in [*claimed, rest]} == {"b", "c", "d"}
    # A report with no outcomes claims like a poll that does not wait.
    assert report(worker, claim=3).tasks == []


def test_report_claims_are_validated(worker: wgrpc.WorkerServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        worker.CompleteTasks(wpb.CompleteTasksRequest(worker_id="w1", claim_slots=5000))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "claim_slots" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        worker.CompleteTasks(wpb.CompleteTasksRequest(worker_id="w1", claim_slots=1, queues=["bad queue"]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "queues[0]" in raised.value.details()


class ReportStream:
    """CompleteTasksStream from a blocking client: send a request, read its answer."""

    def __init__(self, stub: wgrpc.WorkerServiceStub) -> None:
        self._requests: queue.SimpleQueue[wpb.CompleteTasksRequest | None] = queue.SimpleQueue()
        self.call = stub.CompleteTasksStream(iter(self._requests.get, None), timeout=30)

    def report(self, *done: wpb.TaskAssignment, claim: int = 0, **fields: Any) -> wpb.CompleteTasksResponse:
        outcomes = [success(t).outcome for t in done]
        self._requests.put(wpb.CompleteTasksRequest(outcomes=outcomes, claim_slots=claim, **fields))
        response: wpb.CompleteTasksResponse = next(self.call)
        return response

    def close(self) -> None:
        self._requests.put(None)


def test_reports_on_a_stream_are_answered_in_order_as_calls_would_be(
    client: Client, worker: wgrpc.WorkerServiceStub
) -> None:
    client.register_dags([chain("c", 3)])
    run = client.trigger("c")
    [t0] = poll(worker)
    stream = ReportStream(worker)
    # Each report is acknowledged, and its claim hands over the task its outcome readied.
    first = stream.report(t0, claim=1, worker_id="w1")
    assert [a.status for a in first.acks] == [wpb.ACK_STATUS_ACCEPTED]
    [t1] = first.tasks
    assert t1.task_id == "t1"
    # The same outcome again is acknowledged as a duplicate, in its ack: the stream goes on.
    again = stream.report(t0, worker_id="w1")
    assert [a.status for a in again.acks] == [wpb.ACK_STATUS_DUPLICATE]
    [t2] = stream.report(t1, claim=1, worker_id="w1").tasks
    assert stream.report(t2, worker_id="w1").tasks == []
    stream.close()
    assert list(stream.call) == []
    assert stream.call.code() == grpc.StatusCode.OK
    assert client.wait(run.run_id, timeout=10).state is RunState.SUCCESS


def test_a_bad_report_ends_the_stream_with_the_status_naming_the_field(
    client: Client, worker: wgrpc.WorkerServiceStub
) -> None:
    client.register_dags([dag_spec("d", py("a"))])
    client.trigger("d")
    [t] = poll(worker)
    stream = ReportStream(worker)
    with pytest.raises(grpc.RpcError) as raised:
        stream.report(t, claim=5000, worker_id="w1")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "claim_slots" in raised.value.details()
    # Nothing of the refused request was applied: a new stream reports the outcome.
    stream = ReportStream(worker)
    assert [a.status for a in stream.report(t, worker_id="w1").acks] == [wpb.ACK_STATUS_ACCEPTED]
    stream.close()
    with pytest.raises(grpc.RpcError) as raised:
        ReportStream(worker).report(t)  # no worker_id
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "worker_id" in raised.value.details()


def test_a_chain_hop_commits_by_itself_and_the_last_task_ends_the_run(
    client: Client, server: ServerThread, worker: wgrpc.WorkerServiceStub
) -> None:
    if server.server.db.is_sqlite:
        pytest.skip("the hop statement is Postgres's")
    client.register_dags([chain("c", 3)])
    run = client.trigger("c")
    [t0] = poll(worker, slots=2)  # fewer than asked: the queue is known empty
    ran: list[tuple[str, bool]] = []

    def note(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        ran.append((statement.split(None, 2)[1], not conn.connection.dbapi_connection.autocommit))

    event.listen(server.server.db.engine, "before_cursor_execute", note)
    stream = ReportStream(worker)
    [t1] = stream.report(t0, claim=1, worker_id="w1").tasks
    # One statement, outside a transaction: no BEGIN or COMMIT round trip.
    assert ran == [("ended", False)]
    [t2] = stream.report(t1, claim=1, worker_id="w1").tasks
    ran.clear()
    # The last task's report ends the run: one transaction does all of it.
    assert stream.report(t2, claim=1, worker_id="w1").tasks == []
    assert ran and all(in_transaction for _, in_transaction in ran)
    stream.close()
    assert client.wait(run.run_id, timeout=10).state is RunState.SUCCESS


def test_stopping_the_server_ends_idle_report_streams_at_once(db_url: str, tmp_path: Path) -> None:
    srv = ServerThread(settings_for(db_url, tmp_path)).start()
    try:
        stub = wgrpc.WorkerServiceStub(grpc.insecure_channel(srv.address))
        stream = ReportStream(stub)
        assert stream.report(worker_id="w1", claim=1).tasks == []
        started = time.monotonic()
        srv.call(srv.server.stop(grace=20))
        # Ended between requests, with OK: the worker opens a new stream (or calls) next time.
        assert time.monotonic() - started < 5
        assert list(stream.call) == []
        assert stream.call.code() == grpc.StatusCode.OK
    finally:
        srv.stop()


def test_heartbeat_renews_current_attempts_and_stops_others(
    client: Client, worker: wgrpc.WorkerServiceStub
) -> None:
    client.register_dags([dag_spec("d", py("a"))])
    client.trigger("d")
    [t] = poll(worker)
    response = worker.Heartbeat(
        wpb.HeartbeatRequest(
            worker_id="w1",
            running=[
                wpb.AttemptRef(task_instance_id=t.task_instance_id, attempt=t.attempt),
                wpb.AttemptRef(task_instance_id=t.task_instance_id, attempt=t.attempt + 1),
            ],
        )
    )
    current, other = response.leases
    assert current.directive == wpb.DIRECTIVE_CONTINUE
    assert current.lease_expires_at.ToDatetime() >= t.lease_expires_at.ToDatetime()
    assert other.directive == wpb.DIRECTIVE_STOP_LEASE_LOST


def test_logs_are_fenced_stored_and_paged(client: Client, worker: wgrpc.WorkerServiceStub) -> None:
    client.register_dags([dag_spec("d", py("a"))])
    run = client.trigger("d")
    [t] = poll(worker)
    response = worker.AppendLogs(
        wpb.AppendLogsRequest(
            worker_id="w1",
            chunks=[
                wpb.LogChunk(task_instance_id=t.task_instance_id, attempt=t.attempt, data=b"line one\n"),
                wpb.LogChunk(task_instance_id=t.task_instance_id, attempt=t.attempt + 1, data=b"not mine\n"),
            ],
        )
    )
    assert list(response.statuses) == [wpb.ACK_STATUS_ACCEPTED, wpb.ACK_STATUS_STALE]
    page = client.log_page(run.run_id, "a")
    assert (page.data, page.complete) == (b"line one\n", False)
    worker.CompleteTask(success(t, log=b"line two\n"))
    assert client.logs(run.run_id, "a") == "line one\nline two\n"
    rest = client.log_page(run.run_id, "a", after=page.cursor)
    assert (rest.data, rest.complete) == (b"line two\n", True)
    with pytest.raises(NotFound, match="no try 2"):
        client.logs(run.run_id, "a", try_number=2)


def test_wait_returns_when_the_run_ends(client: Client, worker: wgrpc.WorkerServiceStub) -> None:
    client.register_dags([dag_spec("d", py("a"))])
    run = client.trigger("d")
    [t] = poll(worker)
    with pytest.raises(TimeoutError):
        client.wait(run.run_id, timeout=0.2)
    threading.Timer(0.3, lambda: worker.CompleteTask(success(t, b'"done"'))).start()
    finished = client.wait(run.run_id, timeout=10)
    assert finished.state is RunState.SUCCESS
    assert client.results(run.run_id) == {"a": "done"}


def test_poll_validates_its_request(worker: wgrpc.WorkerServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        worker.PollTasks(wpb.PollTasksRequest(worker_id="w1", free_slots=0))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "free_slots" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        worker.PollTasks(wpb.PollTasksRequest(worker_id="", free_slots=1))
    assert "worker_id" in raised.value.details()


def test_health_service_reports_serving(server: ServerThread) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(server.address))
    assert (
        stub.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    )


def test_concurrent_triggers_share_transactions_and_fail_alone(client: Client, server: ServerThread) -> None:
    """Twenty triggers at once: the bad ones get their own error, the rest their own run."""
    client.register_dags([dag_spec("many", py("a"), max_active_runs=100)])
    outcomes: list[tuple[str, object]] = []

    def trigger(run_id: str, dag_id: str = "many") -> None:
        try:
            outcomes.append((run_id, client.trigger(dag_id, run_id=run_id)))
        except Exception as exc:
            outcomes.append((run_id, exc))

    threads = [threading.Thread(target=trigger, args=(f"r{i}",)) for i in range(18)]
    threads.append(threading.Thread(target=trigger, args=("ghost", "no_such_dag")))
    threads.append(threading.Thread(target=trigger, args=("r0",)))  # the same run_id again
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = sorted((run_id, type(o).__name__) for run_id, o in outcomes if isinstance(o, Exception))
    assert errors == [("ghost", "NotFound"), ("r0", "AlreadyExists")]
    created = sorted(o.run_id for _, o in outcomes if not isinstance(o, Exception))  # type: ignore[attr-defined]
    assert created == sorted(f"r{i}" for i in range(18))
    runs = client.list_runs(dag_id="many", limit=100)
    assert sorted(r.run_id for r in runs) == created
    assert all(r.state is RunState.RUNNING for r in runs)
