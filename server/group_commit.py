"""Group commit: requests that arrive while a transaction runs share the next one.

A worker's report or a trigger is a small transaction whose cost is mostly
the commit (a round trip and a WAL flush). Under load, calls queue here and
each transaction takes everything waiting, up to `batch` items (or item
weights: `weight` says how much one item counts); at most
`transactions` run at once. An idle server starts a transaction for the
first call at once, so batching never adds latency, and the busier the
server, the fewer commits per item.

`apply` gets the items of every waiting call in order and returns one entry
per item: a result, or the exception that item alone failed with (a bad
request must not fail its neighbours). An exception raised by `apply`
itself (the database went away) fails every call in that transaction.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from weir.errors import ResourceExhausted

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        apply: Callable[[list[Item]], Awaitable[list[Result | Exception]]],
        *,
        transactions: int,
        batch: int,
        max_waiting: int | None = None,
        what: str = "requests",
        weight: Callable[[Item], int] = lambda _: 1,
    ) -> None:
        self._apply = apply
        self._weight = weight
        self._transactions = transactions
        self._batch = batch
        self._max_waiting = max_waiting
        self._what = what
        #: (items, their weight, the caller's future)
        self._waiting: deque[tuple[list[Item], int, asyncio.Future[list[Result | Exception]]]] = deque()
        self._waiting_items = 0
        self._running = 0
        #: Transactions in flight, for a graceful drain.
        self.inflight: set[asyncio.Task[None]] = set()

    async def submit(self, items: Sequence[Item]) -> list[Result | Exception]:
        """Apply `items` in a shared transaction; one result or exception per item.

        Raises ResourceExhausted, changing nothing, when `max_waiting` items
        are already waiting: the caller should retry later.
        """
        if self._max_waiting is not None and self._waiting_items >= self._max_waiting:
            raise ResourceExhausted(
                f"the server has {self._waiting_items} {self._what} waiting for the database; retry shortly"
            )
        future: asyncio.Future[list[Result | Exception]] = asyncio.get_running_loop().create_future()
        size = sum(self._weight(i) for i in items)
        self._waiting.append((list(items), size, future))
        self._waiting_items += size
        self._start()
        # The transaction runs to the end whether or not this caller waits for it.
        return await asyncio.shield(future)

    def _start(self) -> None:
        while self._waiting and self._running < self._transactions:
            calls: list[tuple[list[Item], asyncio.Future[list[Result | Exception]]]] = []
            size = 0
            while self._waiting and (not calls or size + self._waiting[0][1] <= self._batch):
                items, weight, future = self._waiting.popleft()
                calls.append((items, future))
                size += weight
            self._waiting_items -= size
            self._running += 1
            task = asyncio.ensure_future(self._run(calls))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

    async def _run(self, calls: list[tuple[list[Item], asyncio.Future[list[Result | Exception]]]]) -> None:
        try:
            results = await self._apply([item for items, _ in calls for item in items])
        except BaseException as exc:
            for _, future in calls:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            start = 0
            for items, future in calls:
                if not future.done():
                    future.set_result(results[start : start + len(items)])
                start += len(items)
        finally:
            self._running -= 1
            self._start()


def first_error(results: Sequence[Result | Exception]) -> list[Result]:
    """The results, or raise the first item's exception."""
    out: list[Result] = []
    for r in results:
        if isinstance(r, Exception):
            raise r
        out.append(r)
    return out
