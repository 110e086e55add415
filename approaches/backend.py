"""The seam between the algorithms and a model server: a typed `Backend` protocol (one call, whole
or streamed) and its adapter over any OpenAI-compatible client object.

The algorithms never see a client library: they call `complete`/`stream` and get plain values or
`SelfMoAError`s. The adapter works with the `openai` SDK's clients (per-call timeout through
`with_options`) and with clients that only have `chat.completions.create`, such as optillm's
LiteLLM wrapper (the timeout then goes in the call itself), so no call outlives its deadline.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import openai

from .errors import BackendError, ContextTooLong, ParameterRefused, SelfMoAError, TransientError
from .types import Choice, Message, Usage

# Fields that help a backend keep a prompt cache warm between the proposals and the aggregation,
# which reads the same conversation: llama.cpp's `cache_prompt` and OpenAI's `prompt_cache_key`
# (requests with one key are routed to the same cache). Optional: a backend that refuses one is
# sent it no more.
CACHE_HINTS = ("cache_prompt", "prompt_cache_key")
# Parameters a backend may refuse that a call can do without (dropped or renamed once, remembered).
ADAPTABLE = ("max_tokens", "temperature", "top_p", "n", "seed", "stop", "stream_options", "parallel_tool_calls",
             *CACHE_HINTS)
_CONTEXT_HINTS = ("context_length", "context length", "context size", "context window", "maximum context")
_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Completion:
    choices: list[Choice]
    usage: Usage


@dataclass(frozen=True)
class Delta:
    """One choice's piece of a streamed reply, as the backend sent it (tool calls as fragments)."""

    index: int = 0
    content: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


@dataclass(frozen=True)
class Chunk:
    deltas: list[Delta] = field(default_factory=list)
    usage: Usage | None = None


class Backend(Protocol):
    """One model server. Both methods raise `SelfMoAError`s, classified (transient or not)."""

    def complete(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                 timeout: float) -> Completion: ...

    def stream(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
               timeout: float) -> Iterator[Chunk]:
        """Opens the stream before returning (so a refusal is raised here); closing the iterator
        closes the connection."""
        ...


class OpenAIBackend:
    """`Backend` over an OpenAI-compatible client object (`client.chat.completions.create`)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def complete(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                 timeout: float) -> Completion:
        try:
            response = self._create(model, messages, params, timeout)
        except Exception as error:
            raise classify(model, error) from None
        return parse_completion(as_dict(response))

    def stream(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
               timeout: float) -> Iterator[Chunk]:
        try:
            response = self._create(model, messages, {**params, "stream": True}, timeout)
        except Exception as error:
            raise classify(model, error) from None
        return _chunks(model, response)

    def _create(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], timeout: float) -> Any:
        if hasattr(self.client, "with_options"):
            client = self.client.with_options(timeout=timeout, max_retries=0)
            create = client.chat.completions.create
            return create(model=model, messages=list(messages), **sdk_arguments(create, params))
        # optillm's LiteLLM wrapper: no with_options; LiteLLM takes the timeout per call, and would
        # retry a timed-out call twice (three times the timeout) without max_retries=0
        return self.client.chat.completions.create(model=model, messages=list(messages), timeout=timeout,
                                                   max_retries=0, **params)


def sdk_arguments(create: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` as keyword arguments of a client's `create`: a field it has no keyword for (a
    backend's own, such as llama.cpp's `cache_prompt` or `top_k`) travels in `extra_body`, which
    the openai SDK merges into the request body."""
    known = _keywords(getattr(create, "__func__", create))
    if known is None:
        return dict(params)
    kept = {k: v for k, v in params.items() if k in known}
    extra = {k: v for k, v in params.items() if k not in known}
    if extra:
        kept["extra_body"] = {**(kept.get("extra_body") or {}), **extra}
    return kept


