"""Hedged calls: a call that has not answered when it should have is raced by an identical one;
the first usable answer wins and every other attempt is cancelled (its connection closed).

"When it should have" is the run's `Hedging` policy: a multiple of the time this endpoint+model
usually takes to answer a call of the same shape (remembered per process: an `n=6` proposal call,
a single one and an aggregation take different times on the same server), and at the latest a
share of the time it had left. An attempt pausing between tries (waiting out a backend's
Retry-After, or our backoff) is not hung: the clock only runs while an attempt is on the wire.
Each raced call is paid for, so a run makes at most `Hedging.max_extra` of them, and the process
races at most `Hedging.max_share` of its calls in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from .backend import Chunk, Chunks, Completion
from .calls import Caller, Deadline, Flight
from .errors import BackendError, DeadlineExceeded, TransientError
from .tasks import cancel_and_wait
from .types import Message

log = logging.getLogger("selfmoa")

T = TypeVar("T")
_LOOK_AGAIN = 0.05  # seconds: how often a race looks whether a pausing attempt went out again
Key = tuple[str, str, str]  # (endpoint, model, shape of the call): whose usual time decides


async def hedged_complete(caller: Caller, endpoint: str, model: str, messages: Sequence[Message],
                          params: Mapping[str, Any], *, kind: str, n: int = 1, deadline: Deadline | None = None,
                          usable: Callable[[Completion], bool] = lambda _: True, step: int = 1) -> Completion:
    """`Caller.complete`, raced while it has not answered; `kind` (proposal, aggregation) and `n`
    make the call's shape."""
    until = deadline or caller.deadline

    def attempt(flight: Flight) -> Awaitable[Completion]:
        return caller.complete(endpoint, model, messages, params, n=n, deadline=until, flight=flight, kind=kind,
                               step=step)

    return await race(caller, (endpoint, model, f"{kind} n={n}"), attempt, deadline=until, usable=usable)


@dataclass
class _Opened:
    first: Chunk | None
    chunks: Chunks
    stack: AsyncExitStack


@asynccontextmanager
async def hedged_stream(caller: Caller, endpoint: str, model: str, messages: Sequence[Message],
                        params: Mapping[str, Any], *, step: int = 1) -> AsyncIterator[Chunks]:
    """A stream whose first chunk has arrived (raced until one has); leaving closes the call."""

    async def attempt(flight: Flight) -> _Opened:
        stack = AsyncExitStack()
        try:
            chunks = await stack.enter_async_context(caller.stream(endpoint, model, messages, params, flight=flight,
                                                                   kind="aggregation", step=step))
            return _Opened(await anext(chunks, None), chunks, stack)
        except BaseException:
            await stack.aclose()
            raise

    async def discard(opened: _Opened) -> None:
        await opened.stack.aclose()

    opened = await race(caller, (endpoint, model, "stream"), attempt, deadline=caller.deadline, discard=discard)
    async with opened.stack:
        yield _resumed(opened)


async def _resumed(opened: _Opened) -> AsyncIterator[Chunk]:
    if opened.first is not None:
        yield opened.first
    async for chunk in opened.chunks:
        yield chunk


async def race(caller: Caller, key: Key, attempt: Callable[[Flight], Awaitable[T]], *, deadline: Deadline,
               usable: Callable[[T], bool] = lambda _: True,
               discard: Callable[[T], Awaitable[None]] | None = None) -> T:
    """The first usable result of identical attempts, started one after the other while none has
    answered; the result of the last one to end when none is usable."""
    if not caller.hedging.enabled:
        return await attempt(Flight())
    winner: T = await _Race(caller, key, attempt, deadline, usable, discard).run()
    return winner


