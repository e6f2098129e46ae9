"""How many tasks a worker holds claimed ahead of its idle runners."""

from __future__ import annotations

import asyncio
from pathlib import Path

from weir.worker.runner import Runner, RunnerPool
from weir.worker.worker import PREFETCH_PER_SLOT, Worker, WorkerOptions


def targets(tmp_path: Path, task_seconds: list[float], prefetch: int | None = None) -> list[int]:
    async def scenario() -> list[int]:
        worker = Worker(WorkerOptions("127.0.0.1:1", tmp_path, concurrency=8, prefetch=prefetch))
        try:
            worker._drained = False  # the last poll got all it asked for
            out = []
            for seconds in task_seconds:
                worker._task_seconds = seconds
                out.append(worker._prefetch_target())
            return out
        finally:
            await worker.conn.close()

    return asyncio.run(scenario())


def test_short_tasks_are_claimed_ahead_up_to_the_count(tmp_path: Path) -> None:
    assert targets(tmp_path, [0.0001, 0.002]) == [8 * PREFETCH_PER_SLOT] * 2
    assert targets(tmp_path, [0.002], prefetch=20) == [20]


def test_longer_tasks_are_claimed_ahead_only_as_many_as_the_runners_finish_soon(tmp_path: Path) -> None:
    # 8 runners get through 8 * 0.25 s / 40 ms = 50 tasks within the horizon.
    assert targets(tmp_path, [0.04, 0.025]) == [50, 80]


def test_nothing_is_claimed_ahead_for_long_tasks_or_when_switched_off(tmp_path: Path) -> None:
    assert targets(tmp_path, [0.06, 1.0]) == [0, 0]
    assert targets(tmp_path, [0.001], prefetch=0) == [0]


def test_the_runner_that_finished_last_runs_the_next_task(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        pool = RunnerPool(3, tmp_path)
        for i in range(3):
            pool.give_back(Runner(tmp_path, i))
        first = pool.reserve()
        # The claim got one task, for the first runner reserved; the others go back.
        for r in reversed(first[1:]):
            pool.give_back(r)
        pool.give_back(first[0])  # its task finished
        return [r.index for r in first], [r.index for r in pool.reserve()]

    first, second = asyncio.run(scenario())
    # A warm process rather than the one idle longest: a chain runs on one runner.
    assert first == [2, 1, 0] and second == [2, 1, 0]
