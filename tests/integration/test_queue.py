"""The leased work queue on both databases: claims, fencing, completion, promotion."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from tests.helpers import chain, dag_spec, fan_in, py, wide
from tests.integration.store_fixtures import Plane, complete_from_replicas, failed, ok
from weir.errors import AlreadyExists, InvalidArgument, NotFound
from weir.models import AckStatus, Outcome, TaskOutcome
from weir.server import completion, queries
from weir.server.claims import ClaimRequest
from weir.server.completion import HopCommitted, Report, ReportsApplied
from weir.server.store.db import Database
from weir.server.store.schema import task_attempts, task_instances
from weir.states import RunState, TaskState, TriggerRule


def states(plane: Plane, run_id: str) -> dict[str, TaskState]:
    tis = plane.db.read_sync(queries.task_instances, run_id, include_results=False)
    return {t.task_id: t.state for t in tis}


def run_state(plane: Plane, run_id: str) -> RunState:
    return plane.db.read_sync(queries.run, run_id).state


def attempts(plane: Plane) -> int:
    return int(
        plane.db.read_sync(lambda c: c.execute(select(func.count()).select_from(task_attempts)).scalar_one())
    )


# -- claims -----------------------------------------------------------------------


def test_concurrent_claimers_take_each_task_exactly_once(plane: Plane, db_url: str) -> None:
    plane.register(wide("wide", 1000))
    plane.trigger("wide")
    claimed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(n: int) -> None:
        db = Database(db_url, pool_size=1)  # its own engine and connection, like another replica
        mine = Plane(db, clock=plane.clock, catalog=plane.catalog)
        try:
            while batch := mine.claim(7, worker=f"w{n}"):
                with lock:
                    claimed.extend(a.task_instance_id for a in batch)
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(claimed) == 1000
    assert len(set(claimed)) == 1000


def test_a_claim_takes_no_more_than_asked_whatever_the_statistics(plane: Plane) -> None:
    # Statistics gathered while nothing was claimable (the steady state of a busy
    # queue) once made Postgres re-run the claim's subquery per claimable row:
    # a claim of 1 took every queued task.
    plane.register(wide("w", 500))
    for _ in range(6):
        plane.trigger("w")
    ti = task_instances
    plane.db.write_sync(lambda c: c.execute(update(ti).values(state=TaskState.SUCCESS)))
    if not plane.db.is_sqlite:
        with plane.db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE task_instances")
            conn.commit()
    plane.db.write_sync(lambda c: c.execute(update(ti).where(ti.c.id <= 1000).values(state=TaskState.QUEUED)))
    assert [len(plane.claim(n)) for n in (1, 1, 3)] == [1, 1, 3]
    assert len(plane.claim(2000)) == 995


def test_claim_orders_by_priority_and_respects_queues_and_slots(plane: Plane) -> None:
    plane.register(
        dag_spec(
            "mixed",
            py("low", priority=1),
            py("high", priority=9),
            py("mid", priority=5),
            py("gpu", queue="gpu", priority=100),
        )
    )
    plane.trigger("mixed")
    first = plane.claim(2)
    assert [a.task_id for a in first] == ["high", "mid"]
    assert [a.task_id for a in plane.claim(5)] == ["low"]
    assert plane.claim(5) == []
    assert [a.task_id for a in plane.claim(5, queues=("gpu",))] == ["gpu"]


def test_claim_hands_out_resolved_arguments_and_params(plane: Plane) -> None:
    spec = dag_spec(
        "args",
        py("extract"),
        py("load", refs=["extract"]),
        params={"limit": 5},
    )
    plane.register(spec)
    plane.trigger("args", conf={"limit": 7})
    [extract] = plane.claim()
    assert extract.params == {"limit": 7}
    plane.complete(ok(extract, b'{"rows": [1, 2]}'))
    [load] = plane.claim()
    assert load.task_id == "load"
    assert load.body.args == [{"rows": [1, 2]}]  # type: ignore[union-attr]
    assert load.try_number == 1 and load.attempt == 1


# -- completion and promotion ------------------------------------------------------------


def test_completion_queues_downstream_in_the_same_transaction_and_finishes_the_run(plane: Plane) -> None:
    plane.register(chain("c", 3))
    run = plane.trigger("c").run
    assert states(plane, run.run_id) == {"t0": TaskState.QUEUED, "t1": TaskState.NONE, "t2": TaskState.NONE}
    for expected in ("t0", "t1", "t2"):
        [a] = plane.claim()
        assert a.task_id == expected
        done = plane.complete(ok(a))
        assert [ack.status for ack in done.acks] == [AckStatus.ACCEPTED]
    assert done.finished_runs == [(run.run_id, RunState.SUCCESS)]
    assert run_state(plane, run.run_id) is RunState.SUCCESS
    assert attempts(plane) == 3


def test_a_failure_between_completion_and_enqueue_leaves_no_half_state(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane.register(chain("c", 2))
    run = plane.trigger("c").run
    [a] = plane.claim()

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected: database went away after the task was marked done")

    # Both ways a success promotes: in general, and after the hop statement (Postgres).
    monkeypatch.setattr("weir.server.completion.promote", explode)
    monkeypatch.setattr("weir.server.completion.promoted_by_hop", explode)
    with pytest.raises(RuntimeError, match="injected"):
        plane.complete(ok(a, b"42"))
    # Nothing of the completion survived: t0 still running on the same attempt, t1 waiting.
    assert states(plane, run.run_id) == {"t0": TaskState.RUNNING, "t1": TaskState.NONE}
    assert attempts(plane) == 0
    monkeypatch.undo()
    # The worker's retry of the same report then applies once, with its downstream.
    assert [x.status for x in plane.acks(ok(a, b"42"))] == [AckStatus.ACCEPTED]
    assert states(plane, run.run_id) == {"t0": TaskState.SUCCESS, "t1": TaskState.QUEUED}


def test_stale_and_replayed_reports_change_nothing(plane: Plane) -> None:
    plane.register(chain("c", 2))
    run = plane.trigger("c").run
    [a] = plane.claim()
    stale = TaskOutcome(a.task_instance_id, a.attempt + 1, Outcome.SUCCESS)
    [ack] = plane.acks(stale)
    assert ack.status is AckStatus.STALE
    assert states(plane, run.run_id)["t0"] is TaskState.RUNNING

    assert plane.acks(ok(a))[0].status is AckStatus.ACCEPTED
    replay = plane.complete(ok(a))
    assert replay.acks[0].status is AckStatus.DUPLICATE
    assert not replay.queued  # the downstream was queued once, by the first report
    assert attempts(plane) == 1
    # A contradicting report of an attempt that already ended is refused.
    assert plane.acks(failed(a))[0].status is AckStatus.STALE
    assert states(plane, run.run_id) == {"t0": TaskState.SUCCESS, "t1": TaskState.QUEUED}


def test_failed_attempt_retries_after_its_delay_then_fails_and_cascades(plane: Plane) -> None:
    spec = dag_spec(
        "r",
        py("flaky", retries=1, retry_delay=timedelta(seconds=60)),
        py("after", "flaky"),
        py("last", "after"),
    )
    plane.register(spec)
    run = plane.trigger("r").run
    [a] = plane.claim()
    done = plane.complete(failed(a))
    assert states(plane, run.run_id)["flaky"] is TaskState.UP_FOR_RETRY
    assert done.retries and done.retries[0][1] == plane.clock.now() + timedelta(seconds=60)
    assert plane.claim() == []  # not before its delay
    plane.clock.advance(61)
    [again] = plane.claim()
    assert (again.try_number, again.attempt) == (2, 2)
    plane.complete(failed(again, "still broken"))
    assert states(plane, run.run_id) == {
        "flaky": TaskState.FAILED,
        "after": TaskState.UPSTREAM_FAILED,
        "last": TaskState.UPSTREAM_FAILED,
    }
    assert run_state(plane, run.run_id) is RunState.FAILED
    tis = {
        t.task_id: t for t in plane.db.read_sync(queries.task_instances, run.run_id, include_results=False)
    }
    assert tis["flaky"].error is not None and tis["flaky"].error.message == "still broken"


def test_all_done_runs_after_a_failure_and_the_leaf_decides_the_run(plane: Plane) -> None:
    plane.register(dag_spec("d", py("work"), py("cleanup", "work", trigger_rule=TriggerRule.ALL_DONE)))
    run = plane.trigger("d").run
    [work] = plane.claim()
    plane.complete(failed(work))
    [cleanup] = plane.claim()
    assert cleanup.task_id == "cleanup"
    plane.complete(ok(cleanup))
    # Airflow's rule: the run's state comes from its leaves.
    assert run_state(plane, run.run_id) is RunState.SUCCESS


def test_skipped_outcome_skips_all_success_downstream(plane: Plane) -> None:
    plane.register(dag_spec("s", py("check"), py("use", "check")))
    run = plane.trigger("s").run
    [a] = plane.claim()
    plane.complete(TaskOutcome(a.task_instance_id, a.attempt, Outcome.SKIPPED))
    assert states(plane, run.run_id) == {"check": TaskState.SKIPPED, "use": TaskState.SKIPPED}
    assert run_state(plane, run.run_id) is RunState.SUCCESS


def test_oversized_or_invalid_results_fail_the_attempt(plane: Plane) -> None:
    plane.register(dag_spec("big", py("a"), py("b")))
    run = plane.trigger("big").run
    a, b = plane.claim()
    plane.complete(ok(a, b'"' + b"x" * 100 + b'"'), max_result_bytes=50)
    plane.complete(ok(b, b"{not json"))
    tis = {
        t.task_id: t for t in plane.db.read_sync(queries.task_instances, run.run_id, include_results=False)
    }
    assert tis["a"].state is TaskState.FAILED and tis["a"].error and tis["a"].error.type == "ResultTooLarge"
    assert tis["b"].state is TaskState.FAILED and tis["b"].error and tis["b"].error.type == "InvalidResult"


def test_concurrent_completions_of_a_fan_in_queue_the_join_exactly_once(plane: Plane, db_url: str) -> None:
    plane.register(fan_in("fan", 60))
    run = plane.trigger("fan").run
    ups = plane.claim(100)
    assert len(ups) == 60
    complete_from_replicas(plane, db_url, [[[ok(a)] for a in ups[i::6]] for i in range(6)])
    assert states(plane, run.run_id)["join"] is TaskState.QUEUED
    [join] = plane.claim()
    assert join.task_id == "join"
    plane.complete(ok(join))
    assert run_state(plane, run.run_id) is RunState.SUCCESS


# -- runs --------------------------------------------------------------------------------


def test_max_active_runs_queues_runs_and_starts_the_next_when_one_ends(plane: Plane) -> None:
    plane.register(dag_spec("one", py("only"), max_active_runs=1))
    first = plane.trigger("one").run
    second = plane.trigger("one").run
    assert (first.state, second.state) == (RunState.RUNNING, RunState.QUEUED)
    [a] = plane.claim()
    done = plane.complete(ok(a))
    assert done.queued == Counter({"default": 1})
    assert run_state(plane, second.run_id) is RunState.RUNNING
    [b] = plane.claim()
    assert b.run_id == second.run_id


def test_paused_dag_queues_triggered_runs_until_unpaused(plane: Plane) -> None:
    from weir.server import runs as run_ops

    plane.register(dag_spec("p", py("only")))
    plane.db.write_sync(run_ops.set_paused, plane.clock.now(), plane.catalog, "p", True)
    run = plane.trigger("p").run
    assert run.state is RunState.QUEUED
    assert plane.claim() == []
    queued = plane.db.write_sync(run_ops.set_paused, plane.clock.now(), plane.catalog, "p", False)
    assert queued == Counter({"default": 1})
    assert run_state(plane, run.run_id) is RunState.RUNNING


def test_a_batch_of_triggers_starts_what_max_active_runs_allows_and_queues_the_rest(plane: Plane) -> None:
    from weir.server import runs as run_ops
    from weir.server.store import dags

    plane.register(dag_spec("two", py("only"), max_active_runs=2))
    requests = [run_ops.TriggerRequest("two", {"n": n}) for n in range(4)]
    requests += [run_ops.TriggerRequest("two", {}, run_id="mine") for _ in range(2)]
    results, queued = plane.db.write_sync(run_ops.trigger_many, plane.clock.now(), plane.catalog, requests)
    rows = [r for r in results if not isinstance(r, Exception)]
    # One instant, no logical date: the generated ids are told apart by a suffix.
    assert [r.run_id.rsplit("Z", 1)[1] for r in rows[:4]] == ["", "-2", "-3", "-4"]
    assert [r.state for r in rows] == [RunState.RUNNING] * 2 + [RunState.QUEUED] * 3
    assert [r.conf for r in rows[:4]] == [{"n": n} for n in range(4)]
    assert isinstance(results[5], AlreadyExists) and "mine" in str(results[5])
    assert queued == Counter({"default": 2})
    assert [run_state(plane, r.run_id) for r in rows] == [r.state for r in rows]  # as stored

    # Queued runs while a slot is free (the DAG row unpaused behind their back):
    # a new trigger starts the oldest first, not itself.
    plane.db.write_sync(dags.set_paused, plane.clock.now(), "two", True)
    [a, b] = plane.claim()
    plane.complete(ok(a), ok(b))
    assert [run_state(plane, r.run_id) for r in rows[2:]] == [RunState.QUEUED] * 3
    plane.db.write_sync(dags.set_paused, plane.clock.now(), "two", False)
    late = plane.trigger("two", run_id="late").run
    assert late.state is RunState.QUEUED
    assert [run_state(plane, r.run_id) for r in rows[2:]] == [RunState.RUNNING] * 2 + [RunState.QUEUED]


def test_trigger_errors_name_the_problem(plane: Plane) -> None:
    with pytest.raises(NotFound, match="'missing' is not registered"):
        plane.trigger("missing")
    plane.register(dag_spec("d", py("a")))
    plane.trigger("d", run_id="nightly-1")
    with pytest.raises(AlreadyExists, match="nightly-1"):
        plane.trigger("d", run_id="nightly-1")
    with pytest.raises(InvalidArgument, match="run_id"):
        plane.trigger("d", run_id="has spaces")


def test_new_versions_are_pinned_by_new_runs_only(plane: Plane) -> None:
    plane.register(dag_spec("v", py("a")))
    old = plane.trigger("v").run
    plane.register(dag_spec("v", py("a"), py("b", "a")))
    new = plane.trigger("v").run
    assert old.version_id != new.version_id
    assert set(states(plane, old.run_id)) == {"a"}
    assert set(states(plane, new.run_id)) == {"a", "b"}


def test_task_instance_rows_stay_unique_per_run(plane: Plane) -> None:
    plane.register(wide("w", 5))
    plane.trigger("w")
    plane.trigger("w")
    count = plane.db.read_sync(
        lambda c: c.execute(select(func.count()).select_from(task_instances)).scalar_one()
    )
    assert count == 10


def test_a_report_claims_after_applying_its_outcomes_and_skips_queues_known_empty(plane: Plane) -> None:
    plane.register(chain("c", 3))
    plane.register(wide("w", 2))
    plane.trigger("c")
    [t0] = plane.claim(1)
    want = ClaimRequest("w1", ["default"], 4)
    # The outcome queues t1, and the same transaction claims it.
    done = plane.report(Report([ok(t0)], want, only_if_queued=True))
    assert [a.task_id for a in done.claimed[0]] == ["t1"] and done.short == [True]
    assert done.applied.queued == Counter()  # nothing left for a poll to wake for
    [t1] = done.claimed[0]
    [t2] = plane.report(Report([ok(t1)], want, only_if_queued=True)).claimed[0]
    assert t2.task_id == "t2"
    # Work queued by someone else: a claim on queues known empty whose outcomes
    # queue nothing leaves it to the polls its own wake-up reaches...
    plane.trigger("w")
    skipped = plane.report(Report([ok(t2)], want, only_if_queued=True))
    assert skipped.claimed == [[]] and skipped.applied.acks[0].status is AckStatus.ACCEPTED
    # ...while an ordinary claim takes it.
    taken = plane.report(Report([], want))
    assert sorted((a.dag_id, a.task_id) for a in taken.claimed[0]) == [("w", "t0"), ("w", "t1")]


def _row(plane: Plane, task_id: str) -> Any:
    return plane.db.read_sync(
        lambda c: c.execute(select(task_instances).where(task_instances.c.task_id == task_id)).one()
    )


def test_a_report_on_queues_known_empty_is_handed_the_task_its_outcome_readies(plane: Plane) -> None:
    plane.register(chain("c", 3))
    plane.trigger("c")
    [t0] = plane.claim(1)
    done = plane.report(Report([ok(t0)], ClaimRequest("w1", ["default"], 4), only_if_queued=True))
    [t1] = done.claimed[0]
    assert t1.task_id == "t1" and t1.try_number == 1 and done.short == [True]
    assert done.applied.queued == Counter()  # never queued: no poll is woken for it
    row = _row(plane, "t1")
    assert row.state == TaskState.RUNNING and row.worker_id == "w1" and row.attempt == t1.attempt
    assert row.queued_at == row.started_at == row.available_at  # it waited nowhere
    assert row.lease_expires_at == t1.lease_expires_at
    # It runs and reports like any claimed task.
    assert plane.acks(ok(t1))[0].status is AckStatus.ACCEPTED
    assert _row(plane, "t2").state == TaskState.QUEUED


def _statements(plane: Plane, in_transaction: list[bool] | None = None) -> list[str]:
    """SQL statements the plane's engine runs from now on, once per parameter set
    (an executemany runs its statement once per row); BEGIN and COMMIT are not statements.
    With `in_transaction`, it also gets, per statement, whether it ran inside a
    transaction (psycopg not in autocommit: BEGIN before, COMMIT after)."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen.extend([statement] * (len(parameters) if many else 1))
        if in_transaction is not None:
            in_transaction.append(not conn.connection.dbapi_connection.autocommit)

    event.listen(plane.db.engine, "before_cursor_execute", note)
    return seen


