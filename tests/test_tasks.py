"""Structured concurrency (`approaches/tasks.py`): an owner lets go of its tasks only once they have
ended, even when it is cancelled itself meanwhile, and their failures are read, never lost.

Without this, a request's deadline and the cancellation of its proposal phase could arrive together:
the hedged calls of a hung backend were then left to run to their own timeouts, and their failures
were reported as "Task exception was never retrieved" in the server's log (tests/test_faults.py's
clean-log check caught it).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from selfmoa.approaches.tasks import all_or_none, cancel_and_wait


async def _slow_to_stop(stopped: list[str]) -> None:
    """A task whose clean-up takes a while after it is cancelled, and then fails."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        await asyncio.sleep(0.05)
        stopped.append("stopped")
        raise RuntimeError("failed while stopping") from None


def _lost_failures(scenario: Any) -> list[str]:
    """What the event loop reports as never retrieved while running `scenario`, once collected."""
    reported: list[str] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: reported.append(context["message"]))
        await scenario()
        gc.collect()

    asyncio.run(main())
    return reported


def test_an_owner_cancelled_while_letting_go_waits_for_its_tasks_then_is_cancelled() -> None:
    stopped: list[str] = []

    async def scenario() -> None:
        child = asyncio.ensure_future(_slow_to_stop(stopped))
        await asyncio.sleep(0)
        owner = asyncio.ensure_future(cancel_and_wait([child]))
        await asyncio.sleep(0.01)
        owner.cancel()  # a second cancellation, while the owner waits for its child to stop
        with pytest.raises(asyncio.CancelledError):
            await owner
        assert child.done() and stopped == ["stopped"]  # the owner did not leave before its child

    assert _lost_failures(scenario) == []


def test_a_task_that_fails_while_stopping_has_its_failure_read() -> None:
    stopped: list[str] = []

    async def scenario() -> None:
        child = asyncio.ensure_future(_slow_to_stop(stopped))
        await asyncio.sleep(0)
        await cancel_and_wait([child])  # its RuntimeError is not read here, but was there
        assert child.done() and not child.cancelled() and stopped == ["stopped"]

    assert _lost_failures(scenario) == []


def test_a_task_added_to_the_owners_set_while_it_lets_go_is_cancelled_too() -> None:
    async def scenario() -> None:
        owned: set[asyncio.Task[None]] = set()
        late: list[asyncio.Task[None]] = []

        async def spawns_while_stopping() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                task = asyncio.ensure_future(asyncio.sleep(10))  # e.g. a fan-out that was under way
                owned.add(task)
                late.append(task)
                raise

        owned.add(asyncio.ensure_future(spawns_while_stopping()))
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait(owned), 5)  # without its cancel, the late task takes 10 s
        assert late and late[0].cancelled()

    assert _lost_failures(scenario) == []


def test_all_or_none_cancels_the_others_when_one_fails() -> None:
    stopped: list[str] = []

    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise KeyError("first")

    async def scenario() -> None:
        with pytest.raises(KeyError):
            await all_or_none([_slow_to_stop(stopped), fails()])
        assert stopped == ["stopped"]  # cancelled, and waited for

    assert _lost_failures(scenario) == []
    assert asyncio.run(all_or_none([asyncio.sleep(0, result=1), asyncio.sleep(0, result=2)])) == [1, 2]
