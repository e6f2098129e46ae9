"""The worker's gRPC link to the server, with retries while the server is away."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import grpc

from weir import _convert as cv
from weir.client import CHANNEL_OPTIONS, auth_metadata
from weir.errors import from_rpc_error
from weir.models import (
    AckStatus,
    Assignment,
    LeaseStatus,
    LogChunk,
    OutcomeAck,
    RegisteredDag,
    TaskOutcome,
    WorkerLimits,
)
from weir.spec import DagSpec
from weir.v1 import control_pb2 as cpb
from weir.v1 import control_pb2_grpc as cgrpc
from weir.v1 import worker_pb2 as wpb
from weir.v1 import worker_pb2_grpc as wgrpc

log = logging.getLogger("weir.worker")

RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
CALL_TIMEOUT = 30.0


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first, self.cap, self.attempt = first, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


class Connection:
    def __init__(self, address: str, *, worker_id: str, token: str | None = None) -> None:
        self.address = address
        self.worker_id = worker_id
        self._metadata = auth_metadata(token)
        keepalive = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000)]
        self._channel = grpc.aio.insecure_channel(address, options=[*CHANNEL_OPTIONS, *keepalive])
        self._worker = wgrpc.WorkerServiceStub(self._channel)
        self._control = cgrpc.ControlServiceStub(self._channel)
        self.closing = False
        #: The report stream (CompleteTasksStream), open between reports; None until
        #: the first report, and after a failure (the next report opens another).
        self._stream: Any = None
        #: A report is on the stream now: another goes as a unary call.
        self._stream_busy = False
        #: False once the server answered that it has no report stream (an older server).
        self.streams = True

    async def _call(
        self,
        method: Any,
        request: Any,
        *,
        timeout: float = CALL_TIMEOUT,
        retry: bool = True,
        before_retry: Callable[[Any], None] | None = None,
    ) -> Any:
        """Call `method`, retrying while the server is unreachable; `before_retry`
        may change the request first (what must not be asked twice)."""
        backoff = Backoff()
        while True:
            try:
                return await method(request, timeout=timeout, metadata=self._metadata)
            except grpc.aio.AioRpcError as exc:
                if not retry or exc.code() not in RETRYABLE or self.closing:
                    raise from_rpc_error(exc) from None
                if before_retry is not None:
                    before_retry(request)
                delay = backoff.next()
                if backoff.attempt in (1, 5) or backoff.attempt % 20 == 0:
                    log.warning("server %s unreachable (%s); retrying", self.address, exc.details())
                await asyncio.sleep(delay)

    async def register(
        self,
        *,
        hostname: str,
        pid: int,
        queues: Sequence[str],
        concurrency: int,
        version: str,
        dag_ids: Sequence[str],
    ) -> WorkerLimits:
        request = wpb.RegisterWorkerRequest(
            worker_id=self.worker_id,
            hostname=hostname,
            pid=pid,
            queues=list(queues),
            concurrency=concurrency,
            version=version,
            dag_ids=list(dag_ids),
        )
        return cv.limits_from_proto(await self._call(self._worker.RegisterWorker, request))

    async def register_dags(self, specs: Sequence[DagSpec]) -> list[RegisteredDag]:
        request = cpb.RegisterDagsRequest(dags=[cv.dag_spec_to_proto(s) for s in specs])
        response = await self._call(self._control.RegisterDags, request)
        return [cv.registered_from_proto(r) for r in response.dags]

    async def poll(self, *, queues: Sequence[str], free_slots: int, wait: float) -> list[Assignment]:
        request = wpb.PollTasksRequest(
            worker_id=self.worker_id,
            queues=list(queues),
            free_slots=free_slots,
            wait=cv.dur(timedelta(seconds=wait)),
        )
        response = await self._call(self._worker.PollTasks, request, timeout=wait + CALL_TIMEOUT, retry=False)
        return [cv.assignment_from_proto(t) for t in response.tasks]

    async def heartbeat(self, running: Sequence[tuple[int, int]]) -> list[LeaseStatus]:
        request = wpb.HeartbeatRequest(
            worker_id=self.worker_id,
            running=[wpb.AttemptRef(task_instance_id=i, attempt=a) for i, a in running],
        )
        response = await self._call(self._worker.Heartbeat, request, retry=False)
        return [cv.lease_from_proto(ls) for ls in response.leases]

    async def complete(
        self, outcomes: Sequence[TaskOutcome], *, claim_slots: int = 0, queues: Sequence[str] = ()
    ) -> tuple[list[OutcomeAck], list[Assignment]]:
        """Report outcomes and, with `claim_slots`, claim up to that many tasks in the same call."""
        request = wpb.CompleteTasksRequest(
            worker_id=self.worker_id,
            outcomes=[cv.outcome_to_proto(o) for o in outcomes],
            claim_slots=claim_slots,
            queues=list(queues),
        )

        def claim_nothing(request: wpb.CompleteTasksRequest) -> None:
            # The lost call may have claimed tasks already (their leases run out
            # and they run again); asking again would claim more that nobody runs.
            request.claim_slots = 0

        response = await self._call(self._report, request, before_retry=claim_nothing)
        return [cv.ack_from_proto(a) for a in response.acks], [
            cv.assignment_from_proto(t) for t in response.tasks
        ]

    async def _report(
        self, request: wpb.CompleteTasksRequest, *, timeout: float, metadata: Any
    ) -> wpb.CompleteTasksResponse:
        """One CompleteTasks exchange: on the report stream while the server has one
        and no other report is on it, else as a unary call."""
        if self.streams and not self._stream_busy:
            self._stream_busy = True
            try:
                return await self._over_stream(request, timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                    raise
                self.streams = False
                log.info("server %s has no report stream: reporting with unary calls", self.address)
            finally:
                self._stream_busy = False
        response: wpb.CompleteTasksResponse = await self._worker.CompleteTasks(
            request, timeout=timeout, metadata=metadata
        )
        return response

    async def _over_stream(
        self, request: wpb.CompleteTasksRequest, *, timeout: float, metadata: Any
    ) -> wpb.CompleteTasksResponse:
        """Send `request` on the report stream (opening one if needed) and read its
        response. Any failure closes the stream: a response still in flight must
        never be read as the answer to the next request."""
        call = self._stream
        if call is None or call.done():
            call = self._stream = self._worker.CompleteTasksStream(metadata=metadata)
        answered = False
        try:
            async with asyncio.timeout(timeout):
                await call.write(request)
                response = await call.read()
            if response is grpc.aio.EOF:
                # Ended between requests (the server is shutting down): nothing was applied.
                raise _status(grpc.StatusCode.UNAVAILABLE, "the server closed the report stream")
            answered = True
            return response  # type: ignore[no-any-return]
        except TimeoutError:
            raise _status(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout:.0f}s") from None
        except asyncio.InvalidStateError:
            # The server ended the stream just before this write (RPC already finished).
            raise _status(grpc.StatusCode.UNAVAILABLE, "the server closed the report stream") from None
        finally:
            if not answered:
                call.cancel()
                if self._stream is call:
                    self._stream = None

    async def append_logs(self, chunks: Sequence[LogChunk]) -> list[AckStatus]:
        request = wpb.AppendLogsRequest(
            worker_id=self.worker_id,
            chunks=[
                wpb.LogChunk(task_instance_id=c.task_instance_id, attempt=c.attempt, data=c.data)
                for c in chunks
            ],
        )
        response = await self._call(self._worker.AppendLogs, request)
        return [cv.ack_status_from_proto(s) for s in response.statuses]

    async def release(self, refs: Sequence[tuple[int, int]]) -> int:
        request = wpb.ReleaseTasksRequest(
            worker_id=self.worker_id,
            attempts=[wpb.AttemptRef(task_instance_id=i, attempt=a) for i, a in refs],
        )
        response = await self._call(self._worker.ReleaseTasks, request, retry=False)
        return int(response.released)

    async def close(self) -> None:
        self.closing = True
        if self._stream is not None:
            self._stream.cancel()
        await self._channel.close()


def _status(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """A failed call's error, for a failure seen on a stream (retried like a call's)."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
