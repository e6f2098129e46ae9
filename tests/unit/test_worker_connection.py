"""The worker's connection: what it changes before retrying a report, and how it
uses the report stream (against small real gRPC servers that play the server's part)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from weir.errors import InvalidArgument
from weir.models import Outcome, TaskOutcome
from weir.v1 import worker_pb2 as wpb
from weir.worker.connection import Connection

OUTCOME = [TaskOutcome(1, 1, Outcome.SUCCESS)]
SERVICE = "weir.v1.WorkerService"


class LosesFirstAnswer:
    """Stands in for the CompleteTasks stub: the first call's answer never arrives."""

    def __init__(self) -> None:
        self.sent: list[wpb.CompleteTasksRequest] = []

    async def __call__(self, request: wpb.CompleteTasksRequest, **_: Any) -> wpb.CompleteTasksResponse:
        copy = wpb.CompleteTasksRequest()
        copy.CopyFrom(request)
        self.sent.append(copy)
        if len(self.sent) == 1:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "connection reset"
            )
        return wpb.CompleteTasksResponse()


def test_a_retried_report_does_not_claim_again() -> None:
    async def scenario() -> list[wpb.CompleteTasksRequest]:
        conn = Connection("127.0.0.1:1", worker_id="w1")
        conn.streams = False  # unary calls: this test swaps the call's stub
        stub = LosesFirstAnswer()
        conn._worker.CompleteTasks = stub  # type: ignore[method-assign]
        try:
            await conn.complete(OUTCOME, claim_slots=4, queues=["default"])
        finally:
            await conn.close()
        return stub.sent

    first, retry = asyncio.run(scenario())
    # The lost call may have claimed four tasks; the retry reports the outcome again and claims none.
    assert first.claim_slots == 4 and retry.claim_slots == 0
    assert [o.task_instance_id for o in retry.outcomes] == [1]


StreamHandler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[wpb.CompleteTasksResponse]]
UnaryHandler = Callable[
    [wpb.CompleteTasksRequest, grpc.aio.ServicerContext[Any, Any]], Awaitable[wpb.CompleteTasksResponse]
]


async def _serve(stream: StreamHandler | None, unary: UnaryHandler) -> tuple[grpc.aio.Server, str]:
    """A server with CompleteTasks and, unless `stream` is None, CompleteTasksStream."""
    handlers = {
        "CompleteTasks": grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=wpb.CompleteTasksRequest.FromString,
            response_serializer=wpb.CompleteTasksResponse.SerializeToString,
        )
    }
    if stream is not None:
        handlers["CompleteTasksStream"] = grpc.stream_stream_rpc_method_handler(
            stream,
            request_deserializer=wpb.CompleteTasksRequest.FromString,
            response_serializer=wpb.CompleteTasksResponse.SerializeToString,
        )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def _copy(request: wpb.CompleteTasksRequest) -> wpb.CompleteTasksRequest:
    copy = wpb.CompleteTasksRequest()
    copy.CopyFrom(request)
    return copy


def _answer(request: wpb.CompleteTasksRequest, stream: int) -> wpb.CompleteTasksResponse:
    """Acks carry which stream answered (as the attempt), so the test can tell."""
    return wpb.CompleteTasksResponse(
        acks=[
            wpb.OutcomeAck(
                task_instance_id=o.task_instance_id, attempt=stream, status=wpb.ACK_STATUS_ACCEPTED
            )
            for o in request.outcomes
        ]
    )


async def _no_unary(request: wpb.CompleteTasksRequest, context: Any) -> wpb.CompleteTasksResponse:
    raise AssertionError("the report should have gone on the stream")


def test_reports_share_one_stream_and_a_stream_the_server_ended_is_replaced() -> None:
    opened: list[int] = []

    async def stream(requests: Any, context: Any) -> AsyncIterator[wpb.CompleteTasksResponse]:
        opened.append(len(opened) + 1)
        number = len(opened)
        served = 0
        async for request in requests:
            yield _answer(request, number)
            served += 1
            if number == 1 and served == 2:
                return  # as a server shutting down does: OK, between requests

    async def scenario() -> list[int]:
        server, address = await _serve(stream, _no_unary)
        conn = Connection(address, worker_id="w1")
        try:
            answered = []
            for _ in range(4):
                acks, _ = await conn.complete(OUTCOME)
                answered.append(acks[0].attempt)
                await asyncio.sleep(0.05)  # the end of the first stream reaches the client
            return answered
        finally:
            await conn.close()
            await server.stop(None)

    assert asyncio.run(scenario()) == [1, 1, 2, 2]


def test_a_report_lost_on_the_stream_is_sent_again_without_its_claim() -> None:
    seen: list[wpb.CompleteTasksRequest] = []

    async def stream(requests: Any, context: Any) -> AsyncIterator[wpb.CompleteTasksResponse]:
        async for request in requests:
            seen.append(_copy(request))
            if len(seen) == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
            yield _answer(request, len(seen))

    async def scenario() -> None:
        server, address = await _serve(stream, _no_unary)
        conn = Connection(address, worker_id="w1")
        try:
            await conn.complete(OUTCOME, claim_slots=4, queues=["default"])
        finally:
            await conn.close()
            await server.stop(None)

    asyncio.run(scenario())
    first, retry = seen
    assert first.claim_slots == 4 and retry.claim_slots == 0
    assert [o.task_instance_id for o in retry.outcomes] == [1]


def test_an_error_on_the_stream_is_the_error_a_call_would_raise() -> None:
    async def stream(requests: Any, context: Any) -> AsyncIterator[wpb.CompleteTasksResponse]:
        async for request in requests:
            if request.claim_slots > 10:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "claim_slots: must be at most 10")
            yield _answer(request, 1)

    async def scenario() -> None:
        server, address = await _serve(stream, _no_unary)
        conn = Connection(address, worker_id="w1")
        try:
            with pytest.raises(InvalidArgument, match="claim_slots"):
                await conn.complete(OUTCOME, claim_slots=11)
            # The next report opens a new stream.
            acks, _ = await conn.complete(OUTCOME, claim_slots=1)
            assert [a.task_instance_id for a in acks] == [1]
        finally:
            await conn.close()
            await server.stop(None)

    asyncio.run(scenario())


def test_a_server_without_the_stream_gets_unary_reports() -> None:
    calls: list[wpb.CompleteTasksRequest] = []

    async def unary(request: wpb.CompleteTasksRequest, context: Any) -> wpb.CompleteTasksResponse:
        calls.append(_copy(request))
        return _answer(request, 0)

    async def scenario() -> bool:
        server, address = await _serve(None, unary)
        conn = Connection(address, worker_id="w1")
        try:
            for _ in range(3):
                await conn.complete(OUTCOME, claim_slots=2)
            return conn.streams
        finally:
            await conn.close()
            await server.stop(None)

    streams = asyncio.run(scenario())
    # An older server: the stream is asked for once, then every report is a call (claims kept).
    assert not streams
    assert [c.claim_slots for c in calls] == [2, 2, 2]
