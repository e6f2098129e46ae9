"""Factories and process helpers shared by integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from weir.config import Settings
from weir.config import load as load_settings
from weir.spec import BashCommand, DagSpec, PythonCall, TaskSpec
from weir.states import TriggerRule

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
WEIR = str(Path(sys.executable).parent / "weir")


# -- specs -----------------------------------------------------------------------


def py(task_id: str, *upstream: str, refs: Sequence[str] = (), **options: Any) -> TaskSpec:
    """A Python task spec whose positional arguments are the results of `refs`."""
    args = [{"ref": r} for r in refs]
    return TaskSpec(
        task_id=task_id,
        body=PythonCall(arguments={"args": args, "kwargs": {}}, callable=f"tests:{task_id}"),
        upstream_task_ids=tuple(dict.fromkeys([*upstream, *refs])),
        **options,
    )


def sh(task_id: str, command: str, *upstream: str, **options: Any) -> TaskSpec:
    return TaskSpec(
        task_id=task_id, body=BashCommand(command=command), upstream_task_ids=tuple(upstream), **options
    )


def dag_spec(dag_id: str, *tasks: TaskSpec, **options: Any) -> DagSpec:
    return DagSpec(dag_id=dag_id, tasks=tuple(tasks), **options)


def chain(dag_id: str, n: int, **task_options: Any) -> DagSpec:
    tasks = [py("t0", **task_options)] + [py(f"t{i}", f"t{i - 1}", **task_options) for i in range(1, n)]
    return dag_spec(dag_id, *tasks)


def wide(dag_id: str, n: int, **task_options: Any) -> DagSpec:
    return dag_spec(dag_id, *(py(f"t{i}", **task_options) for i in range(n)))


def fan_in(dag_id: str, n: int, rule: TriggerRule = TriggerRule.ALL_SUCCESS) -> DagSpec:
    leaves = [py(f"up{i}") for i in range(n)]
    return dag_spec(dag_id, *leaves, py("join", *(t.task_id for t in leaves), trigger_rule=rule))


def with_options(spec: DagSpec, **options: Any) -> DagSpec:
    return replace(spec, **options)


# -- an in-process server on a real socket ------------------------------------------------


@dataclass
class ServerThread:
    """A weir Server on its own event loop in a background thread."""

    settings: Settings
    address: str = ""
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    server: Any = None
    _thread: threading.Thread | None = None

    def start(self) -> ServerThread:
        from weir.server.app import Server

        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = Server(self.settings)
            try:
                bound = self.loop.run_until_complete(self.server.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            self.address = f"127.0.0.1:{bound.port}"
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="weir-test-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.call(self.server.stop(grace=1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)


def settings_for(db_url: str, tmp: Path, **overrides: Any) -> Settings:
    return load_settings(home=str(tmp), database_url=db_url, grpc_port=0, grpc_bind="127.0.0.1", **overrides)


@contextlib.contextmanager
def running_server(db_url: str, tmp: Path, **overrides: Any) -> Iterator[ServerThread]:
    srv = ServerThread(settings_for(db_url, tmp, **overrides)).start()
    try:
        yield srv
    finally:
        srv.stop()


# -- real processes ----------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 20) -> int:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(10)


#: Every process spawned by a test; tests/conftest.py kills leftovers after each test.
SPAWNED: list[Proc] = []


def spawn(name: str, args: Sequence[str], tmp: Path, env: dict[str, str] | None = None) -> Proc:
    log_path = tmp / f"{name}.log"
    out = log_path.open("wb")
    full_env = {**os.environ, "WEIR_HOME": str(tmp / "home"), "PYTHONUNBUFFERED": "1", **(env or {})}
    popen = subprocess.Popen([WEIR, *args], stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=str(REPO))
    proc = Proc(name, popen, log_path)
    SPAWNED.append(proc)
    return proc


def wait_until(predicate: Callable[[], T], timeout: float = 20, interval: float = 0.05, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # the thing waited for may not be up yet
            last = exc
            value = None  # type: ignore[assignment]
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or predicate}: {last}")


def seconds(s: float) -> timedelta:
    return timedelta(seconds=s)
