"""The waker's memory of empty queues: skip claims only while nothing can be there."""

from __future__ import annotations

import asyncio

from weir.server.waker import Waker


def test_a_queue_found_empty_is_not_worth_claiming_until_work_is_queued() -> None:
    waker = Waker()
    assert waker.worth_claiming(["default"]), "an unknown queue must be claimed from"
    waker.found_empty(waker.snapshot(["default"]))
    assert not waker.worth_claiming(["default"])
    waker.notify({"default": 1})
    assert waker.worth_claiming(["default"])


def test_work_queued_during_the_claim_keeps_the_queue_worth_claiming() -> None:
    waker = Waker()
    before = waker.snapshot(["default"])
    waker.notify({"default": 3})  # committed while the claim ran
    waker.found_empty(before)
    assert waker.worth_claiming(["default"])


def test_one_live_queue_among_several_is_enough() -> None:
    waker = Waker()
    waker.found_empty(waker.snapshot(["a", "b"]))
    assert not waker.worth_claiming(["a", "b"])
    waker.notify({"b": 1})
    assert waker.worth_claiming(["a", "b"])
    assert not waker.worth_claiming(["a"])


def test_the_safety_nudge_and_notify_all_forget_empty_queues() -> None:
    waker = Waker()
    waker.found_empty(waker.snapshot(["a", "b"]))
    waker.nudge()
    assert waker.worth_claiming(["a"]) and waker.worth_claiming(["b"])
    waker.found_empty(waker.snapshot(["a"]))
    waker.notify_all()
    assert waker.worth_claiming(["a"])


def test_a_zero_count_does_not_move_the_generation_on() -> None:
    waker = Waker()
    waker.found_empty(waker.snapshot(["a"]))
    waker.notify({"a": 0})
    assert not waker.worth_claiming(["a"])


def test_notify_wakes_enough_sleepers_for_the_work_oldest_first() -> None:
    async def scenario() -> None:
        waker = Waker()
        first, second, third = (waker.subscribe(["q"], slots=2) for _ in range(3))
        assert waker.notify({"q": 3}) == 2
        assert first.event.is_set() and second.event.is_set() and not third.event.is_set()
        assert waker.sleeping == 1

    asyncio.run(scenario())
