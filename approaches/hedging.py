"""Hedged calls: a call that has not answered when it should have is raced by an identical one;
the first usable answer wins and every other attempt is stopped (a stream is closed, a whole
call is not retried and its late answer is dropped).

"When it should have" is the request's `Hedging` policy: a multiple of the time this
endpoint+model usually takes to answer a call of the same shape (remembered per process: an `n=6`
proposal call, a single one and an aggregation take different times on the same server), and at
the latest a share of the time it had left. An attempt pausing between tries (waiting out a
backend's Retry-After, or our backoff) is not hung: the clock only runs while an attempt is on
the wire. Each raced call is paid for, so a request makes at most `Hedging.max_extra` of them.
Proposal calls (an `n` call, or each call a refused `n` fans out to) and aggregation calls
(whole or streamed) are all hedged here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from .backend import Chunk, Completion, close
from .calls import Caller, Deadline, Flight
from .errors import Abandoned, BackendError, DeadlineExceeded, TransientError
from .types import Message

log = logging.getLogger("selfmoa")

T = TypeVar("T")
Key = tuple[str, str, str]  # (endpoint, model, shape of the call): whose usual time decides


def hedged_complete(caller: Caller, endpoint: str, model: str, messages: Sequence[Message],
                    params: Mapping[str, Any], *, kind: str, n: int = 1, deadline: Deadline | None = None,
                    usable: Callable[[Completion], bool] = lambda _: True) -> Completion:
    """`Caller.complete`, raced while it has not answered (see the module docstring); `kind`
    (proposal, aggregation) and `n` make the call's shape."""
    until = deadline or caller.deadline

    def attempt(flight: Flight) -> Completion:
        return caller.complete(endpoint, model, messages, params, n=n, deadline=until, flight=flight)

    return race(caller, (endpoint, model, f"{kind} n={n}"), attempt, deadline=until, usable=usable)


def hedged_open(caller: Caller, endpoint: str, model: str, messages: Sequence[Message],
                params: Mapping[str, Any]) -> Generator[Chunk, None, None]:
    """A stream whose first chunk has arrived (raced until one has); closing it closes the call."""

    def attempt(flight: Flight) -> tuple[Chunk | None, Iterator[Chunk]]:
        chunks = caller.stream(endpoint, model, messages, params, flight=flight)
        try:
            return next(chunks, None), chunks
        except BaseException:
            close(chunks)
            raise

    first, chunks = race(caller, (endpoint, model, "stream"), attempt, deadline=caller.deadline,
                         discard=lambda opened: close(opened[1]))
    return _resumed(first, chunks)


def _resumed(first: Chunk | None, chunks: Iterator[Chunk]) -> Generator[Chunk, None, None]:
    try:
        if first is not None:
            yield first
        yield from chunks
    finally:
        close(chunks)


class _Attempt(Generic[T]):
    def __init__(self, flight: Flight) -> None:
        self.flight = flight
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None
        self.took = 0.0  # seconds on the wire, for an answer


def race(caller: Caller, key: Key, attempt: Callable[[Flight], T], *, deadline: Deadline,
         usable: Callable[[T], bool] = lambda _: True, discard: Callable[[T], None] | None = None) -> T:
    """The first usable result of identical attempts, started one after the other while none has
    answered; the result of the last one to end when none is usable."""
    if not caller.hedging.enabled:
        return attempt(Flight(caller.stop))
    return _Race(caller, key, attempt, deadline, usable, discard).run()


