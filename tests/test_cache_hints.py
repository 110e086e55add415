"""Cache hints: every call of a request carries llama.cpp's `cache_prompt` and one stable
`prompt_cache_key` (OpenAI's routing to the same prompt cache), unless the request set its own; a
backend that refuses one is sent it no more. Fields the openai SDK has no keyword for travel in
its `extra_body`, so they reach the backend's body as sent."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai

from selfmoa.approaches import BackendMemory, Caller, ClientBackend, Deadline, ParameterRefused, Proposer, run_moa
from selfmoa.approaches.backend import cache_hints
from selfmoa.approaches.classify import classify
from selfmoa.testing.live import SimLog
from tests.conftest import make_recipe
from tests.fakes import Call, FakeBackend, default_script, status_error

CONVERSATION = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Pick a number."}]


def hints_of(calls: list[dict[str, Any]]) -> set[tuple[Any, Any]]:
    return {(c["params"].get("cache_prompt"), c["params"].get("prompt_cache_key")) for c in calls}


def test_every_call_of_a_request_carries_the_same_hints(client: openai.OpenAI, simlog: SimLog) -> None:
    client.chat.completions.create(model="self_moa_seq-sim-strong", messages=CONVERSATION,  # type: ignore[arg-type]
                                   extra_body={"moa": {"samples": 9}})
    first = simlog.calls()
    assert len(first) >= 4 and hints_of(first) == {(True, cache_hints(CONVERSATION)["prompt_cache_key"])}
    simlog.clear()
    later_turn = [*CONVERSATION, {"role": "assistant", "content": "7"}, {"role": "user", "content": "Double it."}]
    client.chat.completions.create(model="self_moa-sim-strong", messages=later_turn,  # type: ignore[arg-type]
                                   extra_body={"moa": {"samples": 2}})
    assert hints_of(simlog.calls()) == hints_of(first)  # the conversation keeps its key from turn to turn
    simlog.clear()
    other = [{"role": "user", "content": "Another question."}]
    client.chat.completions.create(model="self_moa-sim-strong", messages=other,  # type: ignore[arg-type]
                                   extra_body={"moa": {"samples": 2}})
    assert len(hints_of(simlog.calls())) == 1 and hints_of(simlog.calls()) != hints_of(first)


def test_the_requests_own_values_win(client: openai.OpenAI, simlog: SimLog) -> None:
    client.chat.completions.create(model="self_moa-sim-strong", messages=CONVERSATION,  # type: ignore[arg-type]
                                   extra_body={"moa": {"samples": 2}, "prompt_cache_key": "mine",
                                               "cache_prompt": False})
    assert hints_of(simlog.calls()) == {(False, "mine")}


def test_refused_hints_are_dropped_once_and_remembered(client: openai.OpenAI, simlog: SimLog) -> None:
    simlog.patch({"sim-no-hints": {"refuse_params": ["cache_prompt", "prompt_cache_key"]}})
    for _ in range(2):
        reply = client.chat.completions.create(model="self_moa-sim-no-hints", messages=CONVERSATION,  # type: ignore[arg-type]
                                               extra_body={"moa": {"samples": 2}})
        assert reply.choices[0].message.content
    calls = simlog.calls()
    refused = [c for c in calls if c["status"] == 400]
    assert refused and len(refused) <= 4  # the first request's calls, each learning once
    assert all(c["params"].keys().isdisjoint({"cache_prompt", "prompt_cache_key"}) for c in calls[-2:])


def test_openais_wording_of_an_unknown_field_is_a_refusal_of_it() -> None:
    error = classify("m", status_error(400, "Unrecognized request argument supplied: cache_prompt"))
    assert isinstance(error, ParameterRefused) and error.param == "cache_prompt"
    error = classify("m", status_error(400, 'Invalid JSON payload received. Unknown name "prompt_cache_key"'))
    assert isinstance(error, ParameterRefused) and error.param == "prompt_cache_key"


def test_a_refusal_is_remembered_per_model() -> None:
    def no_hints(call: Call) -> list[str]:
        if "cache_prompt" in call.params:
            raise status_error(400, "Unrecognized request argument supplied: cache_prompt")
        return default_script(call)

    backend, memory = FakeBackend(no_hints), BackendMemory()
    recipe = make_recipe(proposers=(Proposer("m", 3),), shared_params=cache_hints(CONVERSATION))
    for _ in range(2):
        run_moa(recipe, CONVERSATION, Caller({"default": backend}, memory, Deadline(10)))
    assert memory.refused("default", "m") == {"cache_prompt"}
    assert [("cache_prompt" in c.params, "prompt_cache_key" in c.params) for c in backend.calls] == [
        (True, True), (False, True), (False, True), (False, True), (False, True)]


def test_fields_the_sdk_has_no_keyword_for_reach_the_body() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                                         "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": "hi"}}]})

    client = openai.AsyncOpenAI(base_url="http://backend/v1", api_key="sk-test-000000",
                                http_client=httpx.AsyncClient(transport=httpx.MockTransport(answer)))
    params = {"temperature": 0.1, "cache_prompt": True, "prompt_cache_key": "k", "top_k": 5}
    asyncio.run(ClientBackend(client).complete("m", CONVERSATION, params, timeout=5))
    sent = json.loads(seen[0].content)
    assert {k: sent[k] for k in params} == params