def test_a_hop_on_postgres_is_one_statement(plane: Plane) -> None:
    if plane.db.is_sqlite:
        pytest.skip("the hop statement puts UPDATEs in a WITH, which SQLite cannot do")
    plane.register(chain("c", 3))
    run = plane.trigger("c").run
    [t0] = plane.claim(1)
    seen = _statements(plane)
    # Ends t0, records its attempt, queues t1, counts t0 off the run.
    assert plane.acks(ok(t0))[0].status is AckStatus.ACCEPTED
    assert len(seen) == 1
    assert states(plane, run.run_id) == {
        "t0": TaskState.SUCCESS,
        "t1": TaskState.QUEUED,
        "t2": TaskState.NONE,
    }
    [t1] = plane.claim(1)
    seen.clear()
    # ... and with a hand-off, also starts t2 on the reporting worker.
    done = plane.report(Report([ok(t1)], ClaimRequest("w1", ["default"], 1), only_if_queued=True))
    assert [t.task_id for t in done.claimed[0]] == ["t2"] and len(seen) == 1
    [t2] = done.claimed[0]
    seen.clear()
    # The last task ends the run: the run's end takes its own statements.
    assert plane.complete(ok(t2)).finished_runs == [(run.run_id, RunState.SUCCESS)]
    assert attempts(plane) == 3
    assert _row(plane, "t2").state == TaskState.SUCCESS