class _Race:
    """Attempts as tasks owned by the race: whatever way the race ends, none outlives it."""

    def __init__(self, caller: Caller, key: Key, attempt: Callable[[Flight], Awaitable[Any]], deadline: Deadline,
                 usable: Callable[[Any], bool], discard: Callable[[Any], Awaitable[None]] | None) -> None:
        self.caller, self.key, self.attempt, self.deadline = caller, key, attempt, deadline
        self.usable, self.discard = usable, discard
        self.flights: dict[asyncio.Task[Any], Flight] = {}
        self.running: set[asyncio.Task[Any]] = set()
        self.ended: list[asyncio.Task[Any]] = []  # in the order they ended
        self.spent = False  # no more races: the budget ran out

    async def run(self) -> Any:
        winner = None
        try:
            self._launch()
            while (winner := self._decided()) is None:
                await self._next()
            return winner.result()
        finally:
            await self._settle(winner)

    async def _next(self) -> None:
        """Wait for an attempt to end, or race the newest one when it is due."""
        if self.deadline.expired():
            raise DeadlineExceeded(f"{self.key[1]}: no answer before the deadline")
        at = self._race_at()
        if at is not None and at <= time.monotonic():
            if not self.caller.may_race():
                self.spent = True
                return
            if self.caller.take_race():
                log.info("selfmoa: %s has not answered in %.2f s; racing an identical call",
                         self.key[1], time.monotonic() - (self._newest_send() or time.monotonic()))
                raced = self._launch(raced=True)
                raced.add_done_callback(lambda _: self.caller.memory.race_over())
                return
            at = time.monotonic() + max(_LOOK_AGAIN, self.caller.hedging.min_delay)  # the process's share is full
        wait = self.deadline.remaining() if at is None else at - time.monotonic()
        if at is None and any(self.flights[t].sent_at is None for t in self.running):
            wait = min(wait, max(_LOOK_AGAIN, self.caller.hedging.min_delay))  # pausing: look again later
        done, _ = await asyncio.wait(self.running, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        self.running -= done
        self.ended.extend(done)

    def _decided(self) -> asyncio.Task[Any] | None:
        """The winner, else the outcome once nothing can win any more; raises a final error."""
        for task in self.ended:
            if task.exception() is None and self.usable(task.result()):
                took = time.monotonic() - (self.flights[task].sent_at or time.monotonic())
                self.caller.memory.answered(self.key, took)
                return task
        for task in self.ended:
            if _final(task.exception()):
                raise task.exception()  # type: ignore[misc]  # an identical call would get the same answer
        if self.running:
            return None
        unusable = [t for t in self.ended if t.exception() is None]
        if unusable:
            return unusable[-1]
        raise self.ended[0].exception()  # type: ignore[misc]

    def _race_at(self) -> float | None:
        """When the newest attempt, still unanswered, should be raced; None when it should not."""
        flights = [self.flights[task] for task in self.running]
        if self.spent or not flights or any(f.sent_at is None for f in flights):
            return None  # an attempt pausing between tries is not hung
        sent = self._newest_send() or time.monotonic()
        usual = self.caller.memory.usual(self.key)
        at = sent + self.caller.hedging.delay(usual, self.deadline.at - sent)
        if self.deadline.at - at < max(usual or 0.0, self.caller.hedging.min_delay):
            return None  # too late for another call to answer in time
        return at

    def _newest_send(self) -> float | None:
        sent = [self.flights[t].sent_at for t in self.running if self.flights[t].sent_at is not None]
        return max(sent) if sent else None  # type: ignore[type-var]

    def _launch(self, raced: bool = False) -> asyncio.Task[Any]:
        flight = Flight(raced)
        task = asyncio.ensure_future(self.attempt(flight))
        self.flights[task] = flight
        self.running.add(task)
        return task

    async def _settle(self, winner: asyncio.Task[Any] | None) -> None:
        """Cancel every other attempt; close the results nobody will read."""
        try:
            await cancel_and_wait(self.running)
        finally:
            self.ended.extend(self.running)
            self.running.clear()
            for task in self.ended:
                if task is not winner and not task.cancelled() and task.exception() is None and self.discard:
                    await self.discard(task.result())


def _final(error: BaseException | None) -> bool:
    """A refusal an identical call would get too (a 4xx): no point waiting for the others."""
    return isinstance(error, BackendError) and not isinstance(error, TransientError)
