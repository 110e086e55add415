"""The seam between the algorithms and a model server: a typed, asynchronous `Backend` protocol
(one call, whole or streamed), the plain values it returns, and how wire JSON becomes them.

The algorithms never see a client library: they await `complete`, or open `stream` as an async
context manager, and get plain values or `SelfMoAError`s. The adapters are `wire.WireBackend`
(the OpenAI wire protocol over aiohttp, what `selfmoa serve` uses) and those of `clients.py`
(client objects: the `openai` SDK's async clients, LiteLLM, or any sync client run off the loop).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .types import Choice, Message, Usage

# Fields that help a backend keep a prompt cache warm between the proposals and the aggregation,
# which reads the same conversation: llama.cpp's `cache_prompt` and OpenAI's `prompt_cache_key`
# (requests with one key are routed to the same cache). Optional: a backend that refuses one is
# sent it no more.
CACHE_HINTS = ("cache_prompt", "prompt_cache_key")
# Parameters a backend may refuse that a call can do without (dropped or renamed once, remembered).
ADAPTABLE = ("max_tokens", "temperature", "top_p", "n", "seed", "stop", "stream_options", "parallel_tool_calls",
             *CACHE_HINTS)


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


Chunks = AsyncIterator[Chunk]


class Backend(Protocol):
    """One model server. Both methods raise `SelfMoAError`s, classified (transient or not), and end
    within `timeout` seconds; a call cancelled by its caller closes its connection. `headers` go
    with the request (a trace context, a request id), where the transport has headers."""

    async def complete(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                       timeout: float, headers: Mapping[str, str] | None = None) -> Completion: ...

    def stream(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
               timeout: float, headers: Mapping[str, str] | None = None) -> AbstractAsyncContextManager[Chunks]:
        """Entering opens the stream (a refusal is raised there); leaving closes its connection.
        A stream that ends before its answer is complete (no `finish_reason`) raises a
        `TransientError`, like a dropped connection."""
        ...


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


def as_dict(obj: Any) -> dict[str, Any]:
    """A response object (openai, LiteLLM or plain dict) as plain JSON-like data."""
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None)
    return dump() if callable(dump) else dict(vars(obj))


def parse_usage(raw: Mapping[str, Any] | None) -> Usage:
    raw = raw or {}
    prompt = raw.get("prompt_tokens_details") or {}
    completion = raw.get("completion_tokens_details") or {}
    return Usage(calls=1, prompt_tokens=int(raw.get("prompt_tokens") or 0),
                 completion_tokens=int(raw.get("completion_tokens") or 0),
                 cached_tokens=int(prompt.get("cached_tokens") or 0),
                 reasoning_tokens=int(completion.get("reasoning_tokens") or 0))


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

    def choice(self) -> Choice:
        return Choice(content="".join(self._content), reasoning="".join(self._reasoning) or None,
                      finish_reason=self._finish, tool_calls=tuple(self._calls[i] for i in sorted(self._calls)),
                      logprobs={"content": self._logprobs, "refusal": None} if self._logprobs else None)


def deltas_of(choice: Choice) -> list[Delta]:
    """A whole reply as the one delta that streams it (for answers that were not generated live)."""
    calls = tuple({"index": i, **call} for i, call in enumerate(choice.tool_calls))
    return [Delta(content=choice.content or None, reasoning=choice.reasoning, tool_calls=calls,
                  logprobs=choice.logprobs)]