def test_a_lone_hop_commits_by_itself_on_postgres(plane: Plane) -> None:
    if plane.db.is_sqlite:
        pytest.skip("the hop statement is Postgres's")
    plane.register(chain("c", 3))
    run = plane.trigger("c").run
    [t0] = plane.claim(1)
    in_transaction: list[bool] = []
    seen = _statements(plane, in_transaction)
    # Refused without a write: a log tail to store, a failure.
    with_log = TaskOutcome(t0.task_instance_id, t0.attempt, Outcome.SUCCESS, log_tail=b"done\n")
    assert plane.report_alone(Report([with_log])) is None
    assert plane.report_alone(Report([failed(t0)])) is None
    assert seen == [] and _row(plane, "t0").state == TaskState.RUNNING
    seen.clear()
    # The hop: one statement, no BEGIN, no COMMIT; t1 is handed to the reporting worker.
    done = plane.report_alone(Report([ok(t0)], ClaimRequest("w1", ["default"], 1), only_if_queued=True))
    assert isinstance(done, ReportsApplied)
    assert [a.status for a in done.applied.acks] == [AckStatus.ACCEPTED]
    [t1] = done.claimed[0]
    assert t1.task_id == "t1" and len(seen) == 1 and in_transaction[-1:] == [False]
    assert states(plane, run.run_id) == {
        "t0": TaskState.SUCCESS,
        "t1": TaskState.RUNNING,
        "t2": TaskState.NONE,
    }
    assert attempts(plane) == 1
    # A repeated report writes nothing and is left to the general path, which tells it apart.
    seen.clear()
    assert plane.report_alone(Report([ok(t0)])) is None
    assert plane.acks(ok(t0))[0].status is AckStatus.DUPLICATE
    assert attempts(plane) == 1


