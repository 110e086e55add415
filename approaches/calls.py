"""One chat call, made robustly: bounded by the request's deadline, retried when the failure is
transient, and adapted (once, then remembered) when a backend refuses a parameter.

Every call of a request goes through one `Caller`, which also counts calls and completion tokens.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

from .errors import BackendError, ContextTooLong, DeadlineExceeded, ParameterRefused
from .types import Message

log = logging.getLogger("selfmoa")

ADAPTABLE = ("max_tokens", "temperature", "top_p", "n", "seed", "stop")  # n: see sampling.sample
_CONTEXT_HINTS = ("context_length", "context length", "context size", "context window", "maximum context")
_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


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


@dataclass(frozen=True)
class Choice:
    content: str
    reasoning: str | None
    finish_reason: str | None


@dataclass(frozen=True)
class Reply:
    choices: list[Choice]
    completion_tokens: int


def adapt(params: Mapping[str, Any], refused: frozenset[str]) -> dict[str, Any]:
    """The parameters a backend accepts: refused ones dropped, `max_tokens` renamed if refused."""
    kept = {k: v for k, v in params.items() if k not in refused}
    if "max_tokens" in refused and "max_tokens" in params and "max_completion_tokens" not in refused:
        kept.setdefault("max_completion_tokens", params["max_tokens"])
    return kept


@dataclass
class Caller:
    """Makes the chat calls of one request against named endpoints (clients built by the proxy)."""

    clients: Mapping[str, Any]
    memory: BackendMemory
    deadline: Deadline
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    calls: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def chat(
        self,
        endpoint: str,
        model: str,
        messages: Sequence[Message],
        params: Mapping[str, Any],
        *,
        n: int = 1,
        deadline: Deadline | None = None,
    ) -> Reply:
        """One call that returns up to `n` choices, or raises a `SelfMoAError` saying why not."""
        deadline = deadline or self.deadline
        adapted: set[str] = set()
        attempt = 0
        while True:
            refused = self.memory.refused(endpoint, model)
            body = adapt(params, refused) | ({"n": n} if n > 1 else {})
            try:
                return self._send(endpoint, model, messages, body, deadline)
            except ParameterRefused as refusal:
                # `n` is the sampler's to adapt (it knows how many samples it still needs)
                if refusal.param == "n" or refusal.param in adapted or refusal.param not in ADAPTABLE:
                    raise
                log.info("selfmoa: %s refuses %r; adapting and remembering", model, refusal.param)
                self.memory.refuse(endpoint, model, refusal.param)
                adapted.add(refusal.param)
            except _Transient as transient:
                attempt += 1
                pause = self.retry.delay(attempt, transient.retry_after, deadline.remaining())
                if pause is None:
                    raise transient.error from None
                time.sleep(pause)

    def _send(
        self, endpoint: str, model: str, messages: Sequence[Message], body: Mapping[str, Any], deadline: Deadline
    ) -> Reply:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise DeadlineExceeded(f"{model}: deadline reached before the call could be made")
        client = self.clients[endpoint]
        if hasattr(client, "with_options"):
            client = client.with_options(timeout=remaining, max_retries=0)
        with self._lock:
            self.calls += 1
        try:
            response = client.chat.completions.create(model=model, messages=list(messages), **body)
        except openai.APIStatusError as error:
            raise _classify_status(model, error) from None
        except openai.APITimeoutError:
            if deadline.expired():
                raise DeadlineExceeded(f"{model}: no answer before the deadline") from None
            raise _Transient(BackendError(model, "timed out")) from None
        except openai.APIConnectionError as error:
            raise _Transient(BackendError(model, f"connection error ({error.__cause__ or error})")) from None
        return _reply(response, self)


class _Transient(Exception):
    """A failure worth retrying; carries the error to raise when retries run out."""

    def __init__(self, error: BackendError, retry_after: float | None = None) -> None:
        self.error = error
        self.retry_after = retry_after


def _reply(response: Any, caller: Caller) -> Reply:
    usage = getattr(response, "usage", None)
    tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    with caller._lock:
        caller.completion_tokens += tokens
    choices = [
        Choice(
            content=(choice.message.content or "") if choice.message else "",
            reasoning=getattr(choice.message, "reasoning_content", None) if choice.message else None,
            finish_reason=choice.finish_reason,
        )
        for choice in (response.choices or [])
    ]
    return Reply(choices=choices, completion_tokens=tokens)


def _error_fields(error: openai.APIStatusError) -> tuple[str, str | None, str | None]:
    """(message, param, code) of an error body, OpenAI-shaped or not."""
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict):
        message = str(body.get("message") or error.message)
        return message, body.get("param"), body.get("code") or body.get("type")
    return str(error.message), None, None


def _classify_status(model: str, error: openai.APIStatusError) -> Exception:
    status = error.status_code
    message, param, code = _error_fields(error)
    if status in _TRANSIENT_STATUS:
        return _Transient(BackendError(model, message, status=status), _retry_after(error))
    lowered = f"{code or ''} {message}".lower()
    if any(hint in lowered for hint in _CONTEXT_HINTS):
        return ContextTooLong(model, message, status=status)
    if status in (400, 422):
        refused = param if param in ADAPTABLE else _param_named_in(message)
        if refused:
            return ParameterRefused(model, message, param=refused, status=status)
    return BackendError(model, message, status=status)


def _param_named_in(message: str) -> str | None:
    for param in ADAPTABLE:
        if re.search(rf"['\"`]{param}['\"`]|\b{param} (must|is not|not supported)", message):
            return param
    return None


def _retry_after(error: openai.APIStatusError) -> float | None:
    value = error.response.headers.get("retry-after") if error.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
