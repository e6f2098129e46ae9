"""The one boundary between protobuf messages and Weir's dataclasses.

Everything else in Weir (SDK, worker, server, CLI) works with weir.spec and
weir.models values; only this module touches generated message types.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from weir import models as m
from weir import spec as s
from weir.states import RunState, RunType, TaskState, TriggerRule
from weir.v1 import control_pb2 as cpb
from weir.v1 import types_pb2 as pb
from weir.v1 import worker_pb2 as wpb

# -- scalars -------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def ts(dt: datetime | None) -> Timestamp | None:
    """A datetime as a Timestamp (naive means UTC).

    By arithmetic rather than Timestamp.FromDatetime, which is a third of the
    cost of turning a claimed task into a message.
    """
    if dt is None:
        return None
    since = dt - (_EPOCH if dt.tzinfo else _NAIVE_EPOCH)
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def from_ts(msg: Any, name: str) -> datetime | None:
    if not msg.HasField(name):
        return None
    t = getattr(msg, name)
    return _datetime(t.seconds, t.nanos)


@functools.lru_cache(maxsize=1024)
def _datetime(seconds: int, nanos: int) -> datetime:
    """Cached: the tasks of one claim share a lease expiry, and a run's tasks its logical date."""
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def dur(td: timedelta | None) -> Duration | None:
    if td is None:
        return None
    out = Duration()
    out.FromTimedelta(td)
    return out


def from_dur(msg: Any, name: str) -> timedelta | None:
    if not msg.HasField(name):
        return None
    value: timedelta = getattr(msg, name).ToTimedelta()
    return value


def json_bytes(value: Any) -> bytes:
    if not value and type(value) in _EMPTY_JSON:  # most tasks' params, args and kwargs
        return _EMPTY_JSON[type(value)]
    return _encode_json(value).encode()


_EMPTY_JSON: dict[type, bytes] = {dict: b"{}", list: b"[]"}
_encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def from_json_bytes(data: bytes, what: str, default: Any = None) -> Any:
    """Decode a `_json` field; raises ValueError naming the field when it is not JSON."""
    if not data:
        return default
    if data in _EMPTY_VALUE:
        return _EMPTY_VALUE[data]()
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{what}: not valid JSON ({exc})") from None


_EMPTY_VALUE: dict[bytes, type] = {b"{}": dict, b"[]": list}


# -- enums ---------------------------------------------------------------------

_TASK_STATE_TO = {st: pb.TaskState.Value(f"TASK_STATE_{st.name}") for st in TaskState}
_TASK_STATE_FROM = {v: k for k, v in _TASK_STATE_TO.items()}
_RUN_STATE_TO = {st: pb.RunState.Value(f"RUN_STATE_{st.name}") for st in RunState}
_RUN_STATE_FROM = {v: k for k, v in _RUN_STATE_TO.items()}
_RUN_TYPE_TO = {rt: pb.RunType.Value(f"RUN_TYPE_{rt.name}") for rt in RunType}
_RUN_TYPE_FROM = {v: k for k, v in _RUN_TYPE_TO.items()}
_RULE_TO = {r: pb.TriggerRule.Value(f"TRIGGER_RULE_{r.name}") for r in TriggerRule}
_RULE_FROM = {v: k for k, v in _RULE_TO.items()}
_OUTCOME_TO = {o: wpb.Outcome.Value(f"OUTCOME_{o.name}") for o in m.Outcome}
_OUTCOME_FROM = {v: k for k, v in _OUTCOME_TO.items()}
_ACK_TO = {a: wpb.AckStatus.Value(f"ACK_STATUS_{a.name}") for a in m.AckStatus}
_ACK_FROM = {v: k for k, v in _ACK_TO.items()}
_DIRECTIVE_TO = {d: wpb.Directive.Value(f"DIRECTIVE_{d.name}") for d in m.Directive}
_DIRECTIVE_FROM = {v: k for k, v in _DIRECTIVE_TO.items()}


def task_state(value: TaskState) -> pb.TaskState.ValueType:
    return _TASK_STATE_TO[value]


