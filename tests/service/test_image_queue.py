"""The image queue on its own, with no running loop: admission, reservations, order, clients that
left, and answering every waiter when a batch cannot finish."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.errors import NotReady, Overloaded
from service.image_queue import Entry, ImageQueue
from service.metrics import Metrics


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()  # futures need a loop to belong to; it never runs here
    yield loop
    loop.close()


def entries(loop, n: int) -> list[Entry]:
    return [Entry(np.full((2, 2, 3), i, np.uint8), loop.create_future()) for i in range(n)]


def depth(metrics: Metrics) -> float:
    return metrics.queue_depth._value.get()


def test_full_queue_refuses_at_once_and_reservations_count(loop):
    metrics = Metrics.create(4)
    queue = ImageQueue(4, 7, metrics)
    queue.admit(4)
    queue.push(entries(loop, 3))
    assert len(queue) == 3 and depth(metrics) == 3
    with pytest.raises(Overloaded, match="3 of 4") as info:
        queue.admit(2)
    assert info.value.headers == {"Retry-After": "7"}
    with queue.reserve(1), pytest.raises(Overloaded), queue.reserve(1):  # 3 queued + 1 decoding: no room
        pass
    with queue.reserve(1):  # the reservation ended: room again
        pass


def test_take_keeps_order_skips_clients_that_left_and_caps(loop):
    queue = ImageQueue(16, 1, Metrics.create(8))
    batch = entries(loop, 6)
    queue.push(batch)
    batch[0].future.cancel()
    batch[2].future.cancel()
    assert queue.drop_cancelled() and queue.head() is batch[1]  # the head's client left: dropped
    taken = queue.take(3)
    assert [int(e.pixels[0, 0, 0]) for e in taken] == [1, 3, 4] and len(queue) == 1


def test_fail_all_answers_queued_and_taken_but_not_finished(loop):
    queue = ImageQueue(16, 1, Metrics.create(8))
    batch = entries(loop, 4)
    queue.push(batch)
    first, second = queue.take(1), queue.take(1)
    queue.done(first)  # this batch finished: its future is no longer the queue's to answer
    first[0].future.set_result("ok")
    queue.fail_all(NotReady("shutting down"))
    assert first[0].future.result() == "ok"
    for e in [*second, *batch[2:]]:
        assert isinstance(e.future.exception(), NotReady)
    assert len(queue) == 0


def test_refusal_refuses_everything(loop):
    queue = ImageQueue(16, 3, Metrics.create(8))
    queue.refusal = "the server is shutting down"
    with pytest.raises(NotReady, match="shutting down") as info:
        queue.admit(1)
    assert info.value.headers == {"Retry-After": "3"}
