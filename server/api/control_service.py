"""ControlService: what the SDK Client, the CLI and the dashboard call."""

from __future__ import annotations

import hashlib
from typing import Any

import grpc

from weir import _convert as cv
from weir import spec as specs
from weir.errors import InvalidArgument
from weir.server.api import validate
from weir.server.api.errors import rpc
from weir.server.plane import ControlPlane
from weir.server.store import dags
from weir.v1 import control_pb2 as cpb
from weir.v1 import control_pb2_grpc as cgrpc
from weir.v1 import types_pb2 as pb

Ctx = grpc.aio.ServicerContext[Any, Any]

MAX_RUNS_LISTED = 1000
#: Distinct DAG spec messages remembered by RegisterDags.
PREPARED_CACHE = 256


class ControlService(cgrpc.ControlServiceServicer):
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        #: sha256 of a serialized DagSpec message -> what it converts to (oldest first)
        self._prepared: dict[bytes, dags.Prepared] = {}

    @rpc
    async def RegisterDags(self, request: cpb.RegisterDagsRequest, context: Ctx) -> cpb.RegisterDagsResponse:
        if not request.dags:
            raise InvalidArgument("at least one DAG is required", field="dags")
        parsed = []
        seen: set[str] = set()
        for i, msg in enumerate(request.dags):
            prepared = self._prepare(msg, f"dags[{i}]")
            dag_id = prepared.spec.dag_id
            if dag_id in seen:
                raise InvalidArgument(f"DAG {dag_id!r} appears twice", field=f"dags[{i}].dag_id")
            seen.add(dag_id)
            parsed.append(prepared)
        registered = await self.plane.register_dags(parsed)
        return cpb.RegisterDagsResponse(dags=[cv.registered_to_proto(r) for r in registered])

    def _prepare(self, msg: pb.DagSpec, path: str) -> dags.Prepared:
        """Convert, validate and hash a DAG spec, once per distinct message.

        Every worker registers every DAG it loads when it starts; converting a
        DAG of thousands of tasks each time cost seconds of server CPU.
        """
        key = hashlib.sha256(msg.SerializeToString(deterministic=True)).digest()
        prepared = self._prepared.get(key)
        if prepared is None:
            spec = validate.converted(cv.dag_spec_from_proto, msg, path, field=path)
            specs.validate(spec, path)
            prepared = dags.Prepared.of(spec)
            self._prepared[key] = prepared
            while len(self._prepared) > PREPARED_CACHE:
                self._prepared.pop(next(iter(self._prepared)))
        return prepared

    @rpc
    async def ListDags(self, request: cpb.ListDagsRequest, context: Ctx) -> cpb.ListDagsResponse:
        infos = await self.plane.list_dags(list(request.tags))
        return cpb.ListDagsResponse(dags=[cv.dag_info_to_proto(d) for d in infos])

    @rpc
    async def GetDag(self, request: cpb.GetDagRequest, context: Ctx) -> pb.Dag:
        info, spec = await self.plane.get_dag(validate.required_id(request.dag_id, "dag_id"))
        return pb.Dag(summary=cv.dag_info_to_proto(info), spec=cv.dag_spec_to_proto(spec))

    @rpc
    async def TriggerDagRun(self, request: cpb.TriggerDagRunRequest, context: Ctx) -> pb.DagRun:
        run = await self.plane.trigger(
            validate.required_id(request.dag_id, "dag_id"),
            conf=validate.json_object(request.conf_json, "conf_json"),
            run_id=request.run_id or None,
            logical_date=cv.from_ts(request, "logical_date"),
        )
        return cv.run_to_proto(run)

    @rpc
    async def ListDagRuns(self, request: cpb.ListDagRunsRequest, context: Ctx) -> cpb.ListDagRunsResponse:
        if request.limit > MAX_RUNS_LISTED:
            raise InvalidArgument(f"must be at most {MAX_RUNS_LISTED}", field="limit")
        states = [validate.converted(cv.run_state_from, s, field="states") for s in request.states]
        found = await self.plane.list_runs(
            dag_id=request.dag_id or None, states=states, limit=request.limit or 50
        )
        return cpb.ListDagRunsResponse(runs=[cv.run_to_proto(r) for r in found])

    @rpc
    async def GetDagRun(self, request: cpb.GetDagRunRequest, context: Ctx) -> pb.DagRun:
        if not request.run_id:
            raise InvalidArgument("is required", field="run_id")
        return cv.run_to_proto(await self.plane.get_run(request.run_id))

    @rpc
    async def WaitDagRun(self, request: cpb.WaitDagRunRequest, context: Ctx) -> pb.DagRun:
        if not request.run_id:
            raise InvalidArgument("is required", field="run_id")
        timeout = validate.seconds(request, "timeout", default=30.0, field="timeout")
        return cv.run_to_proto(await self.plane.wait_run(request.run_id, timeout))

    @rpc
    async def ListTaskInstances(
        self, request: cpb.ListTaskInstancesRequest, context: Ctx
    ) -> cpb.ListTaskInstancesResponse:
        if not request.run_id:
            raise InvalidArgument("is required", field="run_id")
        found = await self.plane.task_instances(request.run_id, include_results=request.include_results)
        return cpb.ListTaskInstancesResponse(task_instances=[cv.ti_to_proto(t) for t in found])

    @rpc
    async def GetTaskLogs(self, request: cpb.GetTaskLogsRequest, context: Ctx) -> cpb.GetTaskLogsResponse:
        if not request.run_id:
            raise InvalidArgument("is required", field="run_id")
        logs = await self.plane.logs(
            run_id=request.run_id,
            task_id=validate.required_id(request.task_id, "task_id"),
            map_index=request.map_index if request.HasField("map_index") else -1,
            try_number=request.try_number,
            after=request.after,
        )
        return cpb.GetTaskLogsResponse(
            data=logs.data, cursor=logs.cursor, try_number=logs.try_number, complete=logs.complete
        )

    @rpc
    async def PauseDag(self, request: cpb.PauseDagRequest, context: Ctx) -> pb.DagSummary:
        info = await self.plane.set_paused(validate.required_id(request.dag_id, "dag_id"), True)
        return cv.dag_info_to_proto(info)

    @rpc
    async def CancelDagRun(self, request: cpb.CancelDagRunRequest, context: Ctx) -> pb.DagRun:
        if not request.run_id:
            raise InvalidArgument("is required", field="run_id")
        return cv.run_to_proto(await self.plane.cancel(request.run_id))

    @rpc
    async def UnpauseDag(self, request: cpb.UnpauseDagRequest, context: Ctx) -> pb.DagSummary:
        info = await self.plane.set_paused(validate.required_id(request.dag_id, "dag_id"), False)
        return cv.dag_info_to_proto(info)