def task_state_from(value: int) -> TaskState:
    return _TASK_STATE_FROM[value]  # type: ignore[index]


def run_state(value: RunState) -> pb.RunState.ValueType:
    return _RUN_STATE_TO[value]


def run_state_from(value: int) -> RunState:
    try:
        return _RUN_STATE_FROM[value]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown run state {value}") from None


def outcome_from(value: int) -> m.Outcome:
    try:
        return _OUTCOME_FROM[value]  # type: ignore[index]
    except KeyError:
        raise ValueError("outcome must be SUCCESS, FAILED or SKIPPED") from None


def trigger_rule_from(value: int) -> TriggerRule:
    if value == pb.TRIGGER_RULE_UNSPECIFIED:
        return TriggerRule.ALL_SUCCESS
    try:
        return _RULE_FROM[value]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown trigger rule {value}") from None


# -- DAG specs -----------------------------------------------------------------


def schedule_to_proto(sched: s.Schedule | None) -> pb.Schedule | None:
    if sched is None:
        return None
    out = pb.Schedule(timezone=sched.timezone)
    if sched.cron is not None:
        out.cron = sched.cron
    elif sched.every is not None:
        out.every.FromTimedelta(sched.every)
    return out


def schedule_from_proto(msg: Any, name: str = "schedule") -> s.Schedule | None:
    if not msg.HasField(name):
        return None
    sched: pb.Schedule = getattr(msg, name)
    kind = sched.WhichOneof("kind")
    return s.Schedule(
        cron=sched.cron if kind == "cron" else None,
        every=sched.every.ToTimedelta() if kind == "every" else None,
        timezone=sched.timezone or "UTC",
    )


def task_spec_to_proto(t: s.TaskSpec) -> pb.TaskSpec:
    out = pb.TaskSpec(
        task_id=t.task_id,
        upstream_task_ids=list(t.upstream_task_ids),
        trigger_rule=_RULE_TO[t.trigger_rule],
        queue=t.queue,
        pool=t.pool,
        priority=t.priority,
        retries=t.retries,
        retry_delay=dur(t.retry_delay),
        retry_exponential_backoff=t.retry_exponential_backoff,
        max_retry_delay=dur(t.max_retry_delay),
        timeout=dur(t.timeout),
        schedule_to_start_timeout=dur(t.schedule_to_start_timeout),
        doc=t.doc,
    )
    if isinstance(t.body, s.PythonCall):
        out.python.CopyFrom(
            pb.PythonCall(arguments_json=json_bytes(dict(t.body.arguments)), callable=t.body.callable)
        )
    else:
        out.bash.CopyFrom(bash_to_proto(t.body))
    return out


def bash_to_proto(b: s.BashCommand) -> pb.BashCommand:
    return pb.BashCommand(command=b.command, env=dict(b.env), cwd=b.cwd)


def task_spec_from_proto(msg: pb.TaskSpec, path: str) -> s.TaskSpec:
    body: s.TaskBody
    kind = msg.WhichOneof("body")
    if kind == "python":
        arguments = from_json_bytes(msg.python.arguments_json, f"{path}.python.arguments_json", {})
        body = s.PythonCall(arguments=arguments, callable=msg.python.callable)
    elif kind == "bash":
        body = s.BashCommand(command=msg.bash.command, env=dict(msg.bash.env), cwd=msg.bash.cwd)
    else:
        raise ValueError(f"{path}: a task needs a python or a bash body")
    try:
        rule = trigger_rule_from(msg.trigger_rule)
    except ValueError as exc:
        raise ValueError(f"{path}.trigger_rule: {exc}") from None
    return s.TaskSpec(
        task_id=msg.task_id,
        body=body,
        upstream_task_ids=tuple(msg.upstream_task_ids),
        trigger_rule=rule,
        queue=msg.queue or s.DEFAULT_QUEUE,
        pool=msg.pool or s.DEFAULT_POOL,
        priority=msg.priority,
        retries=msg.retries,
        retry_delay=from_dur(msg, "retry_delay") or timedelta(0),
        retry_exponential_backoff=msg.retry_exponential_backoff,
        max_retry_delay=from_dur(msg, "max_retry_delay"),
        timeout=from_dur(msg, "timeout"),
        schedule_to_start_timeout=from_dur(msg, "schedule_to_start_timeout"),
        doc=msg.doc,
    )


