"""Wake-ups for long-polls: no busy polling, no thundering herd.

A poll that found nothing to claim subscribes here and sleeps. When a
transaction queues work it notifies the queues involved after commit, and
just enough sleeping polls (oldest first) wake to take it. A poll that
claims as many tasks as it had slots passes the wake-up on, in case more
work is waiting.

Everything here runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping


class Waiter:
    __slots__ = ("event", "queues", "slots")

    def __init__(self, queues: frozenset[str], slots: int) -> None:
        self.queues = queues
        self.slots = slots
        self.event = asyncio.Event()

    async def wait(self, timeout: float) -> bool:
        """True when woken, False when the timeout passed first."""
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class Waker:
    def __init__(self) -> None:
        self._waiters: dict[Waiter, None] = {}  # insertion-ordered set: oldest first

    def subscribe(self, queues: Iterable[str], slots: int) -> Waiter:
        waiter = Waiter(frozenset(queues), max(1, slots))
        self._waiters[waiter] = None
        return waiter

    def unsubscribe(self, waiter: Waiter) -> None:
        self._waiters.pop(waiter, None)

    def notify(self, queued: Mapping[str, int]) -> int:
        """Wake sleeping polls whose free slots cover `queued` (tasks per queue); returns how many."""
        woken = 0
        for queue, count in queued.items():
            remaining = count
            for waiter in self._waiters:
                if remaining <= 0:
                    break
                if queue in waiter.queues and not waiter.event.is_set():
                    waiter.event.set()
                    remaining -= waiter.slots
                    woken += 1
        return woken

    def nudge(self) -> int:
        """Wake one sleeping poll per queue that has any (the safety poll)."""
        queues = {q for w in self._waiters if not w.event.is_set() for q in w.queues}
        return self.notify(dict.fromkeys(queues, 1))

    def notify_all(self) -> None:
        for waiter in self._waiters:
            waiter.event.set()

    @property
    def sleeping(self) -> int:
        return sum(1 for w in self._waiters if not w.event.is_set())