def test_a_run_a_lone_hop_counted_to_zero_is_ended_after_it_or_by_the_sweep(plane: Plane) -> None:
    if plane.db.is_sqlite:
        pytest.skip("the hop statement is Postgres's")
    plane.register(dag_spec("one", py("a"), max_active_runs=5))
    first, second = plane.trigger("one").run, plane.trigger("one").run
    a1, a2 = plane.claim(2)
    # The statement counted the run's last task: the run's end is left to a transaction.
    committed = plane.report_alone(Report([ok(a1)]))
    assert isinstance(committed, HopCommitted)
    after = plane.report(Report([ok(a1)]), committed=committed)
    assert after.applied.finished_runs == [(first.run_id, RunState.SUCCESS)]
    assert [a.status for a in after.applied.acks] == [AckStatus.ACCEPTED]
    # The server dies between the two: the expiry sweep ends the run as it would have.
    assert isinstance(plane.report_alone(Report([ok(a2)])), HopCommitted)
    assert run_state(plane, second.run_id) is RunState.RUNNING
    swept = plane.db.write_sync(completion.sweep, plane.clock.now(), plane.catalog)
    assert swept.finished_runs == [(second.run_id, RunState.SUCCESS)]
    assert run_state(plane, second.run_id) is RunState.SUCCESS
    assert plane.db.write_sync(completion.sweep, plane.clock.now(), plane.catalog).finished_runs == []


