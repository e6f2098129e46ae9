"""WorkerService: what workers call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from weir import _convert as cv
from weir.errors import InvalidArgument, LeaseLost
from weir.models import AckStatus, LogChunk
from weir.server.api import validate
from weir.server.api.errors import rpc, rpc_stream
from weir.server.claims import ClaimRequest
from weir.server.plane import ControlPlane
from weir.v1 import worker_pb2 as wpb
from weir.v1 import worker_pb2_grpc as wgrpc

Ctx = grpc.aio.ServicerContext[Any, Any]

#: A poll may claim at most this many tasks at once.
MAX_SLOTS = 1000


class WorkerService(wgrpc.WorkerServiceServicer):
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        #: Set when the server shuts down: report streams end between requests.
        self._closing: asyncio.Future[None] | None = None

    def close_streams(self) -> None:
        """End every report stream once the request it is handling (if any) is answered:
        a stream is a call that would otherwise hold the server's shutdown for its grace."""
        closing = self._closing_future()
        if not closing.done():
            closing.set_result(None)

    def _closing_future(self) -> asyncio.Future[None]:
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_future()
        return self._closing

    @rpc
    async def RegisterWorker(
        self, request: wpb.RegisterWorkerRequest, context: Ctx
    ) -> wpb.RegisterWorkerResponse:
        limits = await self.plane.register_worker(
            worker_id=validate.required_id(request.worker_id, "worker_id"),
            hostname=request.hostname,
            pid=request.pid,
            queues=validate.queues(request.queues),
            concurrency=request.concurrency,
            version=request.version,
        )
        return cv.limits_to_proto(limits)

    @rpc
    async def PollTasks(self, request: wpb.PollTasksRequest, context: Ctx) -> wpb.PollTasksResponse:
        worker_id = validate.required_id(request.worker_id, "worker_id")
        if not 1 <= request.free_slots <= MAX_SLOTS:
            raise InvalidArgument(f"must be between 1 and {MAX_SLOTS}", field="free_slots")
        wait = validate.seconds(request, "wait", default=0.0, field="wait")
        tasks = await self.plane.poll(
            worker_id=worker_id, queues=validate.queues(request.queues), slots=request.free_slots, wait=wait
        )
        return wpb.PollTasksResponse(tasks=[cv.assignment_to_proto(t) for t in tasks])

    @rpc
    async def Heartbeat(self, request: wpb.HeartbeatRequest, context: Ctx) -> wpb.HeartbeatResponse:
        leases = await self.plane.heartbeat(
            worker_id=validate.required_id(request.worker_id, "worker_id"),
            running=[(r.task_instance_id, r.attempt) for r in request.running],
        )
        return wpb.HeartbeatResponse(leases=[cv.lease_to_proto(ls) for ls in leases])

    @rpc
    async def CompleteTask(self, request: wpb.CompleteTaskRequest, context: Ctx) -> wpb.CompleteTaskResponse:
        validate.required_id(request.worker_id, "worker_id")
        if not request.HasField("outcome"):
            raise InvalidArgument("is required", field="outcome")
        outcome = validate.converted(cv.outcome_from_proto, request.outcome, field="outcome.outcome")
        [ack] = await self.plane.complete([outcome])
        if ack.status is AckStatus.STALE:
            raise LeaseLost(
                f"task instance {ack.task_instance_id} attempt {ack.attempt}: {ack.message}; "
                "nothing was changed"
            )
        return wpb.CompleteTaskResponse(ack=cv.ack_to_proto(ack))

    @rpc
    async def CompleteTasks(
        self, request: wpb.CompleteTasksRequest, context: Ctx
    ) -> wpb.CompleteTasksResponse:
        return await self._complete_tasks(request)

    @rpc_stream
    async def CompleteTasksStream(
        self, requests: AsyncIterator[wpb.CompleteTasksRequest], context: Ctx
    ) -> AsyncIterator[wpb.CompleteTasksResponse]:
        closing = self._closing_future()
        while not closing.done():
            read = asyncio.ensure_future(context.read())
            try:
                await asyncio.wait((read, closing), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not read.done():
                    read.cancel()
            if not read.done() or read.cancelled():
                # Shutting down, between requests: end the stream (OK); the worker
                # sends its next report on a new stream, or to another server.
                return
            request = read.result()
            if request is grpc.aio.EOF:
                return
            yield await self._complete_tasks(request)

    async def _complete_tasks(self, request: wpb.CompleteTasksRequest) -> wpb.CompleteTasksResponse:
        worker_id = validate.required_id(request.worker_id, "worker_id")
        outcomes = [
            validate.converted(cv.outcome_from_proto, o, field=f"outcomes[{i}].outcome")
            for i, o in enumerate(request.outcomes)
        ]
        claim = None
        if request.claim_slots:
            if request.claim_slots > MAX_SLOTS:
                raise InvalidArgument(f"must be at most {MAX_SLOTS}", field="claim_slots")
            claim = ClaimRequest(worker_id, validate.queues(request.queues), request.claim_slots)
        if not outcomes and claim is None:
            return wpb.CompleteTasksResponse()
        done = await self.plane.report(outcomes, claim)
        return wpb.CompleteTasksResponse(
            acks=[cv.ack_to_proto(a) for a in done.acks],
            tasks=[cv.assignment_to_proto(t) for t in done.tasks],
        )

    @rpc
    async def AppendLogs(self, request: wpb.AppendLogsRequest, context: Ctx) -> wpb.AppendLogsResponse:
        validate.required_id(request.worker_id, "worker_id")
        chunks = [LogChunk(c.task_instance_id, c.attempt, c.data) for c in request.chunks]
        statuses = await self.plane.append_logs(chunks) if chunks else []
        return wpb.AppendLogsResponse(statuses=[cv.ack_status_to_proto(s) for s in statuses])

    @rpc
    async def ReleaseTasks(self, request: wpb.ReleaseTasksRequest, context: Ctx) -> wpb.ReleaseTasksResponse:
        validate.required_id(request.worker_id, "worker_id")
        refs = [(r.task_instance_id, r.attempt) for r in request.attempts]
        released = await self.plane.release(refs) if refs else 0
        return wpb.ReleaseTasksResponse(released=released)