def dag_spec_to_proto(d: s.DagSpec) -> pb.DagSpec:
    return pb.DagSpec(
        dag_id=d.dag_id,
        description=d.description,
        schedule=schedule_to_proto(d.schedule),
        start_date=ts(d.start_date),
        end_date=ts(d.end_date),
        catchup=d.catchup,
        max_active_runs=d.max_active_runs,
        tags=list(d.tags),
        params_json=json_bytes(dict(d.params)),
        fileloc=d.fileloc,
        doc_md=d.doc_md,
        tasks=[task_spec_to_proto(t) for t in d.tasks],
    )


def dag_spec_from_proto(msg: pb.DagSpec, path: str = "dag") -> s.DagSpec:
    """Raises ValueError with the field path when the message is malformed."""
    params = from_json_bytes(msg.params_json, f"{path}.params_json", {})
    if not isinstance(params, dict):
        raise ValueError(f"{path}.params_json: must be a JSON object")
    return s.DagSpec(
        dag_id=msg.dag_id,
        description=msg.description,
        schedule=schedule_from_proto(msg),
        start_date=from_ts(msg, "start_date"),
        end_date=from_ts(msg, "end_date"),
        catchup=msg.catchup,
        max_active_runs=msg.max_active_runs or s.DEFAULT_MAX_ACTIVE_RUNS,
        tags=tuple(msg.tags),
        params=params,
        fileloc=msg.fileloc,
        doc_md=msg.doc_md,
        tasks=tuple(task_spec_from_proto(t, f"{path}.tasks[{i}]") for i, t in enumerate(msg.tasks)),
    )


# -- DAGs, runs, task instances --------------------------------------------------


def version_to_proto(v: m.DagVersion | None) -> pb.DagVersion | None:
    if v is None:
        return None
    return pb.DagVersion(id=v.id, hash=v.hash, created_at=ts(v.created_at))


def version_from_proto(msg: Any, name: str) -> m.DagVersion | None:
    if not msg.HasField(name):
        return None
    v = getattr(msg, name)
    return m.DagVersion(id=v.id, hash=v.hash, created_at=from_ts(v, "created_at"))


def dag_info_to_proto(d: m.DagInfo) -> pb.DagSummary:
    return pb.DagSummary(
        dag_id=d.dag_id,
        is_paused=d.is_paused,
        description=d.description,
        tags=list(d.tags),
        schedule=schedule_to_proto(d.schedule),
        latest_version=version_to_proto(d.latest_version),
        task_count=d.task_count,
        fileloc=d.fileloc,
    )


def dag_info_from_proto(msg: pb.DagSummary, spec: s.DagSpec | None = None) -> m.DagInfo:
    return m.DagInfo(
        dag_id=msg.dag_id,
        is_paused=msg.is_paused,
        description=msg.description,
        tags=tuple(msg.tags),
        schedule=schedule_from_proto(msg),
        latest_version=version_from_proto(msg, "latest_version"),
        task_count=msg.task_count,
        fileloc=msg.fileloc,
        spec=spec,
    )


def run_to_proto(r: m.DagRun) -> pb.DagRun:
    return pb.DagRun(
        run_id=r.run_id,
        dag_id=r.dag_id,
        state=_RUN_STATE_TO[r.state],
        run_type=_RUN_TYPE_TO[r.run_type],
        version=version_to_proto(r.version),
        logical_date=ts(r.logical_date),
        conf_json=json_bytes(r.conf),
        queued_at=ts(r.queued_at),
        started_at=ts(r.started_at),
        ended_at=ts(r.ended_at),
        data_interval_start=ts(r.data_interval_start),
        data_interval_end=ts(r.data_interval_end),
    )


