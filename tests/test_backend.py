"""The `Backend` adapters: `WireBackend` (the OpenAI wire protocol over aiohttp) against a scripted
HTTP server on loopback, the client-object adapters under the real `openai` SDK over
`httpx.MockTransport` (its parsing, errors and timeouts under test too), and LiteLLM's async API
against the simulator, where a hung backend must not hold a call past its timeout."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web

from selfmoa.approaches import (
    BackendError,
    ClientBackend,
    ContextTooLong,
    LiteLLMBackend,
    ParameterRefused,
    ThreadedBackend,
    TransientError,
    WireBackend,
    backend_for,
)
from selfmoa.approaches.backend import Accumulator, Chunk
from selfmoa.sim import BackgroundSim

USER = [{"role": "user", "content": "hi"}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def completion(**message: Any) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "tool_calls",
                         "logprobs": {"content": [{"token": "a", "logprob": -0.1, "bytes": [97],
                                                   "top_logprobs": []}]}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                      "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 3}}}


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


STREAM = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
          chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                 "function": {"name": "f", "arguments": ""}}]}),
          chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]}),
          chunk({}, "tool_calls"),
          {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
           "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}]


def sse(*events: dict[str, Any], done: bool = True) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + (b"data: [DONE]\n\n" if done else b"")


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A scripted OpenAI-compatible server on loopback; yields its base URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


def answering(body: Any, status: int = 200, headers: dict[str, str] | None = None,
              seen: list[tuple[dict[str, Any], str]] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if seen is not None:
            seen.append((await request.json(), request.headers.get("Authorization", "")))
        if isinstance(body, bytes):
            return web.Response(body=body, status=status, headers=headers, content_type="text/event-stream")
        return web.json_response(body, status=status, headers=headers)

    return handler


def against(handler: Handler, scenario: Callable[[WireBackend], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with serving(handler) as url:
            backend = WireBackend(url, "sk-test-000000")
            try:
                return await scenario(backend)
            finally:
                await backend.aclose()

    return asyncio.run(main())


async def streamed(backend: Any, params: dict[str, Any] | None = None) -> list[Chunk]:
    async with backend.stream("m", USER, params or {}, timeout=5) as chunks:
        return [part async for part in chunks]


# --- over the wire ---------------------------------------------------------------------------------


def test_a_whole_reply_is_parsed_with_tool_calls_logprobs_and_usage() -> None:
    seen: list[tuple[dict[str, Any], str]] = []
    reply = against(answering(completion(content=None, tool_calls=[CALL]), seen=seen),
                    lambda b: b.complete("m", USER, {"temperature": 0.2, "n": 2, "cache_prompt": True}, timeout=7.5))
    [choice] = reply.choices
    assert choice.tool_calls == (CALL,) and choice.finish_reason == "tool_calls" and choice.content == ""
    assert choice.logprobs is not None and choice.logprobs["content"][0]["token"] == "a"
    usage = reply.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens) == (11, 7, 4, 3)
    [(sent, authorization)] = seen
    assert sent == {"temperature": 0.2, "n": 2, "cache_prompt": True, "model": "m", "messages": USER}  # as given
    assert authorization == "Bearer sk-test-000000"


def test_a_stream_is_parsed_and_reassembled() -> None:
    seen: list[tuple[dict[str, Any], str]] = []
    chunks = against(answering(sse(*STREAM), seen=seen), streamed)
    assert seen[0][0]["stream"] is True
    reply = Accumulator()
    for part in chunks:
        for delta in part.deltas:
            reply.add(delta)
    choice = reply.choice()
    assert choice.content == "Hello" and choice.finish_reason == "tool_calls"
    assert choice.tool_calls == (CALL,)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


@pytest.mark.parametrize("body,missing", [
    (sse(*STREAM[:3], done=False), "no finish_reason"),  # the connection closed mid-answer
    (sse(*STREAM[:3]), "no finish_reason"),
    (sse(*STREAM, done=False), "no [DONE]"),
])
def test_a_stream_cut_short_is_a_broken_stream_not_an_answer(body: bytes, missing: str) -> None:
    with pytest.raises(TransientError, match=rf"ended before it was complete \({re.escape(missing)}"):
        against(answering(body), streamed)


def test_an_error_event_in_a_stream_is_raised() -> None:
    body = sse(STREAM[1], {"error": {"message": "the model crashed"}}, done=False)
    with pytest.raises(BackendError, match="the model crashed"):
        against(answering(body), streamed)


def error(status: int, message: str, *, code: str | None = None, param: str | None = None,
          headers: dict[str, str] | None = None) -> Handler:
    return answering({"error": {"message": message, "type": "invalid_request_error", "code": code, "param": param}},
                     status, headers)


@pytest.mark.parametrize("handler,kind,status", [
    (error(429, "slow down", headers={"Retry-After": "2"}), TransientError, 429),
    (error(503, "busy"), TransientError, 502),
    (error(400, "This model's maximum context length is 10", code="context_length_exceeded"), ContextTooLong, 400),
    (error(400, "Unsupported parameter: 'seed'", param="seed"), ParameterRefused, 400),
    (error(404, "The model `m` does not exist", code="model_not_found"), BackendError, 404),
])
def test_errors_are_classified_with_status_and_code(handler: Handler, kind: type[Exception], status: int) -> None:
    with pytest.raises(kind) as raised:
        against(handler, lambda b: b.complete("m", USER, {}, timeout=5))
    assert raised.value.status == status  # type: ignore[attr-defined]
    if status == 429:
        assert raised.value.retry_after == 2.0  # type: ignore[attr-defined]
    if status == 404:
        assert raised.value.code == "model_not_found"  # type: ignore[attr-defined]


def test_a_refusal_of_a_stream_is_raised_when_it_opens() -> None:
    with pytest.raises(ParameterRefused):
        against(error(400, "Unsupported parameter: 'stream_options'", param="stream_options"), streamed)


def test_a_timeout_is_transient_and_says_so() -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.json_response(completion(content="late"))

    with pytest.raises(TransientError) as raised:
        against(slow, lambda b: b.complete("m", USER, {}, timeout=0.3))
    assert raised.value.timed_out


def test_a_cancelled_call_closes_its_connection() -> None:
    """The server sees its client go: its handler is cancelled as soon as our call is."""
    gone = asyncio.Event()

    async def hangs(request: web.Request) -> web.StreamResponse:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            gone.set()
            raise
        return web.json_response(completion(content="never"))

    async def scenario(backend: WireBackend) -> None:
        call = asyncio.ensure_future(backend.complete("m", USER, {}, timeout=30))
        await asyncio.sleep(0.2)
        call.cancel()
        await asyncio.wait_for(gone.wait(), 5)

    against(hangs, scenario)
    assert gone.is_set()


# --- client objects ---------------------------------------------------------------------------------


def transport(handler: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request]) -> httpx.MockTransport:
    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return httpx.MockTransport(record)


def test_an_async_sdk_client_gets_the_calls_timeout_and_unknown_fields_in_its_body() -> None:
    seen: list[httpx.Request] = []
    client = openai.AsyncOpenAI(base_url="http://backend/v1", api_key="sk-test-000000", http_client=httpx.AsyncClient(
        transport=transport(lambda r: httpx.Response(200, json=completion(content="ok")), seen)))
    reply = asyncio.run(ClientBackend(client).complete("m", USER, {"top_k": 5, "temperature": 0.1}, timeout=7.5))
    assert reply.choices[0].content == "ok" and reply.usage.cached_tokens == 4
    sent = json.loads(seen[0].content)
    assert sent["top_k"] == 5 and sent["temperature"] == 0.1  # extra_body merged into the request body
    assert seen[0].extensions["timeout"]["read"] == 7.5  # the call's own deadline, not the client's default


def test_an_sdk_stream_cut_short_is_a_broken_stream() -> None:
    seen: list[httpx.Request] = []
    client = openai.AsyncOpenAI(base_url="http://backend/v1", api_key="sk-test-000000", http_client=httpx.AsyncClient(
        transport=transport(lambda r: httpx.Response(200, content=sse(*STREAM[:3]),
                                                     headers={"content-type": "text/event-stream"}), seen)))
    with pytest.raises(TransientError, match="no finish_reason"):
        asyncio.run(streamed(ClientBackend(client)))


def test_a_sync_client_is_called_off_the_event_loop() -> None:
    seen: list[httpx.Request] = []
    client = openai.OpenAI(base_url="http://backend/v1", api_key="sk-test-000000", http_client=httpx.Client(
        transport=transport(lambda r: httpx.Response(200, json=completion(content="ok")), seen)))
    azure_like = type("AzureLike", (), {"chat": client.chat, "with_options": client.with_options})()
    backend = backend_for(azure_like)
    assert isinstance(backend, ThreadedBackend)
    assert asyncio.run(backend.complete("m", USER, {}, timeout=4)).choices[0].content == "ok"
    assert seen[0].extensions["timeout"]["read"] == 4


def test_each_client_optillm_hands_a_plugin_gets_its_adapter() -> None:
    from optillm.litellm_wrapper import LiteLLMWrapper

    wire = backend_for(openai.OpenAI(base_url="http://backend/v1", api_key="sk-test-000000"))
    assert isinstance(wire, WireBackend) and wire.base_url == "http://backend/v1"
    assert isinstance(backend_for(LiteLLMWrapper()), LiteLLMBackend)
    assert isinstance(backend_for(openai.AsyncOpenAI(api_key="sk-test-000000")), ClientBackend)


def test_litellm_gets_the_calls_timeout_and_does_not_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without OPENAI_API_KEY optillm routes through LiteLLM; a hung backend must not hold the call
    past its deadline, nor be retried behind it."""
    with BackgroundSim() as sim:
        httpx.post(f"{sim.root_url}/sim/profile", json={"models": {"sim-hang": {"rate_hang": 1.0}}}, timeout=10)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-litellm-test-000000")
        monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
        backend = LiteLLMBackend()
        answered = asyncio.run(backend.complete("openai/sim-strong", USER, {}, timeout=30))
        assert answered.choices[0].content and answered.usage.prompt_tokens > 0
        started = time.monotonic()
        with pytest.raises(TransientError) as raised:
            asyncio.run(backend.complete("openai/sim-hang", USER, {}, timeout=1.0))
        assert raised.value.timed_out
        assert time.monotonic() - started < 60  # not the sim's hour-long hang: the timeout reached LiteLLM
        hung = [c for c in httpx.get(f"{sim.root_url}/sim/calls", timeout=10).json() if c["model"] == "sim-hang"]
        assert len(hung) == 1  # and LiteLLM did not retry it (three timeouts in all) behind the deadline's back