def test_many_rows_take_as_many_statements_as_one_on_postgres(plane: Plane) -> None:
    if plane.db.is_sqlite:
        pytest.skip("SQLite inserts and ends many rows one by one (executemany)")
    plane.register(wide("w", 300))
    seen = _statements(plane)
    plane.trigger("w")
    assert sum("INSERT INTO task_instances" in s for s in seen) == 1
    claimed = plane.claim(300)
    batches = [
        [ok(a) for a in claimed[10:20]],
        [ok(a) for a in claimed[20:290]],
        [failed(a) for a in claimed[:10]],
    ]
    counts = []
    for batch in batches:
        seen.clear()
        assert {a.status for a in plane.acks(*batch)} == {AckStatus.ACCEPTED}
        counts.append(len(seen))
    # 10 successes, 270 successes, 10 failures: the same statements.
    assert counts[0] == counts[1] == counts[2], counts
    assert attempts(plane) == 290
    [outcome] = plane.db.read_sync(
        lambda c: c.execute(
            select(task_attempts.c.outcome, task_attempts.c.error).where(
                task_attempts.c.ti_id == claimed[0].task_instance_id
            )
        ).all()
    )
    assert outcome.outcome == TaskState.FAILED and "boom" in outcome.error


def test_a_wrong_memory_of_which_task_an_instance_is_changes_nothing(plane: Plane) -> None:
    plane.register(chain("c", 2))
    run = plane.trigger("c").run
    [t0] = plane.claim(1)
    # The server remembers instances it handed out; were that memory wrong, the
    # statement's guard refuses it and the report takes the general path.
    plane.catalog.handed_out([(t0.task_instance_id, _row(plane, "t0").run_pk, "t1")])
    assert plane.acks(ok(t0))[0].status is AckStatus.ACCEPTED
    assert states(plane, run.run_id) == {"t0": TaskState.SUCCESS, "t1": TaskState.QUEUED}
    assert attempts(plane) == 1


