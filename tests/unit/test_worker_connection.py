"""The worker's connection: what it changes before retrying a call."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from weir.models import Outcome, TaskOutcome
from weir.v1 import worker_pb2 as wpb
from weir.worker.connection import Connection


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
        stub = LosesFirstAnswer()
        conn._worker.CompleteTasks = stub  # type: ignore[method-assign]
        try:
            await conn.complete([TaskOutcome(1, 1, Outcome.SUCCESS)], claim_slots=4, queues=["default"])
        finally:
            await conn.close()
        return stub.sent

    first, retry = asyncio.run(scenario())
    # The lost call may have claimed four tasks; the retry reports the outcome again and claims none.
    assert first.claim_slots == 4 and retry.claim_slots == 0
    assert [o.task_instance_id for o in retry.outcomes] == [1]
