"""Safety poll: now and then, one sleeping poll per queue looks for work itself.

Wake-ups normally come from this replica's own commits, retry timers and
(Postgres) other replicas' notifications. This catches what those could
miss (a replica that died between commit and notify, a lost notification)
at the cost of one claim query per queue per interval, and only while polls
are waiting.
"""

from __future__ import annotations

from datetime import datetime

from weir.server.clock import Clock
from weir.server.services.base import Service
from weir.server.waker import Waker


class SafetyPoll(Service):
    name = "safety-poll"

    def __init__(self, waker: Waker, clock: Clock, interval: float) -> None:
        super().__init__(clock, interval)
        self.waker = waker

    async def tick(self, now: datetime) -> int:
        return self.waker.nudge()
