"""Cross-replica wake-ups through Postgres LISTEN/NOTIFY.

When a replica queues work it publishes "<replica>|<queue>=<n>,..." on one
channel after commit; every other replica wakes that many of its sleeping
polls. Publishing happens off the hot path (after commit, coalesced per
event-loop turn) and a lost notification only delays work until the next
safety poll, so NOTIFY is an accelerator, never the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Mapping

import psycopg
from sqlalchemy.engine import make_url

from weir.server.store.db import APPLICATION_NAME
from weir.server.waker import Waker

log = logging.getLogger("weir.server.notify")

CHANNEL = "weir_queued"


def conninfo(sqlalchemy_url: str) -> str:
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    url = url.update_query_dict({"application_name": APPLICATION_NAME})
    return url.render_as_string(hide_password=False)


def encode(replica: str, counts: Mapping[str, int]) -> str:
    return replica + "|" + ",".join(f"{q}={n}" for q, n in counts.items())


def decode(payload: str) -> tuple[str, Counter[str]]:
    replica, _, body = payload.partition("|")
    counts: Counter[str] = Counter()
    for part in filter(None, body.split(",")):
        queue, _, n = part.rpartition("=")
        if queue and n.isdigit():
            counts[queue] += int(n)
    return replica, counts


class PgNotifier:
    def __init__(self, url: str, waker: Waker) -> None:
        self.conninfo = conninfo(url)
        self.waker = waker
        self.replica = uuid.uuid4().hex[:12]
        self._pending: Counter[str] = Counter()
        self._flush: asyncio.Task[None] | None = None
        self._publisher: psycopg.AsyncConnection[object] | None = None
        self.received = 0

    # -- publishing ------------------------------------------------------------
    def publish(self, counts: Mapping[str, int]) -> None:
        """Announce newly queued work to the other replicas (coalesced)."""
        self._pending.update(counts)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        await asyncio.sleep(0)  # gather what this loop turn queued
        counts, self._pending = self._pending, Counter()
        if not counts:
            return
        try:
            if self._publisher is None or self._publisher.closed:
                self._publisher = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            await self._publisher.execute("SELECT pg_notify(%s, %s)", (CHANNEL, encode(self.replica, counts)))
        except psycopg.Error as exc:
            # The other replicas' safety polls will find the work.
            log.debug("could not publish a wake-up: %s", exc)
            if self._publisher is not None:
                with contextlib.suppress(Exception):
                    await self._publisher.close()
            self._publisher = None

    # -- listening --------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.2
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.2
                    # Notifications sent while we were away are lost: look for work once.
                    self.waker.nudge()
                    listen = asyncio.ensure_future(self._listen(conn))
                    stopped = asyncio.ensure_future(stop.wait())
                    done, _ = await asyncio.wait({listen, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    for task in (listen, stopped):
                        task.cancel()
                    if listen in done:
                        listen.result()  # raises why the connection ended
            except (psycopg.Error, OSError) as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)

    async def _listen(self, conn: psycopg.AsyncConnection[object]) -> None:
        async for note in conn.notifies():
            replica, counts = decode(note.payload)
            if replica != self.replica and counts:
                self.received += 1
                self.waker.notify(counts)

    async def close(self) -> None:
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher.close()
