"""`Backend`s over client objects, for where a client is what we are handed: the `openai` SDK's
async clients (Azure's, Cerebras'), LiteLLM's async API, and, as a last resort, any synchronous
client with `chat.completions.create`, whose calls then wait off the event loop.

`backend_for(client)` picks the adapter for the client optillm hands its plugins: an `openai.OpenAI`
is spoken to over the wire directly (`wire.py`), optillm's LiteLLM wrapper through LiteLLM's async
API, anything else off the loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from .backend import Backend, Chunk, Chunks, Completion, as_dict, parse_chunk, parse_completion
from .classify import classify
from .errors import SelfMoAError, TransientError
from .types import Message
from .wire import WireBackend


class ClientBackend:
    """`Backend` over an async client object (`await client.chat.completions.create(...)`)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def complete(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                       timeout: float, headers: Mapping[str, str] | None = None) -> Completion:
        return parse_completion(as_dict(await self.raw(model, messages, params, timeout, headers)))

    async def raw(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], timeout: float,
                  headers: Mapping[str, str] | None = None) -> Any:
        """The client's own reply object (a stream of its chunks with `stream: true`)."""
        extra = {"extra_headers": dict(headers)} if headers else {}
        try:
            return await self._create(model, messages, {**params, **extra}, timeout)
        except Exception as error:
            raise classify(model, error) from None

    @asynccontextmanager
    async def stream(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                     timeout: float, headers: Mapping[str, str] | None = None) -> AsyncIterator[Chunks]:
        response = await self.raw(model, messages, {**params, "stream": True}, timeout, headers)
        try:
            yield complete_stream(model, response)
        finally:
            closer = getattr(response, "close", None) or getattr(response, "aclose", None)
            if callable(closer) and inspect.isawaitable(result := closer()):
                await result

    async def _create(self, model: str, messages: Sequence[Message], params: Mapping[str, Any],
                      timeout: float) -> Any:
        client = self.client.with_options(timeout=timeout, max_retries=0) if hasattr(self.client, "with_options") \
            else self.client
        create = client.chat.completions.create
        return await asyncio.wait_for(create(model=model, messages=list(messages), **sdk_arguments(create, params)),
                                      timeout)


GEMINI_SAFETY = [{"category": f"HARM_CATEGORY_{name}", "threshold": "BLOCK_NONE"}
                 for name in ("HARASSMENT", "HATE_SPEECH", "SEXUALLY_EXPLICIT", "DANGEROUS_CONTENT")]


class LiteLLMBackend(ClientBackend):
    """`Backend` over LiteLLM's async API (optillm's fallback when no OpenAI key is set): the
    provider keys come from the environment as LiteLLM reads them; LiteLLM does not retry (ours do)."""

    def __init__(self) -> None:
        super().__init__(None)

    async def _create(self, model: str, messages: Sequence[Message], params: Mapping[str, Any],
                      timeout: float) -> Any:
        import litellm

        extra = {"safety_settings": GEMINI_SAFETY} if model.startswith("gemini") else {}  # as optillm's wrapper
        call = litellm.acompletion(model=model, messages=list(messages), timeout=timeout, num_retries=0,
                                   max_retries=0, drop_params=True, **extra, **params)
        return await asyncio.wait_for(call, timeout)


class ThreadedBackend:
    """`Backend` over a synchronous client: each call waits in a worker thread (a compatibility
    path for clients without an async twin; `selfmoa serve` never takes it for its own backends)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def complete(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                       timeout: float, headers: Mapping[str, str] | None = None) -> Completion:
        call = functools.partial(self._create, model, messages, params, timeout)
        try:
            response = await asyncio.wait_for(asyncio.to_thread(call), timeout)
        except Exception as error:
            raise classify(model, error) from None
        return parse_completion(as_dict(response))

    @asynccontextmanager
    async def stream(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                     timeout: float, headers: Mapping[str, str] | None = None) -> AsyncIterator[Chunks]:
        call = functools.partial(self._create, model, messages, {**params, "stream": True}, timeout)
        try:
            response = await asyncio.to_thread(call)
        except Exception as error:
            raise classify(model, error) from None
        try:
            yield complete_stream(model, _off_the_loop(iter(response)))
        finally:
            closer = getattr(response, "close", None)
            if callable(closer):
                await asyncio.to_thread(closer)

    def _create(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], timeout: float) -> Any:
        create = self.client.chat.completions.create
        if hasattr(self.client, "with_options"):
            create = self.client.with_options(timeout=timeout, max_retries=0).chat.completions.create
            return create(model=model, messages=list(messages), **sdk_arguments(create, params))
        # optillm's LiteLLM wrapper has no with_options; LiteLLM takes the timeout per call
        return create(model=model, messages=list(messages), timeout=timeout, max_retries=0, **params)


async def _off_the_loop(chunks: Iterator[Any]) -> AsyncIterator[Any]:
    end = object()
    while (chunk := await asyncio.to_thread(next, chunks, end)) is not end:
        yield chunk


async def complete_stream(model: str, raws: Any) -> AsyncIterator[Chunk]:
    """A client's stream as our chunks; one that ends without a `finish_reason` was cut short."""
    finished = False
    try:
        async for raw in raws:
            chunk = parse_chunk(as_dict(raw))
            finished = finished or any(delta.finish_reason for delta in chunk.deltas)
            yield chunk
    except SelfMoAError:
        raise
    except Exception as error:
        raise classify(model, error) from None
    if not finished:
        raise TransientError(model, "the stream ended before it was complete (no finish_reason)")


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


def backend_for(client: Any) -> Backend:
    """The adapter for a client object optillm hands a plugin (see the module docstring)."""
    import openai

    if type(client) is openai.OpenAI:  # a plain OpenAI-compatible endpoint: speak to it directly
        return WireBackend(str(client.base_url), client.api_key)
    if isinstance(client, (openai.AsyncOpenAI,)):
        return ClientBackend(client)
    if type(client).__name__ == "LiteLLMWrapper":
        return LiteLLMBackend()
    return ThreadedBackend(client)
