"""Group commit: calls that wait together share one transaction; each gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from weir.errors import NotFound, ResourceExhausted
from weir.server.group_commit import GroupCommit, first_error


class Store:
    """Stands in for a transaction: records each batch, answers per item."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()

    async def apply(self, items: list[int]) -> list[int | Exception]:
        self.batches.append(items)
        await self.gate.wait()
        return [NotFound(f"no {i}") if i < 0 else i * 10 for i in items]


def test_calls_waiting_behind_a_transaction_share_the_next_one() -> None:
    async def scenario() -> None:
        store = Store()
        group: GroupCommit[int, int] = GroupCommit(store.apply, transactions=1, batch=100)
        first = asyncio.ensure_future(group.submit([1]))
        await asyncio.sleep(0)
        later = [asyncio.ensure_future(group.submit([i, i + 1])) for i in (2, 4, 6)]
        await asyncio.sleep(0)
        assert store.batches == [[1]], "the first call must not wait for company"
        store.gate.set()
        assert await first == [10]
        assert [await f for f in later] == [[20, 30], [40, 50], [60, 70]]
        assert store.batches == [[1], [2, 3, 4, 5, 6, 7]]

    asyncio.run(scenario())


def test_a_bad_item_fails_alone() -> None:
    async def scenario() -> None:
        store = Store()
        store.gate.set()
        group: GroupCommit[int, int] = GroupCommit(store.apply, transactions=1, batch=100)
        good, bad = await asyncio.gather(group.submit([3]), group.submit([-1]))
        assert first_error(good) == [30]
        with pytest.raises(NotFound, match="no -1"):
            first_error(bad)

    asyncio.run(scenario())


def test_batches_stop_at_the_batch_size_and_a_failed_transaction_fails_its_calls() -> None:
    async def scenario() -> None:
        seen: list[list[int]] = []

        async def broken(items: list[int]) -> list[int | Exception]:
            seen.append(items)
            raise ConnectionError("database went away")

        group: GroupCommit[int, int] = GroupCommit(broken, transactions=1, batch=3)
        calls = [group.submit([i, i]) for i in range(3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results)
        assert seen == [[0, 0], [1, 1], [2, 2]]

    asyncio.run(scenario())


def test_too_many_waiting_is_refused_before_anything_is_queued() -> None:
    async def scenario() -> None:
        store = Store()
        group: GroupCommit[int, int] = GroupCommit(store.apply, transactions=1, batch=100, max_waiting=2)
        running = asyncio.ensure_future(group.submit([1]))
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(group.submit([i])) for i in (2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(ResourceExhausted, match="2 requests waiting"):
            await group.submit([4])
        store.gate.set()
        assert await running == [10]
        assert [await w for w in waiting] == [[20], [30]]
        assert store.batches == [[1], [2, 3]]

    asyncio.run(scenario())


def test_a_batch_is_bounded_by_the_weight_of_its_items() -> None:
    async def scenario() -> None:
        store = Store()
        # An item weighs its value: a report weighs its outcomes.
        group: GroupCommit[int, int] = GroupCommit(store.apply, transactions=1, batch=10, weight=lambda i: i)
        first = asyncio.ensure_future(group.submit([1]))
        await asyncio.sleep(0)
        later = [asyncio.ensure_future(group.submit([w])) for w in (6, 3, 5)]
        await asyncio.sleep(0)
        store.gate.set()
        await first
        await asyncio.gather(*later)
        assert store.batches == [[1], [6, 3], [5]]

    asyncio.run(scenario())
