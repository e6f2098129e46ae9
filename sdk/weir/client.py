"""`Client`: drive a Weir server from Python (trigger, wait, inspect, pause)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

import grpc

from weir import _convert as cv
from weir.config import load as load_settings
from weir.dag import DAG
from weir.errors import InvalidArgument, from_rpc_error
from weir.models import DagInfo, DagRun, LogPage, RegisteredDag, TaskInstance
from weir.spec import DagSpec
from weir.states import RunState
from weir.v1 import control_pb2 as cpb
from weir.v1 import control_pb2_grpc as cgrpc

Resp = TypeVar("Resp")

# Results and listings can be large; the server caps results at 1 MiB each.
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class Client:
    """A connection to a Weir server's control API.

    Args:
        address: host:port of the server; defaults to `WEIR_SERVER`.
        token: bearer token; defaults to `WEIR_TOKEN`.
        timeout: deadline in seconds for each call (waits have their own).

    Errors are `weir.WeirError` subclasses: `NotFound`, `InvalidArgument`,
    `Unavailable` (server unreachable), ...
    """

    def __init__(
        self, address: str | None = None, *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        settings = load_settings()
        self.address = address or settings.server
        if token is None and settings.token is not None:
            token = settings.token.get_secret_value()
        self._metadata = auth_metadata(token)
        self._timeout = timeout
        self._channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self._stub = cgrpc.ControlServiceStub(self._channel)

    def _call(self, method: Any, request: Any, *, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    # -- DAGs ---------------------------------------------------------------
    def register_dags(self, dags: Iterable[DAG | DagSpec]) -> list[RegisteredDag]:
        """Store DAG definitions on the server (what `weir dags deploy` does)."""
        specs = [d.to_spec() if isinstance(d, DAG) else d for d in dags]
        request = cpb.RegisterDagsRequest(dags=[cv.dag_spec_to_proto(s) for s in specs])
        response = self._call(self._stub.RegisterDags, request)
        return [cv.registered_from_proto(r) for r in response.dags]

    def list_dags(self, *, tags: Sequence[str] = ()) -> list[DagInfo]:
        response = self._call(self._stub.ListDags, cpb.ListDagsRequest(tags=list(tags)))
        return [cv.dag_info_from_proto(d) for d in response.dags]

    def get_dag(self, dag_id: str) -> DagInfo:
        """A DAG with the spec of its latest version."""
        response = self._call(self._stub.GetDag, cpb.GetDagRequest(dag_id=dag_id))
        return cv.dag_info_from_proto(response.summary, cv.dag_spec_from_proto(response.spec))

    def pause(self, dag_id: str) -> DagInfo:
        """Stop starting new runs of the DAG."""
        return cv.dag_info_from_proto(self._call(self._stub.PauseDag, cpb.PauseDagRequest(dag_id=dag_id)))

    def unpause(self, dag_id: str) -> DagInfo:
        return cv.dag_info_from_proto(self._call(self._stub.UnpauseDag, cpb.UnpauseDagRequest(dag_id=dag_id)))

    # -- runs ---------------------------------------------------------------
    def trigger(
        self,
        dag_id: str,
        conf: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        logical_date: datetime | None = None,
    ) -> DagRun:
        """Start a manual run; `conf` overrides the DAG's params for this run."""
        if conf is not None and not isinstance(conf, dict):
            raise InvalidArgument("conf must be a dict", field="conf")
        request = cpb.TriggerDagRunRequest(
            dag_id=dag_id,
            run_id=run_id or "",
            conf_json=cv.json_bytes(conf or {}),
            logical_date=cv.ts(logical_date),
        )
        return cv.run_from_proto(self._call(self._stub.TriggerDagRun, request))

    def get_run(self, run_id: str) -> DagRun:
        return cv.run_from_proto(self._call(self._stub.GetDagRun, cpb.GetDagRunRequest(run_id=run_id)))

    def list_runs(
        self, dag_id: str | None = None, *, states: Sequence[RunState] = (), limit: int = 50
    ) -> list[DagRun]:
        """Runs, newest first."""
        request = cpb.ListDagRunsRequest(
            dag_id=dag_id or "", states=[cv.run_state(s) for s in states], limit=limit
        )
        return [cv.run_from_proto(r) for r in self._call(self._stub.ListDagRuns, request).runs]

    def wait(self, run_id: str, timeout: float | timedelta | None = None) -> DagRun:
        """Block until the run finishes and return it; TimeoutError after `timeout` seconds."""
        limit = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            # Each call is held by the server up to `chunk`, so a long wait
            # survives proxies that cut idle calls.
            chunk = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
            request = cpb.WaitDagRunRequest(run_id=run_id, timeout=cv.dur(timedelta(seconds=chunk)))
            run = cv.run_from_proto(self._call(self._stub.WaitDagRun, request, timeout=chunk + 10))
            if run.state.finished:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run.state} after {limit:g}s")

    def cancel(self, run_id: str) -> DagRun:
        """End a run now: waiting tasks are removed, running ones are killed by their workers."""
        return cv.run_from_proto(self._call(self._stub.CancelDagRun, cpb.CancelDagRunRequest(run_id=run_id)))

    def task_instances(self, run_id: str, *, include_results: bool = False) -> list[TaskInstance]:
        request = cpb.ListTaskInstancesRequest(run_id=run_id, include_results=include_results)
        response = self._call(self._stub.ListTaskInstances, request)
        return [cv.ti_from_proto(t) for t in response.task_instances]

    def results(self, run_id: str) -> dict[str, Any]:
        """task_id -> return value of every task of the run that succeeded."""
        return {
            t.task_id: t.result for t in self.task_instances(run_id, include_results=True) if t.has_result
        }

    # -- logs ---------------------------------------------------------------
    def log_page(
        self, run_id: str, task_id: str, *, try_number: int = 0, map_index: int = -1, after: int = 0
    ) -> LogPage:
        request = cpb.GetTaskLogsRequest(run_id=run_id, task_id=task_id, try_number=try_number, after=after)
        if map_index >= 0:
            request.map_index = map_index
        r = self._call(self._stub.GetTaskLogs, request)
        return LogPage(data=r.data, cursor=r.cursor, try_number=r.try_number, complete=r.complete)

    def logs(self, run_id: str, task_id: str, *, try_number: int = 0, map_index: int = -1) -> str:
        """Everything the task printed so far in one try (the latest by default)."""
        return b"".join(self.iter_logs(run_id, task_id, try_number=try_number, map_index=map_index)).decode(
            errors="replace"
        )

    def iter_logs(
        self,
        run_id: str,
        task_id: str,
        *,
        try_number: int = 0,
        map_index: int = -1,
        follow: bool = False,
        interval: float = 0.5,
    ) -> Iterator[bytes]:
        """Yield log data as it is stored; with `follow`, until the try ends."""
        cursor = 0
        while True:
            page = self.log_page(run_id, task_id, try_number=try_number, map_index=map_index, after=cursor)
            if page.data:
                yield page.data
            cursor = page.cursor
            try_number = page.try_number or try_number
            if not follow or (page.complete and not page.data):
                return
            if not page.data:
                time.sleep(interval)

    # -- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