@functools.lru_cache(maxsize=16)
def _keywords(function: Any) -> frozenset[str] | None:
    """The keywords `function` takes; None when it takes any (`**kwargs`)."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


def cache_hints(messages: Sequence[Message]) -> dict[str, Any]:
    """The `CACHE_HINTS` for a conversation. The key is a digest of the conversation's head (up to
    its first user turn): the same for every call of a request and for every later turn of the
    conversation, so they all meet the cache their prefix left."""
    head: list[Message] = []
    for message in messages:
        head.append(message)
        if message.get("role") == "user":
            break
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return {"cache_prompt": True, "prompt_cache_key": digest}


def _chunks(model: str, response: Any) -> Iterator[Chunk]:
    try:
        for raw in response:
            yield parse_chunk(as_dict(raw))
    except GeneratorExit:
        raise
    except Exception as error:
        raise classify(model, error) from None
    finally:
        close(response)


def close(stream: Any) -> None:
    """Close a stream of chunks (an SDK stream, a generator) if it can be closed: its connection
    goes with it. Iterators that hold nothing open have no `close`."""
    closer = getattr(stream, "close", None)
    if callable(closer):
        closer()


def as_dict(obj: Any) -> dict[str, Any]:
    """A response object (openai, LiteLLM or plain dict) as plain JSON-like data."""
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None)
    return dump() if callable(dump) else dict(vars(obj))


def parse_usage(raw: Mapping[str, Any] | None) -> Usage:
    raw = raw or {}
    details = raw.get("prompt_tokens_details") or {}
    return Usage(calls=1, prompt_tokens=int(raw.get("prompt_tokens") or 0),
                 completion_tokens=int(raw.get("completion_tokens") or 0),
                 cached_tokens=int(details.get("cached_tokens") or 0))


def parse_completion(body: Mapping[str, Any]) -> Completion:
    choices = []
    for raw in body.get("choices") or []:
        message = raw.get("message") or {}
        choices.append(Choice(
            content=message.get("content") or "",
            reasoning=message.get("reasoning_content") or message.get("reasoning"),
            finish_reason=raw.get("finish_reason"),
            tool_calls=tuple(_tool_call(c) for c in message.get("tool_calls") or []),
            logprobs=raw.get("logprobs"),
        ))
    return Completion(choices=choices, usage=parse_usage(body.get("usage")))


def parse_chunk(body: Mapping[str, Any]) -> Chunk:
    deltas = []
    for raw in body.get("choices") or []:
        delta = raw.get("delta") or {}
        deltas.append(Delta(
            index=int(raw.get("index") or 0),
            content=delta.get("content"),
            reasoning=delta.get("reasoning_content") or delta.get("reasoning"),
            tool_calls=tuple(_without_nulls(c) for c in delta.get("tool_calls") or []),
            finish_reason=raw.get("finish_reason"),
            logprobs=raw.get("logprobs"),
        ))
    usage = body.get("usage")
    return Chunk(deltas=deltas, usage=parse_usage(usage) if usage else None)


def _tool_call(raw: Mapping[str, Any]) -> dict[str, Any]:
    function = raw.get("function") or {}
    return {"id": raw.get("id"), "type": raw.get("type") or "function",
            "function": {"name": function.get("name"), "arguments": function.get("arguments") or ""}}


def _without_nulls(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A streamed tool-call fragment without the null fields SDK models add on dumping."""
    clean = {k: v for k, v in raw.items() if v is not None and k != "function"}
    function = {k: v for k, v in (raw.get("function") or {}).items() if v is not None}
    return {**clean, "function": function} if function else clean


class Accumulator:
    """Rebuilds one choice from its streamed deltas (tool-call fragments merged by their index)."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self._logprobs: list[Any] = []
        self._finish: str | None = None

    def add(self, delta: Delta) -> None:
        self._content.append(delta.content or "")
        self._reasoning.append(delta.reasoning or "")
        for fragment in delta.tool_calls:
            call = self._calls.setdefault(int(fragment.get("index", len(self._calls))),
                                          {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            call["id"] = fragment.get("id") or call["id"]
            function = fragment.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""
        self._logprobs += (delta.logprobs or {}).get("content") or []
        self._finish = delta.finish_reason or self._finish

    @property
    def has_output(self) -> bool:
        return bool("".join(self._content).strip() or self._calls)

    def choice(self) -> Choice:
        return Choice(content="".join(self._content), reasoning="".join(self._reasoning) or None,
                      finish_reason=self._finish, tool_calls=tuple(self._calls[i] for i in sorted(self._calls)),
                      logprobs={"content": self._logprobs, "refusal": None} if self._logprobs else None)


def deltas_of(choice: Choice) -> list[Delta]:
    """A whole reply as the one delta that streams it (for answers that were not generated live)."""
    calls = tuple({"index": i, **call} for i, call in enumerate(choice.tool_calls))
    return [Delta(content=choice.content or None, reasoning=choice.reasoning, tool_calls=calls,
                  logprobs=choice.logprobs)]


# --- errors ----------------------------------------------------------------------------------

def classify(model: str, error: Exception) -> SelfMoAError:
    """A client library's exception as one of ours: transient (retry) or final, status kept."""
    if isinstance(error, SelfMoAError):
        return error
    if isinstance(error, openai.APIStatusError):
        return _classify_status(model, error)
    if isinstance(error, (openai.APITimeoutError, httpx.TimeoutException)):
        return TransientError(model, "timed out", timed_out=True)
    if isinstance(error, (openai.APIConnectionError, httpx.TransportError)):
        return TransientError(model, f"connection error ({error.__cause__ or error})")
    if isinstance(error, openai.APIError):  # an error event inside a stream
        return BackendError(model, error.message)
    return BackendError(model, f"{type(error).__name__}: {error}")


def error_fields(error: openai.APIStatusError) -> tuple[str, str | None, str | None]:
    """(message, param, code) of an error body, OpenAI-shaped or not."""
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict):
        message = str(body.get("message") or error.message)
        code = body.get("code") or body.get("type")
        return message, body.get("param"), str(code) if code is not None else None
    return str(error.message), None, None


def _classify_status(model: str, error: openai.APIStatusError) -> SelfMoAError:
    status = error.status_code
    message, param, code = error_fields(error)
    if status in _TRANSIENT_STATUS:
        return TransientError(model, message, status=status, code=code, retry_after=_retry_after(error))
    lowered = f"{code or ''} {message}".lower()
    if any(hint in lowered for hint in _CONTEXT_HINTS):
        return ContextTooLong(model, message, status=status, code=code)
    if status in (400, 422):
        refused = param if param in ADAPTABLE else _param_named_in(message)
        if refused:
            return ParameterRefused(model, message, param=refused, status=status, code=code)
    return BackendError(model, message, status=status, code=code)


def _param_named_in(message: str) -> str | None:
    for param in ADAPTABLE:
        if re.search(rf"['\"`]{param}['\"`]|\b{param} (must|is not|not supported)|argument supplied: {param}\b",
                     message):
            return param
    # a cache hint is ours and its name unmistakable: a client error that mentions it is about it
    return next((hint for hint in CACHE_HINTS if re.search(rf"\b{hint}\b", message)), None)


def _retry_after(error: openai.APIStatusError) -> float | None:
    value = error.response.headers.get("retry-after") if error.response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
