"""The runner pool's start-up, with real runner processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from weir.worker.runner import RunnerPool

# The first runner to import this folder goes on at once; the others wait until
# the test lets them (a file appears), as slow starts on a loaded machine would.
SLOW_BUT_ONE = """
import os, time
from pathlib import Path

here = Path(__file__).parent
try:
    os.close(os.open(here / "first", os.O_CREAT | os.O_EXCL))
except FileExistsError:
    while not (here / "go").exists():
        time.sleep(0.01)
"""


def test_the_pool_is_ready_with_its_first_runner_and_the_rest_join_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "slow_but_one.py").write_text(SLOW_BUT_ONE)

    async def scenario() -> tuple[tuple[int, int], tuple[int, int]]:
        pool = RunnerPool(3, tmp_path)
        all_idle = asyncio.Event()
        pool.on_free = lambda: pool.free == 3 and all_idle.set()
        try:
            await asyncio.wait_for(pool.start(), 20)
            at_start = pool.free, pool.starting
            (tmp_path / "go").touch()
            await asyncio.wait_for(all_idle.wait(), 60)
            await asyncio.sleep(0)  # the starts' own ends
            return at_start, (pool.free, pool.starting)
        finally:
            await pool.close()

    caplog.set_level("INFO", logger="weir.worker")
    # (idle, starting): one ready and two on the way, then all three idle.
    assert asyncio.run(scenario()) == ((1, 2), (3, 0))
    # The benchmark waits for this line before it measures.
    assert [r.message for r in caplog.records if "task runners" in r.message] == ["task runners: all 3 up"]


def test_a_pool_of_one_is_all_up_when_it_starts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> int:
        pool = RunnerPool(1, tmp_path)
        try:
            await pool.start()
            return pool.free
        finally:
            await pool.close()

    caplog.set_level("INFO", logger="weir.worker")
    assert asyncio.run(scenario()) == 1
    assert "task runners: all 1 up" in caplog.messages


def test_a_pool_whose_runners_cannot_start_fails_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No Python to run: every runner fails to start, so the worker must not start either.
    monkeypatch.setattr("weir.worker.runner.sys.executable", str(tmp_path / "no-such-python"))

    async def scenario() -> None:
        pool = RunnerPool(2, tmp_path)
        try:
            await pool.start()
        finally:
            await pool.close()

    with pytest.raises(FileNotFoundError):
        asyncio.run(scenario())
