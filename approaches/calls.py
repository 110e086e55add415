"""One chat call, made robustly: bounded by the request's deadline, retried when the failure is
transient, and adapted (once, then remembered) when a backend refuses a parameter.

Every call of a run goes through one `Caller`, which also counts calls and tokens, per model. A
call is a coroutine of its run: when the run ends (answered, failed, or its client gone), its
calls are cancelled with it, so the calls it counts are the calls the backends saw.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from .backend import ADAPTABLE, Backend, Chunk, Chunks, Completion
from .errors import DeadlineExceeded, ParameterRefused, TransientError
from .types import Hedging, Message, Usage
from .watch import UNWATCHED, Watch, Watcher

log = logging.getLogger("selfmoa")

# How many recent answer times are kept per endpoint+model and shape of call, for the usual time.
_REMEMBERED_TIMES = 32
_FEWEST_TIMES = 3  # fewer than this: no usual time yet


class Deadline:
    """An absolute point in time (monotonic clock) that every wait and call of a request respects."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def share(self, fraction: float) -> Deadline:
        """An earlier deadline: `fraction` of the time left, e.g. for proposals to leave room to aggregate."""
        return Deadline(self.remaining() * fraction)


class Flight:
    """One attempt at a call as its race sees it: on the wire since `sent_at`, or pausing between
    tries (`sent_at` None, e.g. waiting out a Retry-After: not hung, so not raced); `raced` when
    it is hedging's duplicate of another."""

    def __init__(self, raced: bool = False) -> None:
        self.sent_at: float | None = None
        self.raced = raced


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a server's Retry-After wins when it is longer.

    Our own backoff never takes more than half the time left, so a late failure still gets a
    retry; a Retry-After longer than the time left ends the retries (the server asked for it).
    No retry starts with less than `floor` seconds left: the last error then still reaches the
    caller before the deadline, with what the backend said, instead of being cut off by it.
    """

    base: float = 0.2
    cap: float = 8.0
    attempts: int = 8
    floor: float = 0.25

    def delay(self, attempt: int, retry_after: float | None, remaining: float) -> float | None:
        """Seconds to wait before the next attempt, or None when no retry fits in `remaining`."""
        if attempt >= self.attempts:
            return None
        backoff = min(random.uniform(0, min(self.cap, self.base * 2**attempt)), remaining / 2)
        pause = max(backoff, retry_after or 0.0)
        return pause if remaining - pause >= self.floor else None


class BackendMemory:
    """What each endpoint+model has shown, kept for the life of the process: what it cannot do,
    how long it usually takes to answer, and how many calls (raced ones among them) are in flight.

    Shared by all requests (thread-safe too: stock optillm runs each request in a thread of its
    own), so a refusal of `n` or `max_tokens` is paid once, not on every request, and a hung call
    is told from a slow one by the model's own pace. A cache only: nothing depends on it for
    correctness, and each process (each `--workers` worker) has its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._max_n: dict[tuple[str, str], int] = {}
        self._refused: dict[tuple[str, str], frozenset[str]] = {}
        self._times: dict[tuple[str, str, str], deque[float]] = {}
        self.in_flight = 0
        self.raced_in_flight = 0

    def answered(self, key: tuple[str, str, str], seconds: float) -> None:
        """One answer of (endpoint, model, shape of call) took `seconds` on the wire."""
        with self._lock:
            self._times.setdefault(key, deque(maxlen=_REMEMBERED_TIMES)).append(seconds)

    def usual(self, key: tuple[str, str, str]) -> float | None:
        """The median of the recent answer times, once there are a few."""
        with self._lock:
            times = sorted(self._times.get(key, ()))
        return times[len(times) // 2] if len(times) >= _FEWEST_TIMES else None

    def max_n(self, endpoint: str, model: str) -> int | None:
        return self._max_n.get((endpoint, model))

    def limit_n(self, endpoint: str, model: str, n: int) -> None:
        with self._lock:
            current = self._max_n.get((endpoint, model))
            self._max_n[(endpoint, model)] = n if current is None else min(current, n)

    def refused(self, endpoint: str, model: str) -> frozenset[str]:
        return self._refused.get((endpoint, model), frozenset())

    def refuse(self, endpoint: str, model: str, param: str) -> None:
        with self._lock:
            key = (endpoint, model)
            self._refused[key] = self._refused.get(key, frozenset()) | {param}

    def take_race(self, share: float) -> bool:
        """One more raced call, if it keeps raced calls within `share` of the calls in flight (one
        is always allowed), as gRPC throttles its retries; `race_over` when it has ended."""
        with self._lock:
            if self.raced_in_flight + 1 > max(1.0, share * self.in_flight):
                return False
            self.raced_in_flight += 1
            return True

    def race_over(self) -> None:
        with self._lock:
            self.raced_in_flight -= 1

    def flying(self, change: int) -> None:
        with self._lock:
            self.in_flight += change


T = TypeVar("T")


def adapt(params: Mapping[str, Any], refused: frozenset[str]) -> dict[str, Any]:
    """The parameters a backend accepts: refused ones dropped, `max_tokens` renamed if refused."""
    kept = {k: v for k, v in params.items() if k not in refused}
    if "max_tokens" in refused and "max_tokens" in params and "max_completion_tokens" not in refused:
        kept.setdefault("max_completion_tokens", params["max_tokens"])
    return kept


@dataclass
class Caller:
    """Makes the calls of one run against named backends, within the run's deadline."""

    backends: Mapping[str, Backend]
    memory: BackendMemory
    deadline: Deadline
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    hedging: Hedging = field(default_factory=Hedging)
    usage: Usage = field(default_factory=Usage)
    usage_by_model: dict[str, Usage] = field(default_factory=dict)
    raced: int = 0  # extra calls made by hedging (each one paid for)
    watcher: Watcher = UNWATCHED

    async def complete(self, endpoint: str, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                       n: int = 1, deadline: Deadline | None = None, flight: Flight | None = None,
                       kind: str = "proposal", step: int = 1) -> Completion:
        """One call that returns up to `n` choices, or raises a `SelfMoAError` saying why not."""
        wanted = {**params, "n": n} if n > 1 else dict(params)
        flight = flight or Flight()

        async def send(body: dict[str, Any], timeout: float, watch: Watch) -> Completion:
            completion = await self.backends[endpoint].complete(model, messages, body, timeout=timeout,
                                                                headers=watch.headers)
            self._account(model, completion.usage)
            watch.end("raced" if flight.raced else "ok", completion.usage)
            return completion

        return await self._attempts(endpoint, model, wanted, deadline or self.deadline, send, flight, (kind, step))

    @asynccontextmanager
    async def stream(self, endpoint: str, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                     deadline: Deadline | None = None, flight: Flight | None = None,
                     kind: str = "aggregation", step: int = 1) -> AsyncIterator[Chunks]:
        """One streamed call; opening it is retried like any call, the chunks are not."""
        wanted = {**params, "stream_options": {"include_usage": True}}
        flight = flight or Flight()
        async with AsyncExitStack() as opened:

            async def send(body: dict[str, Any], timeout: float, watch: Watch) -> tuple[Chunks, Watch]:
                backend = self.backends[endpoint]
                stream = backend.stream(model, messages, body, timeout=timeout, headers=watch.headers)
                return await opened.enter_async_context(stream), watch

            chunks, watch = await self._attempts(endpoint, model, wanted, deadline or self.deadline, send, flight,
                                                 (kind, step))
            counted = self._counted(model, chunks, watch, "raced" if flight.raced else "ok")
            try:
                yield counted
            finally:
                await counted.aclose()

    def may_race(self) -> bool:
        """Whether this run's hedging budget has room for one more raced call."""
        return self.hedging.enabled and self.raced < self.hedging.max_extra

    def take_race(self) -> bool:
        """One more raced call, if the budget has room and the process's share of raced calls in
        flight allows it now (it is then counted)."""
        if not self.may_race() or not self.memory.take_race(self.hedging.max_share):
            return False
        self.raced += 1
        return True

    async def _attempts(self, endpoint: str, model: str, params: dict[str, Any], deadline: Deadline,
                        send: Callable[[dict[str, Any], float, Watch], Awaitable[T]], flight: Flight,
                        what: tuple[str, int]) -> T:
        adapted: set[str] = set()
        attempt = 0
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise DeadlineExceeded(f"{model}: deadline reached before the call could be made")
            self._count(model)
            flight.sent_at = time.monotonic()
            self.memory.flying(+1)
            try:
                return await self._watched(endpoint, model, what, flight, send,
                                           adapt(params, self.memory.refused(endpoint, model)), remaining)
            except ParameterRefused as refusal:
                # `n` is the sampler's to adapt (it knows how many samples it still needs)
                if refusal.param == "n" or refusal.param in adapted or refusal.param not in ADAPTABLE:
                    raise
                log.info("selfmoa: %s refuses %r; adapting and remembering", model, refusal.param)
                self.memory.refuse(endpoint, model, refusal.param)
                adapted.add(refusal.param)
            except TransientError as transient:
                if transient.timed_out and deadline.remaining() < self.retry.floor:  # the call's timeout was ours
                    raise DeadlineExceeded(f"{model}: no answer before the deadline") from None
                attempt += 1
                pause = self.retry.delay(attempt, transient.retry_after, deadline.remaining())
                if pause is None:
                    raise
                flight.sent_at = None  # pausing between tries: not hung
                self.memory.flying(-1)
                await asyncio.sleep(pause)
                continue
            finally:
                if flight.sent_at is not None:
                    self.memory.flying(-1)
            flight.sent_at = None

    async def _watched(self, endpoint: str, model: str, what: tuple[str, int], flight: Flight,
                       send: Callable[[dict[str, Any], float, Watch], Awaitable[T]], body: dict[str, Any],
                       timeout: float) -> T:
        """One attempt (`what`: its kind and step), its watcher told how it ended (`send` tells it of
        a success itself: only it knows the tokens, a stream's at its end)."""
        watch = self.watcher.start(endpoint, model, what[0], raced=flight.raced, step=what[1])
        try:
            return await send(body, timeout, watch)
        except asyncio.CancelledError:
            watch.end("raced" if flight.raced else "cancelled", None)
            raise
        except Exception:
            watch.end("raced" if flight.raced else "error", None)
            raise

    def _count(self, model: str) -> None:
        self.usage.calls += 1
        self.usage_by_model.setdefault(model, Usage()).calls += 1

    async def _counted(self, model: str, chunks: Chunks, watch: Watch, outcome: str) -> AsyncGenerator[Chunk, None]:
        """The chunks, with the call's usage accounted at the end (estimated from the chunks when the
        backend reports none: one token per content chunk, as servers send them)."""
        reported, pieces = None, 0
        try:
            async for chunk in chunks:
                reported = chunk.usage or reported
                pieces += sum(1 for d in chunk.deltas if d.content or d.tool_calls)
                yield chunk
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "raced" if outcome == "raced" else "cancelled"  # closed before its end
            raise
        except BaseException:
            outcome = "raced" if outcome == "raced" else "error"
            raise
        finally:
            usage = reported or Usage(completion_tokens=pieces)
            self._account(model, usage)
            watch.end(outcome, usage)

    def spent(self) -> tuple[Usage, dict[str, Usage]]:
        """Copies of the usage so far: in all, and per model."""
        return replace(self.usage), {model: replace(u) for model, u in self.usage_by_model.items()}

    def _account(self, model: str, usage: Usage) -> None:
        """Tokens of one call (its `calls` were counted when it was sent)."""
        tokens = replace(usage, calls=0)
        self.usage.add(tokens)
        self.usage_by_model.setdefault(model, Usage()).add(tokens)