class _Race(Generic[T]):
    def __init__(self, caller: Caller, key: Key, attempt: Callable[[Flight], T], deadline: Deadline,
                 usable: Callable[[T], bool], discard: Callable[[T], None] | None) -> None:
        self.caller, self.key, self.attempt, self.deadline = caller, key, attempt, deadline
        self.usable, self.discard = usable, discard
        self.cond = threading.Condition()
        self.attempts: list[_Attempt[T]] = []
        self.ended: list[_Attempt[T]] = []  # in the order they ended
        self.settled = False
        self.spent = False  # no more races: the budget ran out
        self.winner: _Attempt[T] | None = None

    def run(self) -> T:
        self.caller.stop.on_set(self._wake)
        try:
            with self.cond:
                self._launch()
                self.winner = self._await()
                return self.winner.result  # type: ignore[return-value]
        finally:
            self.caller.stop.forget(self._wake)
            self._settle()

    def _await(self) -> _Attempt[T]:
        while True:
            decided = self._decided()
            if decided is not None:
                return decided
            if self.caller.stop.is_set():
                raise Abandoned(f"{self.key[1]}: no longer needed")
            if self.deadline.expired():
                raise DeadlineExceeded(f"{self.key[1]}: no answer before the deadline")
            wait = self.deadline.remaining()
            at = self._race_at()
            if at is not None and at <= time.monotonic():
                if self.caller.take_race():
                    log.info("selfmoa: %s has not answered in %.2f s; racing an identical call",
                             self.key[1], time.monotonic() - (self._newest_send() or 0.0))
                    self._launch()
                    continue
                self.spent = True
            elif at is not None:
                wait = min(wait, at - time.monotonic())
            self.cond.wait(wait)

    def _decided(self) -> _Attempt[T] | None:
        """The winner, else the outcome once nothing can win any more; raises a final error."""
        for ended in self.ended:
            if ended.error is None and self.usable(ended.result):  # type: ignore[arg-type]
                self.caller.memory.answered(self.key, ended.took)
                return ended
        for ended in self.ended:
            if _final(ended.error):
                raise ended.error  # type: ignore[misc]  # an identical call would get the same answer
        if len(self.ended) < len(self.attempts):
            return None
        unusable = [a for a in self.ended if a.error is None]
        if unusable:
            return unusable[-1]
        raise self.ended[0].error  # type: ignore[misc]

    def _race_at(self) -> float | None:
        """When the newest attempt, still unanswered, should be raced; None when it should not."""
        running = [a for a in self.attempts if not a.done]
        if self.spent or not running or any(a.flight.sent_at is None for a in running):
            return None  # an attempt pausing between tries is not hung
        sent = self._newest_send() or time.monotonic()
        usual = self.caller.memory.usual(self.key)
        at = sent + self.caller.hedging.delay(usual, self.deadline.at - sent)
        if self.deadline.at - at < max(usual or 0.0, self.caller.hedging.min_delay):
            return None  # too late for another call to answer in time
        return at

    def _newest_send(self) -> float | None:
        sent = [a.flight.sent_at for a in self.attempts if not a.done and a.flight.sent_at is not None]
        return max(sent) if sent else None

    def _launch(self) -> None:
        attempt: _Attempt[T] = _Attempt(Flight(self.caller.stop.child(), self._wake))
        self.attempts.append(attempt)
        threading.Thread(target=self._run, args=(attempt,), name="selfmoa-call", daemon=True).start()

    def _run(self, attempt: _Attempt[T]) -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = self.attempt(attempt.flight)
        except Exception as failure:  # noqa: BLE001 - handed to the racing thread, which raises it
            error = failure
        ended = time.monotonic()
        with self.cond:
            attempt.done, attempt.result, attempt.error = True, result, error
            attempt.took = ended - (attempt.flight.sent_at or ended)
            self.ended.append(attempt)
            late = self.settled
            self.cond.notify_all()
        if late and error is None and self.discard is not None:
            self.discard(result)  # type: ignore[arg-type]

    def _settle(self) -> None:
        """Stop every other attempt; close the results nobody will read."""
        with self.cond:
            self.settled = True
            leftovers = [a for a in self.ended if a.error is None]
            for attempt in self.attempts:
                attempt.flight.stop.set()
        for attempt in leftovers:
            if attempt is not self.winner and self.discard is not None:
                self.discard(attempt.result)  # type: ignore[arg-type]

    def _wake(self) -> None:
        with self.cond:
            self.cond.notify_all()


def _final(error: BaseException | None) -> bool:
    """A refusal an identical call would get too (a 4xx): no point waiting for the others."""
    return isinstance(error, BackendError) and not isinstance(error, TransientError)
