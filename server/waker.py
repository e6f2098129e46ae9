"""Wake-ups for long-polls: no busy polling, no thundering herd.

A poll that found nothing to claim subscribes here and sleeps. When a
transaction queues work it notifies the queues involved after commit, and
just enough sleeping polls (oldest first) wake to take it. A poll that
claims as many tasks as it had slots passes the wake-up on, in case more
work is waiting.

It also remembers which queues a claim found empty, and whether anything
was queued there since (a generation per queue). A poll on queues known to
be empty skips its claim and goes straight to sleep, so a thousand idle
polls cost no database query when their waits end and they poll again.
Every path that makes work claimable notifies here (this replica's commits
and retry timers, other replicas' NOTIFY, the safety poll's nudge), and a
notification moves the generation on, so no work is missed by skipping.

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
            # asyncio.timeout, not wait_for: no task of its own, so a woken poll
            # resumes one loop iteration sooner (wake-up latency).
            async with asyncio.timeout(timeout):
                await self.event.wait()
        except TimeoutError:
            return False
        return True


class Waker:
    def __init__(self) -> None:
        self._waiters: dict[Waiter, None] = {}  # insertion-ordered set: oldest first
        #: queue -> how many notifications it has had (moves on whenever work may be there)
        self._generation: dict[str, int] = {}
        #: queue -> the generation at which a claim found nothing to take there
        self._empty: dict[str, int] = {}

    # -- remembering empty queues -----------------------------------------------
    def snapshot(self, queues: Iterable[str]) -> dict[str, int]:
        """The queues' generations, taken just before a claim."""
        return {q: self._generation.get(q, 0) for q in queues}

    def found_empty(self, snapshot: Mapping[str, int]) -> None:
        """A claim that started at `snapshot` took all there was (fewer than it asked for):
        those queues held nothing more to claim then."""
        for queue, generation in snapshot.items():
            if self._generation.get(queue, 0) == generation:
                self._empty[queue] = generation

    def worth_claiming(self, queues: Iterable[str]) -> bool:
        """False when every queue was found empty and nothing was queued there since."""
        return any(self._empty.get(q) != self._generation.get(q, 0) for q in queues)

    def _forget_empty(self) -> None:
        for queue in list(self._empty):
            self._moved_on(queue)

    def _moved_on(self, queue: str) -> None:
        self._generation[queue] = self._generation.get(queue, 0) + 1
        self._empty.pop(queue, None)

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
            if count > 0:
                self._moved_on(queue)
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
        """Forget which queues were empty and wake one sleeping poll per queue (the safety poll)."""
        self._forget_empty()
        queues = {q for w in self._waiters if not w.event.is_set() for q in w.queues}
        return self.notify(dict.fromkeys(queues, 1))

    def notify_all(self) -> None:
        self._forget_empty()
        for waiter in self._waiters:
            waiter.event.set()

    @property
    def sleeping(self) -> int:
        return sum(1 for w in self._waiters if not w.event.is_set())
