"""Lease expiry, start timeouts, cancellation and give-back, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.helpers import chain, dag_spec, py
from tests.integration.store_fixtures import LEASE, Plane, ok
from tests.integration.test_queue import run_state, states
from weir.errors import FailedPrecondition
from weir.models import AckStatus, Directive
from weir.server import completion, leases, queries
from weir.server.store import task_instances as tis
from weir.server.store.schema import task_attempts
from weir.states import RunState, TaskState


def expire(plane: Plane) -> completion.Completion:
    return plane.db.write_sync(completion.expire_leases, plane.clock.now(), plane.catalog)


def time_out_waiting(plane: Plane) -> completion.Completion:
    return plane.db.write_sync(completion.time_out_waiting, plane.clock.now(), plane.catalog)


def heartbeat(plane: Plane, *refs: tuple[int, int]) -> dict[tuple[int, int], Directive]:
    statuses = plane.db.write_sync(
        leases.heartbeat, plane.clock.now(), worker_id="w1", running=refs, lease=LEASE
    )
    return {(s.task_instance_id, s.attempt): s.directive for s in statuses}


def attempt_rows(plane: Plane) -> list[tuple[int, str, str | None]]:
    rows = plane.db.read_sync(
        lambda c: c.execute(
            select(task_attempts.c.attempt, task_attempts.c.outcome, task_attempts.c.worker_id).order_by(
                task_attempts.c.id
            )
        ).all()
    )
    return [tuple(r) for r in rows]


def test_an_expired_lease_fails_the_attempt_and_the_task_retries(plane: Plane) -> None:
    plane.register(dag_spec("d", py("t", retries=1, retry_delay=timedelta(seconds=0))))
    run = plane.trigger("d").run
    [a] = plane.claim(worker="dead-worker")
    plane.clock.advance(LEASE - timedelta(seconds=1))
    assert expire(plane).ended == 0  # not yet
    plane.clock.advance(2)
    done = expire(plane)
    assert done.ended == 1 and done.retries
    assert states(plane, run.run_id) == {"t": TaskState.UP_FOR_RETRY}
    [b] = plane.claim(worker="w2")
    assert (b.attempt, b.try_number) == (2, 2)
    # The dead worker comes back and reports: refused, nothing changes.
    [ack] = plane.acks(ok(a))
    assert ack.status is AckStatus.STALE
    plane.complete(ok(b, b'"second"'))
    assert run_state(plane, run.run_id) is RunState.SUCCESS
    assert attempt_rows(plane) == [(1, "up_for_retry", "dead-worker"), (2, "success", "w2")]


def test_lease_expiry_counts_as_a_try_so_a_poison_task_stops(plane: Plane) -> None:
    plane.register(dag_spec("d", py("poison", retries=2, retry_delay=timedelta(0)), py("other")))
    run = plane.trigger("d").run
    other = next(a for a in plane.claim() if a.task_id == "other")
    plane.complete(ok(other))
    for _ in range(3):
        plane.clock.advance(LEASE + timedelta(seconds=1))
        expire(plane)
        claimed = plane.claim()
        if not claimed:
            break
    assert states(plane, run.run_id) == {"poison": TaskState.FAILED, "other": TaskState.SUCCESS}
    assert run_state(plane, run.run_id) is RunState.FAILED
    assert [r[1] for r in attempt_rows(plane)] == ["success", "up_for_retry", "up_for_retry", "failed"]


def test_heartbeats_keep_a_lease_alive(plane: Plane) -> None:
    plane.register(dag_spec("d", py("t")))
    plane.trigger("d")
    [a] = plane.claim()
    for _ in range(5):
        plane.clock.advance(LEASE / 2)
        assert heartbeat(plane, a.key) == {a.key: Directive.CONTINUE}
        assert expire(plane).ended == 0
    plane.clock.advance(LEASE + timedelta(seconds=1))
    assert expire(plane).ended == 1
    assert heartbeat(plane, a.key) == {a.key: Directive.STOP_LEASE_LOST}


def test_a_task_queued_past_its_start_timeout_fails_with_the_reason(plane: Plane) -> None:
    plane.register(
        dag_spec(
            "d",
            py("stuck", queue="nobody-listens", schedule_to_start_timeout=timedelta(seconds=60)),
            py("after", "stuck"),
        )
    )
    run = plane.trigger("d").run
    plane.clock.advance(59)
    assert time_out_waiting(plane).ended == 0
    plane.clock.advance(2)
    assert time_out_waiting(plane).ended == 1
    assert states(plane, run.run_id) == {"stuck": TaskState.FAILED, "after": TaskState.UPSTREAM_FAILED}
    stuck = next(t for t in plane.db.read_sync(queries.task_instances, run.run_id, include_results=False))
    assert stuck.error is not None and stuck.error.type == "ScheduleToStartTimeout"
    assert "'nobody-listens'" in stuck.error.message
    assert run_state(plane, run.run_id) is RunState.FAILED


def test_a_task_its_upstream_queued_gets_its_start_timeout_from_then(plane: Plane) -> None:
    plane.register(
        dag_spec(
            "d",
            py("first"),
            py("stuck", "first", queue="nobody-listens", schedule_to_start_timeout=timedelta(seconds=60)),
        )
    )
    run = plane.trigger("d").run
    plane.clock.advance(30)
    [a] = plane.claim()
    assert plane.complete(ok(a)).queued == {"nobody-listens": 1}
    plane.clock.advance(59)
    assert time_out_waiting(plane).ended == 0
    plane.clock.advance(2)
    assert time_out_waiting(plane).ended == 1
    assert states(plane, run.run_id) == {"first": TaskState.SUCCESS, "stuck": TaskState.FAILED}


def test_cancel_removes_waiting_tasks_and_stops_running_ones(plane: Plane) -> None:
    plane.register(dag_spec("d", py("running"), py("queued"), py("waiting", "running")))
    run = plane.trigger("d").run
    [a] = plane.claim(1)
    assert a.task_id == "running"
    done = plane.db.write_sync(completion.cancel_run, plane.clock.now(), plane.catalog, run.run_id)
    assert done.finished_runs == [(run.run_id, RunState.FAILED)]
    assert set(states(plane, run.run_id).values()) == {TaskState.REMOVED}
    assert run_state(plane, run.run_id) is RunState.FAILED
    # The worker learns at its next heartbeat; its late report changes nothing.
    assert heartbeat(plane, a.key) == {a.key: Directive.STOP_CANCELLED}
    assert plane.acks(ok(a))[0].status is AckStatus.STALE
    assert plane.claim() == []
    with pytest.raises(FailedPrecondition, match="already ended"):
        plane.db.write_sync(completion.cancel_run, plane.clock.now(), plane.catalog, run.run_id)


def test_cancelling_a_run_starts_the_next_queued_one(plane: Plane) -> None:
    plane.register(dag_spec("d", py("t"), max_active_runs=1))
    first = plane.trigger("d").run
    second = plane.trigger("d").run
    done = plane.db.write_sync(completion.cancel_run, plane.clock.now(), plane.catalog, first.run_id)
    assert done.queued["default"] == 1
    assert run_state(plane, second.run_id) is RunState.RUNNING


def test_released_attempts_are_claimable_at_once_and_do_not_count_as_tries(plane: Plane) -> None:
    plane.register(chain("c", 1))
    plane.trigger("c")
    [a] = plane.claim(worker="leaving")
    queued = plane.db.write_sync(tis.release, plane.clock.now(), [a.key])
    assert queued == {"default": 1}
    [b] = plane.claim(worker="staying")
    assert (b.attempt, b.try_number) == (2, 1)
    assert plane.acks(ok(a))[0].status is AckStatus.STALE
    assert plane.acks(ok(b))[0].status is AckStatus.ACCEPTED
