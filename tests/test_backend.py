"""The OpenAI-client adapter of the `Backend` protocol, under the real `openai` client over
`httpx.MockTransport` (its parsing, errors and timeouts under test too), and over optillm's
LiteLLM wrapper, which has no `with_options`: the per-call timeout must reach it another way."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from selfmoa.approaches import BackendError, ContextTooLong, ParameterRefused, TransientError
from selfmoa.approaches.backend import Accumulator, OpenAIBackend
from selfmoa.sim import BackgroundSim

USER = [{"role": "user", "content": "hi"}]
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}


def backend_answering(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[OpenAIBackend, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = openai.OpenAI(base_url="http://backend/v1", api_key="sk-test-000000",
                           http_client=httpx.Client(transport=httpx.MockTransport(record)))
    return OpenAIBackend(client), seen


def completion(**message: Any) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "tool_calls",
                         "logprobs": {"content": [{"token": "a", "logprob": -0.1, "bytes": [97],
                                                   "top_logprobs": []}]}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                      "prompt_tokens_details": {"cached_tokens": 4}}}


def test_a_whole_reply_is_parsed_with_tool_calls_logprobs_and_usage() -> None:
    backend, seen = backend_answering(lambda r: httpx.Response(200, json=completion(content=None, tool_calls=[CALL])))
    reply = backend.complete("m", USER, {"temperature": 0.2, "n": 2}, timeout=7.5)
    [choice] = reply.choices
    assert choice.tool_calls == (CALL,) and choice.finish_reason == "tool_calls" and choice.content == ""
    assert choice.logprobs is not None and choice.logprobs["content"][0]["token"] == "a"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.cached_tokens) == (11, 7, 4)
    sent = json.loads(seen[0].content)
    assert sent["temperature"] == 0.2 and sent["n"] == 2 and sent["model"] == "m"
    assert seen[0].extensions["timeout"]["read"] == 7.5  # the call's own deadline, not the client's default


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_a_stream_is_parsed_and_reassembled() -> None:
    body = sse(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
               chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                      "function": {"name": "f", "arguments": ""}}]}),
               chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]}),
               chunk({}, "tool_calls"),
               {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
    backend, seen = backend_answering(
        lambda r: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))
    chunks = list(backend.stream("m", USER, {"stream_options": {"include_usage": True}}, timeout=5))
    assert json.loads(seen[0].content)["stream"] is True
    reply = Accumulator()
    for part in chunks:
        for delta in part.deltas:
            reply.add(delta)
    choice = reply.choice()
    assert choice.content == "Hello" and choice.finish_reason == "tool_calls"
    assert choice.tool_calls == ({"id": "call_1", "type": "function",
                                  "function": {"name": "f", "arguments": '{"a": 1}'}},)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


def error(status: int, message: str, *, code: str | None = None, param: str | None = None,
          headers: dict[str, str] | None = None) -> Callable[[httpx.Request], httpx.Response]:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code, "param": param}}
    return lambda request: httpx.Response(status, json=body, headers=headers or {})


@pytest.mark.parametrize("handler,kind,status", [
    (error(429, "slow down", headers={"Retry-After": "2"}), TransientError, 429),
    (error(503, "busy"), TransientError, 502),
    (error(400, "This model's maximum context length is 10", code="context_length_exceeded"), ContextTooLong, 400),
    (error(400, "Unsupported parameter: 'seed'", param="seed"), ParameterRefused, 400),
    (error(404, "The model `m` does not exist", code="model_not_found"), BackendError, 404),
])
def test_errors_are_classified_with_status_and_code(handler: Callable[[httpx.Request], httpx.Response],
                                                    kind: type[Exception], status: int) -> None:
    backend, _ = backend_answering(handler)
    with pytest.raises(kind) as raised:
        backend.complete("m", USER, {}, timeout=5)
    assert raised.value.status == status  # type: ignore[attr-defined]
    if status == 429:
        assert raised.value.retry_after == 2.0  # type: ignore[attr-defined]
    if status == 404:
        assert raised.value.code == "model_not_found"  # type: ignore[attr-defined]


def test_a_timeout_is_transient_and_says_so() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    backend, _ = backend_answering(slow)
    with pytest.raises(TransientError) as raised:
        backend.complete("m", USER, {}, timeout=0.5)
    assert raised.value.timed_out


def test_optillms_litellm_wrapper_gets_the_calls_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without OPENAI_API_KEY optillm routes through LiteLLM; a hung backend must not hold the call
    past its deadline (the wrapper has no `with_options`)."""
    from optillm.litellm_wrapper import LiteLLMWrapper

    with BackgroundSim() as sim:
        httpx.post(f"{sim.root_url}/sim/profile", json={"models": {"sim-hang": {"rate_hang": 1.0}}}, timeout=10)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-litellm-test-000000")
        monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
        backend = OpenAIBackend(LiteLLMWrapper())
        answered = backend.complete("openai/sim-strong", USER, {}, timeout=30)
        assert answered.choices[0].content and answered.usage.prompt_tokens > 0
        started = time.monotonic()
        with pytest.raises(TransientError) as raised:
            backend.complete("openai/sim-hang", USER, {}, timeout=1.0)
        assert raised.value.timed_out
        assert time.monotonic() - started < 60  # not the sim's hour-long hang: the timeout reached LiteLLM
        hung = [c for c in httpx.get(f"{sim.root_url}/sim/calls", timeout=10).json() if c["model"] == "sim-hang"]
        assert len(hung) == 1  # and LiteLLM did not retry it (three timeouts in all) behind the deadline's back