def test_a_task_without_an_upstream_count_is_judged_when_its_upstream_succeeds(plane: Plane) -> None:
    # Runs in flight across migration 0004 have no pending_upstream: promotion reads states.
    plane.register(chain("c", 3))
    run = plane.trigger("c").run
    plane.db.write_sync(lambda c: c.execute(update(task_instances).values(pending_upstream=None)))
    [t0] = plane.claim(1)
    assert plane.acks(ok(t0))[0].status is AckStatus.ACCEPTED
    assert states(plane, run.run_id)["t1"] is TaskState.QUEUED
    [t1] = plane.claim(1)
    # Judged and queued, not handed off: the report's claim takes it from the queue.
    done = plane.report(Report([ok(t1)], ClaimRequest("w1", ["default"], 1), only_if_queued=True))
    [t2] = done.claimed[0]
    assert t2.task_id == "t2" and not done.applied.started
    assert plane.complete(ok(t2)).finished_runs == [(run.run_id, RunState.SUCCESS)]


def test_a_hand_off_leaves_work_queued_meanwhile_to_the_polls_it_woke(plane: Plane) -> None:
    plane.register(chain("c", 2))
    plane.register(dag_spec("urgent", py("u", priority=10)))
    plane.trigger("c")
    [t0] = plane.claim(1)
    # Queued after the server last found the queue empty (another replica, say):
    # its own wake-up reaches a poll. The report is handed what its outcome readied.
    plane.trigger("urgent")
    done = plane.report(Report([ok(t0)], ClaimRequest("w1", ["default"], 1), only_if_queued=True))
    assert [t.task_id for t in done.claimed[0]] == ["t1"]
    assert _row(plane, "u").state == TaskState.QUEUED
    assert [t.task_id for t in plane.claim(4)] == ["u"]


def test_a_hand_off_never_skips_work_already_waiting_or_a_queue_the_worker_does_not_serve(
    plane: Plane,
) -> None:
    plane.register(dag_spec("c", py("a"), py("b", "a"), py("c", "b", queue="gpu")))
    plane.register(dag_spec("urgent", py("u", priority=10)))
    plane.trigger("c")
    [a] = plane.claim(1)
    plane.trigger("urgent")
    # The queue is not known empty: the claim takes by priority, and b waits its turn.
    done = plane.report(Report([ok(a)], ClaimRequest("w1", ["default"], 1)))
    assert [t.task_id for t in done.claimed[0]] == ["u"]
    assert _row(plane, "b").state == TaskState.QUEUED
    [b] = plane.claim(1)
    # c is in a queue this worker does not serve: queued for those who do.
    done = plane.report(Report([ok(b)], ClaimRequest("w1", ["default"], 1), only_if_queued=True))
    assert done.claimed == [[]] and done.applied.queued == Counter({"gpu": 1})
    assert _row(plane, "c").state == TaskState.QUEUED