def run_from_proto(msg: pb.DagRun) -> m.DagRun:
    return m.DagRun(
        run_id=msg.run_id,
        dag_id=msg.dag_id,
        state=run_state_from(msg.state),
        run_type=_RUN_TYPE_FROM.get(msg.run_type, RunType.MANUAL),
        version=version_from_proto(msg, "version"),
        logical_date=from_ts(msg, "logical_date"),
        conf=from_json_bytes(msg.conf_json, "conf_json", {}),
        queued_at=from_ts(msg, "queued_at"),
        started_at=from_ts(msg, "started_at"),
        ended_at=from_ts(msg, "ended_at"),
        data_interval_start=from_ts(msg, "data_interval_start"),
        data_interval_end=from_ts(msg, "data_interval_end"),
    )


def error_to_proto(e: m.TaskError | None) -> pb.TaskError | None:
    if e is None:
        return None
    return pb.TaskError(type=e.type, message=e.message, traceback=e.traceback)


def error_from_proto(msg: Any, name: str = "error") -> m.TaskError | None:
    if not msg.HasField(name):
        return None
    e = getattr(msg, name)
    return m.TaskError(type=e.type, message=e.message, traceback=e.traceback)


def ti_to_proto(t: m.TaskInstance) -> pb.TaskInstance:
    return pb.TaskInstance(
        run_id=t.run_id,
        dag_id=t.dag_id,
        task_id=t.task_id,
        map_index=t.map_index,
        state=_TASK_STATE_TO[t.state],
        try_number=t.try_number,
        max_tries=t.max_tries,
        queue=t.queue,
        priority=t.priority,
        worker_id=t.worker_id,
        queued_at=ts(t.queued_at),
        started_at=ts(t.started_at),
        ended_at=ts(t.ended_at),
        error=error_to_proto(t.error),
        result_json=json_bytes(t.result) if t.has_result else b"",
        has_result=t.has_result,
    )


def ti_from_proto(msg: pb.TaskInstance) -> m.TaskInstance:
    return m.TaskInstance(
        run_id=msg.run_id,
        dag_id=msg.dag_id,
        task_id=msg.task_id,
        map_index=msg.map_index,
        state=task_state_from(msg.state),
        try_number=msg.try_number,
        max_tries=msg.max_tries,
        queue=msg.queue,
        priority=msg.priority,
        worker_id=msg.worker_id,
        queued_at=from_ts(msg, "queued_at"),
        started_at=from_ts(msg, "started_at"),
        ended_at=from_ts(msg, "ended_at"),
        error=error_from_proto(msg),
        result=from_json_bytes(msg.result_json, "result_json") if msg.has_result else None,
        has_result=msg.has_result,
    )


# -- worker protocol ---------------------------------------------------------------


def assignment_to_proto(a: m.Assignment) -> wpb.TaskAssignment:
    out = wpb.TaskAssignment(
        task_instance_id=a.task_instance_id,
        attempt=a.attempt,
        dag_id=a.dag_id,
        task_id=a.task_id,
        map_index=a.map_index,
        run_id=a.run_id,
        dag_version=a.dag_version,
        try_number=a.try_number,
        max_tries=a.max_tries,
        lease_expires_at=ts(a.lease_expires_at),
        logical_date=ts(a.logical_date),
        timeout=dur(a.timeout),
        params_json=json_bytes(a.params),
    )
    if isinstance(a.body, m.PythonInvocation):
        out.python.CopyFrom(
            wpb.PythonInvocation(args_json=json_bytes(a.body.args), kwargs_json=json_bytes(a.body.kwargs))
        )
    else:
        out.bash.CopyFrom(bash_to_proto(a.body))
    return out


