"""Several servers on one Postgres: cross-replica wake-ups, and giving up on a lost database."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import grpc

from tests.conftest import _admin_execute, free_port
from tests.helpers import WEIR, dag_spec, py, running_server
from tests.integration.test_api import poll
from weir import Client
from weir.v1 import worker_pb2 as wpb
from weir.v1 import worker_pb2_grpc as wgrpc


def test_a_poll_on_one_replica_wakes_when_another_queues_work(pg_url: str, tmp_path: Path) -> None:
    # The safety poll is pushed out of the way: only LISTEN/NOTIFY can wake the poll in time.
    slow_safety = {"safety_poll_seconds": 60}
    with (
        running_server(pg_url, tmp_path / "a", **slow_safety) as a,
        running_server(pg_url, tmp_path / "b", **slow_safety) as b,
    ):
        with Client(b.address) as client:
            client.register_dags([dag_spec("d", py("t"))])
        stub = wgrpc.WorkerServiceStub(grpc.insecure_channel(a.address))
        stub.RegisterWorker(wpb.RegisterWorkerRequest(worker_id="w1", queues=["default"]))
        got: list[str] = []
        waited: list[float] = []

        def long_poll() -> None:
            started = time.monotonic()
            got.extend(t.task_id for t in poll(stub, wait=30))
            waited.append(time.monotonic() - started)

        thread = threading.Thread(target=long_poll)
        thread.start()
        time.sleep(0.5)
        with Client(b.address) as client:
            client.trigger("d")
        thread.join(40)
        assert got == ["t"]
        assert waited[0] < 10, f"woken after {waited[0]:.1f}s: not by the other replica's notification"


def test_the_server_exits_nonzero_when_the_database_stays_unreachable(pg_url: str, tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    port = free_port()
    env = {"WEIR_DB_UNAVAILABLE_EXIT_SECONDS": "2", "WEIR_SWEEP_SECONDS": "0.2", "WEIR_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [WEIR, "server", "--db", pg_url, "--port", str(port), "--bind", "127.0.0.1"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    try:
        with Client(f"127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    client.list_dags()
                    break
                except Exception:
                    time.sleep(0.1)
        admin = os.environ["WEIR_TEST_DATABASE_URL"]
        name = make_url(pg_url).database
        _admin_execute(admin, f'DROP DATABASE "{name}" WITH (FORCE)')
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr
    assert "unreachable" in stderr and "WEIR_DB_UNAVAILABLE_EXIT_SECONDS" in stderr
    assert "Traceback" not in stderr
