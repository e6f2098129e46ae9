"""The protobuf boundary: every dataclass survives a trip through its message."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from weir import _convert as cv
from weir import bash_task, dag, task
from weir import models as m
from weir.spec import BashCommand, DagSpec, PythonCall, Schedule, TaskSpec
from weir.states import RunState, RunType, TaskState, TriggerRule
from weir.v1 import types_pb2 as pb
from weir.v1 import worker_pb2 as wpb

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def rich_spec() -> DagSpec:
    @dag(
        schedule="*/5 * * * *",
        start_date=datetime(2026, 1, 1),
        end_date=datetime(2026, 12, 31, 23, 59),
        catchup=True,
        max_active_runs=2,
        tags=["a", "b"],
        params={"limit": 3, "deep": {"x": [1, None]}},
        doc_md="docs",
    )
    def convert_me(limit: int = 3) -> None:
        """Round trip."""

        @task(
            retries=3,
            retry_delay=timedelta(seconds=7.5),
            retry_exponential_backoff=True,
            max_retry_delay=timedelta(hours=1),
            timeout=timedelta(minutes=2),
            schedule_to_start_timeout=timedelta(seconds=30),
            queue="gpu",
            pool="p1",
            priority=-2,
            doc="doc of a",
        )
        def a(limit: int) -> list[int]:
            return []

        @task(trigger_rule="one_failed")
        def b(rows: list[int], mapping: dict[str, Any]) -> None:
            return None

        rows = a(limit)
        b(rows, {"r": rows, "f": 1.25})
        rows >> bash_task("sh", "echo hi", env={"K": "V"}, cwd="/srv")

    return convert_me().to_spec()


def test_dag_spec_proto_round_trip_is_lossless() -> None:
    spec = rich_spec()
    msg = cv.dag_spec_to_proto(spec)
    wire = pb.DagSpec.FromString(msg.SerializeToString())
    back = cv.dag_spec_from_proto(wire)
    assert back == spec
    assert back.content_hash() == spec.content_hash()


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_every_trigger_rule_survives_the_proto(rule: TriggerRule) -> None:
    t = TaskSpec(task_id="t", body=BashCommand(command="true"), trigger_rule=rule)
    assert cv.task_spec_from_proto(cv.task_spec_to_proto(t), "t") == t


@pytest.mark.parametrize(
    "schedule",
    [
        None,
        Schedule(cron="@daily"),
        Schedule(cron="0 1 * * *", timezone="Europe/Paris"),
        Schedule(every=timedelta(minutes=90)),
    ],
)
def test_schedules_round_trip(schedule: Schedule | None) -> None:
    spec = DagSpec(
        dag_id="s", tasks=(TaskSpec(task_id="t", body=BashCommand(command="true")),), schedule=schedule
    )
    assert cv.dag_spec_from_proto(cv.dag_spec_to_proto(spec)) == spec


def test_task_spec_with_no_optional_durations() -> None:
    t = TaskSpec(task_id="t", body=PythonCall(arguments={"args": [], "kwargs": {}}, callable="mod:fn"))
    back = cv.task_spec_from_proto(cv.task_spec_to_proto(t), "dag.tasks[0]")
    assert back == t
    assert back.timeout is None and back.max_retry_delay is None


def test_unspecified_trigger_rule_means_all_success() -> None:
    msg = pb.TaskSpec(task_id="t", bash=pb.BashCommand(command="true"))
    assert cv.task_spec_from_proto(msg, "x").trigger_rule is TriggerRule.ALL_SUCCESS


def test_unknown_trigger_rule_names_the_field() -> None:
    msg = pb.TaskSpec(task_id="t", bash=pb.BashCommand(command="true"), trigger_rule=99)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dag\.tasks\[4\]\.trigger_rule"):
        cv.task_spec_from_proto(msg, "dag.tasks[4]")


def test_task_without_body_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"dag\.tasks\[0\]: a task needs a python or a bash body"):
        cv.dag_spec_from_proto(pb.DagSpec(dag_id="d", tasks=[pb.TaskSpec(task_id="t")]))


def test_bad_json_names_the_field() -> None:
    msg = pb.DagSpec(dag_id="d", params_json=b"{nope", tasks=[])
    with pytest.raises(ValueError, match=r"dag\.params_json: not valid JSON"):
        cv.dag_spec_from_proto(msg)
    with pytest.raises(ValueError, match=r"dag\.params_json: must be a JSON object"):
        cv.dag_spec_from_proto(pb.DagSpec(dag_id="d", params_json=b"[1]"))
    bad_args = pb.TaskSpec(task_id="t", python=pb.PythonCall(arguments_json=b"{", callable="m:f"))
    with pytest.raises(ValueError, match=r"dag\.tasks\[0\]\.python\.arguments_json"):
        cv.dag_spec_from_proto(pb.DagSpec(dag_id="d", tasks=[bad_args]))


def test_zero_max_active_runs_means_the_default() -> None:
    spec = cv.dag_spec_from_proto(pb.DagSpec(dag_id="d"))
    assert spec.max_active_runs == 16
    assert spec.params == {} and spec.tasks == ()


def _assignment(body: m.PythonInvocation | BashCommand) -> m.Assignment:
    return m.Assignment(
        task_instance_id=42,
        attempt=7,
        dag_id="d",
        task_id="t",
        map_index=3,
        run_id="manual__1",
        dag_version="abc123",
        try_number=2,
        max_tries=4,
        lease_expires_at=T0,
        logical_date=T0 - timedelta(days=1),
        timeout=timedelta(minutes=5),
        params={"limit": 10, "nested": {"a": [1, 2.5, None]}},
        body=body,
    )


@pytest.mark.parametrize(
    "body",
    [
        m.PythonInvocation(args=[1, [2, "x"], None], kwargs={"k": {"v": True}}),
        BashCommand(command="echo $A", env={"A": "1"}, cwd="/tmp"),
    ],
)
def test_assignment_round_trip(body: m.PythonInvocation | BashCommand) -> None:
    a = _assignment(body)
    wire = wpb.TaskAssignment.FromString(cv.assignment_to_proto(a).SerializeToString())
    back = cv.assignment_from_proto(wire)
    assert back == a
    assert back.key == (42, 7)


def test_assignment_without_optional_fields() -> None:
    a = replace(
        _assignment(m.PythonInvocation(args=[], kwargs={})),
        lease_expires_at=None,
        logical_date=None,
        timeout=None,
        params={},
    )
    assert cv.assignment_from_proto(cv.assignment_to_proto(a)) == a


@pytest.mark.parametrize("outcome", list(m.Outcome))
def test_outcome_round_trip(outcome: m.Outcome) -> None:
    o = m.TaskOutcome(
        task_instance_id=1,
        attempt=2,
        outcome=outcome,
        result_json=b'{"x":1}',
        error=m.TaskError(type="ValueError", message="bad", traceback="tb...")
        if outcome == "failed"
        else None,
        log_tail=b"last lines\n",
    )
    wire = wpb.TaskOutcome.FromString(cv.outcome_to_proto(o).SerializeToString())
    assert cv.outcome_from_proto(wire) == o


def test_unspecified_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="outcome must be SUCCESS, FAILED or SKIPPED"):
        cv.outcome_from_proto(wpb.TaskOutcome(task_instance_id=1, attempt=1))


def _run(state: RunState, run_type: RunType) -> m.DagRun:
    return m.DagRun(
        run_id="r1",
        dag_id="d",
        state=state,
        run_type=run_type,
        version=m.DagVersion(id=3, hash="h" * 64, created_at=T0),
        logical_date=T0,
        conf={"limit": 5, "list": [1, {"a": None}]},
        queued_at=T0,
        started_at=T0 + timedelta(seconds=1),
        ended_at=T0 + timedelta(seconds=61),
        data_interval_start=T0 - timedelta(days=1),
        data_interval_end=T0,
    )


@pytest.mark.parametrize("state", list(RunState))
@pytest.mark.parametrize("run_type", list(RunType))
def test_run_round_trip(state: RunState, run_type: RunType) -> None:
    r = _run(state, run_type)
    wire = pb.DagRun.FromString(cv.run_to_proto(r).SerializeToString())
    back = cv.run_from_proto(wire)
    assert back == r
    assert back.duration == timedelta(seconds=60)


def test_run_with_empty_optionals() -> None:
    r = replace(
        _run(RunState.QUEUED, RunType.MANUAL),
        version=None,
        logical_date=None,
        conf={},
        started_at=None,
        ended_at=None,
        data_interval_start=None,
        data_interval_end=None,
    )
    back = cv.run_from_proto(cv.run_to_proto(r))
    assert back == r
    assert back.duration is None


def test_unknown_run_state_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown run state"):
        cv.run_from_proto(pb.DagRun(run_id="r", dag_id="d"))


def _ti(state: TaskState, **changes: Any) -> m.TaskInstance:
    ti = m.TaskInstance(
        run_id="r1",
        dag_id="d",
        task_id="t",
        map_index=-1,
        state=state,
        try_number=2,
        max_tries=3,
        queue="default",
        priority=5,
        worker_id="host-1",
        queued_at=T0,
        started_at=T0 + timedelta(seconds=2),
        ended_at=T0 + timedelta(seconds=3),
        error=m.TaskError(type="RuntimeError", message="boom", traceback="Traceback..."),
        result={"rows": [1, 2], "ok": True},
        has_result=True,
    )
    return replace(ti, **changes)


@pytest.mark.parametrize("state", list(TaskState))
def test_task_instance_round_trip(state: TaskState) -> None:
    ti = _ti(state)
    wire = pb.TaskInstance.FromString(cv.ti_to_proto(ti).SerializeToString())
    assert cv.ti_from_proto(wire) == ti


@pytest.mark.parametrize("result", [None, 0, "", [], False])
def test_task_instance_falsy_results_survive(result: Any) -> None:
    ti = _ti(TaskState.SUCCESS, result=result, error=None)
    back = cv.ti_from_proto(cv.ti_to_proto(ti))
    assert back.has_result is True
    assert back.result == result and type(back.result) is type(result)


def test_task_instance_without_result() -> None:
    ti = _ti(TaskState.QUEUED, result=None, has_result=False, error=None, started_at=None, ended_at=None)
    assert cv.ti_from_proto(cv.ti_to_proto(ti)) == ti


def test_other_worker_messages_round_trip() -> None:
    ack = m.OutcomeAck(task_instance_id=1, attempt=2, status=m.AckStatus.STALE, message="late")
    assert cv.ack_from_proto(cv.ack_to_proto(ack)) == ack
    for directive in m.Directive:
        lease = m.LeaseStatus(task_instance_id=1, attempt=2, directive=directive, lease_expires_at=T0)
        assert cv.lease_from_proto(cv.lease_to_proto(lease)) == lease
    limits = m.WorkerLimits(
        worker_id="w",
        lease=timedelta(seconds=30),
        heartbeat_interval=timedelta(seconds=10),
        max_result_bytes=9,
    )
    assert cv.limits_from_proto(cv.limits_to_proto(limits)) == limits


def test_dag_info_round_trip() -> None:
    info = m.DagInfo(
        dag_id="d",
        is_paused=True,
        description="desc",
        tags=("x",),
        schedule=Schedule(cron="@hourly"),
        latest_version=m.DagVersion(id=1, hash="abc", created_at=T0),
        task_count=4,
        fileloc="/dags/d.py",
    )
    assert cv.dag_info_from_proto(cv.dag_info_to_proto(info)) == info


def test_naive_timestamps_are_read_as_utc() -> None:
    naive = datetime(2026, 1, 1, 12, 0)
    msg = cv.ts(naive)
    assert msg is not None
    assert msg.ToDatetime(tzinfo=UTC) == naive.replace(tzinfo=UTC)
    assert cv.ts(None) is None and cv.dur(None) is None
