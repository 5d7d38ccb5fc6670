"""aiim_project.core.batches.Batcher: calls queued meanwhile share one batch, each caller gets
its own result or error, and a call is served by a batch that starts after it was queued."""

from __future__ import annotations

import asyncio

import pytest

from aiim_project.core.batches import Batcher


class Recorder:
    """A batch function that records each batch it was given; `gate` holds a batch open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, requests: list[int]) -> list[object]:
        self.batches.append(list(requests))
        await self.gate.wait()
        return [ValueError(f"odd {r}") if r % 2 else r * 10 for r in requests]


async def first_batch_held(run: Recorder) -> tuple[Batcher, asyncio.Future]:
    """A batcher whose first batch ([2]) is running and held open by `run.gate`."""
    run.gate.clear()
    batcher = Batcher(run, max_batch=100)
    first = asyncio.ensure_future(batcher.call(2))
    await asyncio.sleep(0.01)
    assert run.batches == [[2]]
    return batcher, first


async def test_calls_queued_in_one_turn_share_one_batch_and_get_their_own_results():
    run = Recorder()
    batcher = Batcher(run, max_batch=100)
    results = await asyncio.gather(*(batcher.call(r) for r in (2, 3, 4)), return_exceptions=True)
    assert run.batches == [[2, 3, 4]]
    assert results[0] == 20 and results[2] == 40
    assert isinstance(results[1], ValueError) and str(results[1]) == "odd 3"


async def test_a_call_queued_while_a_batch_runs_is_served_by_the_next_batch():
    run = Recorder()
    batcher, first = await first_batch_held(run)
    later = [asyncio.ensure_future(batcher.call(r)) for r in (4, 6)]
    await asyncio.sleep(0.01)
    run.gate.set()
    assert await first == 20 and [await f for f in later] == [40, 60]
    assert run.batches == [[2], [4, 6]]


async def test_batches_are_bounded_and_keep_the_order_of_the_calls():
    run = Recorder()
    batcher = Batcher(run, max_batch=2)
    results = await asyncio.gather(*(batcher.call(r) for r in (2, 4, 6, 8, 10)))
    assert run.batches == [[2, 4], [6, 8], [10]]
    assert results == [20, 40, 60, 80, 100]


async def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_still_runs():
    calls: list[list[int]] = []

    async def flaky(requests: list[int]) -> list[int]:
        calls.append(requests)
        if len(calls) == 1:
            raise ConnectionError("dependency down")
        return requests

    batcher = Batcher(flaky, max_batch=100)
    failed = await asyncio.gather(batcher.call(1), batcher.call(2), return_exceptions=True)
    assert [type(e) for e in failed] == [ConnectionError, ConnectionError]
    assert await batcher.call(3) == 3


async def test_submit_takes_the_call_s_place_in_the_order_at_once():
    run = Recorder()
    batcher = Batcher(run, max_batch=100)
    called = asyncio.ensure_future(batcher.call(4))  # queued on the task's first step, later
    submitted = batcher.submit(2)
    assert await submitted == 20 and await called == 40
    assert run.batches == [[2, 4]]


async def test_a_cancelled_caller_is_left_out_of_its_batch():
    run = Recorder()
    batcher, first = await first_batch_held(run)
    gone = asyncio.ensure_future(batcher.call(4))
    kept = asyncio.ensure_future(batcher.call(6))
    await asyncio.sleep(0)
    gone.cancel()
    run.gate.set()
    assert await first == 20 and await kept == 60
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert run.batches == [[2], [6]]
