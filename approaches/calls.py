"""One chat call, made robustly: bounded by the request's deadline, retried when the failure is
transient, and adapted (once, then remembered) when a backend refuses a parameter.

Every call of a request goes through one `Caller`, which also counts calls and tokens, per model.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from .backend import ADAPTABLE, Backend, Chunk, Completion
from .errors import DeadlineExceeded, ParameterRefused, TransientError
from .types import Message, Usage

log = logging.getLogger("selfmoa")



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
    """What each endpoint+model has shown it cannot do, kept for the life of the process.

    Shared by all requests (thread-safe), so a refusal of `n` or `max_tokens` is paid once,
    not on every request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._max_n: dict[tuple[str, str], int] = {}
        self._refused: dict[tuple[str, str], frozenset[str]] = {}

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


T = TypeVar("T")


def adapt(params: Mapping[str, Any], refused: frozenset[str]) -> dict[str, Any]:
    """The parameters a backend accepts: refused ones dropped, `max_tokens` renamed if refused."""
    kept = {k: v for k, v in params.items() if k not in refused}
    if "max_tokens" in refused and "max_tokens" in params and "max_completion_tokens" not in refused:
        kept.setdefault("max_completion_tokens", params["max_tokens"])
    return kept


@dataclass
class Caller:
    """Makes the calls of one request against named backends, within the request's deadline."""

    backends: Mapping[str, Backend]
    memory: BackendMemory
    deadline: Deadline
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    usage: Usage = field(default_factory=Usage)
    usage_by_model: dict[str, Usage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def complete(self, endpoint: str, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                 n: int = 1, deadline: Deadline | None = None) -> Completion:
        """One call that returns up to `n` choices, or raises a `SelfMoAError` saying why not."""
        wanted = {**params, "n": n} if n > 1 else dict(params)

        def send(body: dict[str, Any], timeout: float) -> Completion:
            completion = self.backends[endpoint].complete(model, messages, body, timeout=timeout)
            self._account(model, completion.usage)
            return completion

        return self._attempts(endpoint, model, wanted, deadline or self.deadline, send)

    def stream(self, endpoint: str, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
               deadline: Deadline | None = None) -> Iterator[Chunk]:
        """One streamed call; opening it is retried like any call, the chunks are not."""
        wanted = {**params, "stream_options": {"include_usage": True}}

        def send(body: dict[str, Any], timeout: float) -> Iterator[Chunk]:
            return self._counted(model, self.backends[endpoint].stream(model, messages, body, timeout=timeout))

        return self._attempts(endpoint, model, wanted, deadline or self.deadline, send)

    def _attempts(self, endpoint: str, model: str, params: dict[str, Any], deadline: Deadline,
                  send: Callable[[dict[str, Any], float], T]) -> T:
        adapted: set[str] = set()
        attempt = 0
        while True:
            remaining = deadline.remaining()
            if remaining <= 0:
                raise DeadlineExceeded(f"{model}: deadline reached before the call could be made")
            with self._lock:
                self.usage.calls += 1
                self.usage_by_model.setdefault(model, Usage()).calls += 1
            try:
                return send(adapt(params, self.memory.refused(endpoint, model)), remaining)
            except ParameterRefused as refusal:
                # `n` is the sampler's to adapt (it knows how many samples it still needs)
                if refusal.param == "n" or refusal.param in adapted or refusal.param not in ADAPTABLE:
                    raise
                log.info("selfmoa: %s refuses %r; adapting and remembering", model, refusal.param)
                self.memory.refuse(endpoint, model, refusal.param)
                adapted.add(refusal.param)
            except TransientError as transient:
                if transient.timed_out and deadline.expired():
                    raise DeadlineExceeded(f"{model}: no answer before the deadline") from None
                attempt += 1
                pause = self.retry.delay(attempt, transient.retry_after, deadline.remaining())
                if pause is None:
                    raise
                time.sleep(pause)

    def _counted(self, model: str, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        """The chunks, with the call's usage accounted at the end (estimated from the chunks when the
        backend reports none: one token per content chunk, as servers send them)."""
        reported, pieces = None, 0
        try:
            for chunk in chunks:
                reported = chunk.usage or reported
                pieces += sum(1 for d in chunk.deltas if d.content or d.tool_calls)
                yield chunk
        finally:
            self._account(model, reported or Usage(completion_tokens=pieces))
            close = getattr(chunks, "close", None)
            if callable(close):
                close()

    def spent(self) -> tuple[Usage, dict[str, Usage]]:
        """Copies of the usage so far: in all, and per model."""
        with self._lock:
            return replace(self.usage), {model: replace(u) for model, u in self.usage_by_model.items()}

    def _account(self, model: str, usage: Usage) -> None:
        """Tokens of one call (its `calls` were counted when it was sent)."""
        tokens = Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                       cached_tokens=usage.cached_tokens)
        with self._lock:
            self.usage.add(tokens)
            self.usage_by_model.setdefault(model, Usage()).add(tokens)
