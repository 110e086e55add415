"""Structured concurrency: every task has an owner that awaits it or cancels it, and none outlives it.

`cancel_and_wait` is how an owner lets go of its tasks. It waits for them to end even when the
owner is itself cancelled meanwhile (a request's deadline and its client's disconnect can both
arrive at once): the cancellation is passed on once every task has ended, so a call is never left
running behind its request, and every task's failure is read, so none is reported as lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def cancel_and_wait(tasks: Collection[asyncio.Future[Any]]) -> None:
    """Cancel `tasks` and return once all have ended; a cancellation meanwhile is re-raised then.
    `tasks` may be an owner's live set: a task added to it while waiting is cancelled too."""
    asked: set[asyncio.Future[Any]] = set()  # cancelled once each
    interrupted: asyncio.CancelledError | None = None
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:  # a live collection may have grown meanwhile: its new tasks go too
            if task not in asked:
                task.cancel()
                asked.add(task)
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError as cancelled:  # the owner is let go too: after its tasks
            interrupted = cancelled
    for task in tasks:
        if not task.cancelled():
            task.exception()  # read: the owner decided what it means
    if interrupted is not None:
        raise interrupted


async def all_or_none(work: Iterable[Awaitable[T]]) -> list[T]:
    """Every result, concurrently; when one fails, the others are cancelled at once."""
    work = list(work)
    if len(work) == 1:
        return [await work[0]]
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        await cancel_and_wait(tasks)