def assignment_from_proto(msg: wpb.TaskAssignment) -> m.Assignment:
    body: m.PythonInvocation | s.BashCommand
    if msg.WhichOneof("body") == "python":
        body = m.PythonInvocation(
            args=from_json_bytes(msg.python.args_json, "args_json", []),
            kwargs=from_json_bytes(msg.python.kwargs_json, "kwargs_json", {}),
        )
    else:
        body = s.BashCommand(command=msg.bash.command, env=dict(msg.bash.env), cwd=msg.bash.cwd)
    return m.Assignment(
        task_instance_id=msg.task_instance_id,
        attempt=msg.attempt,
        dag_id=msg.dag_id,
        task_id=msg.task_id,
        map_index=msg.map_index,
        run_id=msg.run_id,
        dag_version=msg.dag_version,
        try_number=msg.try_number,
        max_tries=msg.max_tries,
        lease_expires_at=from_ts(msg, "lease_expires_at"),
        logical_date=from_ts(msg, "logical_date"),
        timeout=from_dur(msg, "timeout"),
        params=from_json_bytes(msg.params_json, "params_json", {}),
        body=body,
    )


def outcome_to_proto(o: m.TaskOutcome) -> wpb.TaskOutcome:
    return wpb.TaskOutcome(
        task_instance_id=o.task_instance_id,
        attempt=o.attempt,
        outcome=_OUTCOME_TO[o.outcome],
        result_json=o.result_json,
        error=error_to_proto(o.error),
        log_tail=o.log_tail,
    )


def outcome_from_proto(msg: wpb.TaskOutcome) -> m.TaskOutcome:
    return m.TaskOutcome(
        task_instance_id=msg.task_instance_id,
        attempt=msg.attempt,
        outcome=outcome_from(msg.outcome),
        result_json=msg.result_json,
        error=error_from_proto(msg),
        log_tail=msg.log_tail,
    )


def ack_to_proto(a: m.OutcomeAck) -> wpb.OutcomeAck:
    return wpb.OutcomeAck(
        task_instance_id=a.task_instance_id, attempt=a.attempt, status=_ACK_TO[a.status], message=a.message
    )


def ack_from_proto(msg: wpb.OutcomeAck) -> m.OutcomeAck:
    return m.OutcomeAck(
        task_instance_id=msg.task_instance_id,
        attempt=msg.attempt,
        status=_ACK_FROM[msg.status],
        message=msg.message,
    )


def ack_status_to_proto(a: m.AckStatus) -> wpb.AckStatus.ValueType:
    return _ACK_TO[a]


def ack_status_from_proto(value: int) -> m.AckStatus:
    return _ACK_FROM[value]  # type: ignore[index]


def lease_to_proto(ls: m.LeaseStatus) -> wpb.LeaseStatus:
    return wpb.LeaseStatus(
        task_instance_id=ls.task_instance_id,
        attempt=ls.attempt,
        directive=_DIRECTIVE_TO[ls.directive],
        lease_expires_at=ts(ls.lease_expires_at),
    )


def lease_from_proto(msg: wpb.LeaseStatus) -> m.LeaseStatus:
    return m.LeaseStatus(
        task_instance_id=msg.task_instance_id,
        attempt=msg.attempt,
        directive=_DIRECTIVE_FROM[msg.directive],
        lease_expires_at=from_ts(msg, "lease_expires_at"),
    )


def limits_to_proto(lim: m.WorkerLimits) -> wpb.RegisterWorkerResponse:
    return wpb.RegisterWorkerResponse(
        worker_id=lim.worker_id,
        lease=dur(lim.lease),
        heartbeat_interval=dur(lim.heartbeat_interval),
        max_result_bytes=lim.max_result_bytes,
        server_version=lim.server_version,
    )


def limits_from_proto(msg: wpb.RegisterWorkerResponse) -> m.WorkerLimits:
    return m.WorkerLimits(
        worker_id=msg.worker_id,
        lease=msg.lease.ToTimedelta(),
        heartbeat_interval=msg.heartbeat_interval.ToTimedelta(),
        max_result_bytes=msg.max_result_bytes,
        server_version=msg.server_version,
    )


def registered_to_proto(r: m.RegisteredDag) -> cpb.RegisteredDag:
    return cpb.RegisteredDag(dag_id=r.dag_id, version=version_to_proto(r.version), created=r.created)


def registered_from_proto(msg: cpb.RegisteredDag) -> m.RegisteredDag:
    version = version_from_proto(msg, "version")
    assert version is not None
    return m.RegisteredDag(dag_id=msg.dag_id, version=version, created=msg.created)
