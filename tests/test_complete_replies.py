"""Every reply `selfmoa serve` gives is as complete as the backend's: plain models relayed as the
backend answered, optillm's own approaches and `&`/`|` combinations with full usage (what their
calls cost, as the simulator logged it) and complete bodies, errors with the backend's status,
structured output in every mode, and stock optillm's replies to our approaches complete too."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from selfmoa.sim import BackgroundSim
from selfmoa.testing.live import Proxy, SimLog
from tests.conversations import BAKER, TOOLS, WEATHER

CONVERSATION = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Pick a number."},
                {"role": "assistant", "content": "7"}, *BAKER]


def spent(simlog: SimLog) -> tuple[int, int]:
    """(prompt, completion) tokens of every call the simulator answered."""
    calls = [c for c in simlog.calls() if c["status"] == 200]
    return sum(c["prompt_tokens"] or 0 for c in calls), sum(c["completion_tokens"] or 0 for c in calls)


def complete(body: dict[str, Any], model: str) -> ChatCompletion:
    reply = ChatCompletion.model_validate(body)
    assert reply.id and reply.object == "chat.completion" and reply.created and reply.model == model
    assert reply.usage is not None and reply.usage.total_tokens == reply.usage.prompt_tokens + \
        reply.usage.completion_tokens
    return reply


# --- plain models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [{}, {"n": 2}, {"logprobs": True, "top_logprobs": 2},
                                   {"messages": WEATHER, "tools": TOOLS}, {"response_format": {"type": "json_object"}}])
def test_a_plain_reply_is_the_backends_own(proxy: Proxy, sim: BackgroundSim, simlog: SimLog,
                                           shape: dict[str, Any]) -> None:
    body = {"model": "sim-strong", "messages": BAKER, **shape, "moa": {"samples": 3}}
    relayed = proxy.post(body)
    [call] = simlog.calls()
    assert relayed.status_code == 200 and "moa" not in call["params"]  # nothing else changed
    direct = httpx.post(f"{sim.base_url}/chat/completions", json={k: v for k, v in body.items() if k != "moa"},
                        timeout=30).json()
    mine = relayed.json()
    assert set(mine) == set(direct) and set(mine["choices"][0]) == set(direct["choices"][0])
    assert mine["usage"]["prompt_tokens"] == call["prompt_tokens"]
    assert mine["usage"]["completion_tokens"] == call["completion_tokens"]
    assert mine["model"] == direct["model"] and len(mine["choices"]) == len(direct["choices"])


def test_a_plain_stream_is_relayed_chunk_by_chunk(proxy: Proxy, simlog: SimLog) -> None:
    stream = proxy.client().chat.completions.create(model="sim-strong", messages=BAKER, stream=True,
                                                    stream_options={"include_usage": True})
    chunks = [ChatCompletionChunk.model_validate(c.model_dump()) for c in stream]
    [call] = simlog.calls()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == call["outputs"][0] and len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == call["completion_tokens"]


def test_a_plain_429_is_answered_at_once_with_its_retry_after(proxy: Proxy, simlog: SimLog) -> None:
    simlog.patch({"sim-busy": {"rate_429": 1.0}})
    response = proxy.post({"model": "sim-busy", "messages": BAKER})
    assert response.status_code == 429 and response.headers.get("retry-after")
    assert len(simlog.calls()) == 1  # not waited out and retried behind the client's back


def test_an_unknown_plain_model_is_the_backends_404(proxy: Proxy) -> None:
    with pytest.raises(openai.NotFoundError):
        proxy.client().chat.completions.create(model="sim-missing", messages=BAKER)


# --- optillm's own approaches -------------------------------------------------------------------------


@pytest.mark.parametrize("approach", ["moa", "bon", "re2"])
def test_optillms_approaches_report_what_their_calls_cost(proxy: Proxy, simlog: SimLog, approach: str) -> None:
    response = proxy.post({"model": f"{approach}-sim-strong", "messages": BAKER, "moa": {"samples": 3}})
    reply = complete(response.json(), f"{approach}-sim-strong")
    assert reply.choices[0].message.content
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == spent(simlog)  # type: ignore[union-attr]
    assert all("moa" not in c["params"] for c in simlog.calls())  # never reaches optillm's approaches' calls


def test_an_error_optillm_turns_into_an_answer_is_an_error(proxy: Proxy) -> None:
    """optillm's `moa` answers "Error: Could not generate any completions" when every call failed:
    we answer with the backend's status instead."""
    response = proxy.post({"model": "moa-sim-missing", "messages": BAKER})
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("moa: ")


def test_a_streamed_optillm_approach_has_its_usage_chunk(proxy: Proxy, simlog: SimLog) -> None:
    stream = proxy.client().chat.completions.create(model="re2-sim-strong", messages=BAKER, stream=True,
                                                    stream_options={"include_usage": True})
    chunks = [ChatCompletionChunk.model_validate(c.model_dump()) for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == spent(simlog)[0]


def test_stacked_approaches_run_as_optillm_runs_them(proxy: Proxy, simlog: SimLog) -> None:
    """`self_moa-m` with `optillm_approach: re2` is optillm's `re2-self_moa-m`: it runs `re2` on `m`."""
    response = proxy.post({"model": "self_moa-sim-strong", "optillm_approach": "re2", "messages": BAKER})
    assert response.status_code == 200, response.text
    assert [c["model"] for c in simlog.calls()] == ["sim-strong"]  # one re2 call, no ensemble
    assert "stacked approaches without an operator" in proxy.log()


# --- combinations ---------------------------------------------------------------------------------------


def test_an_or_combination_gives_one_complete_choice_per_branch(proxy: Proxy, simlog: SimLog) -> None:
    response = proxy.post({"model": "self_moa|moa-sim-strong", "messages": BAKER, "moa": {"samples": 3}})
    reply = complete(response.json(), "self_moa|moa-sim-strong")
    assert len(reply.choices) == 2 and all(c.message.content for c in reply.choices)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == spent(simlog)  # type: ignore[union-attr]


def test_an_or_combination_streams_with_its_usage(proxy: Proxy, simlog: SimLog) -> None:
    stream = proxy.client().chat.completions.create(model="self_moa|re2-sim-strong", messages=BAKER, stream=True,
                                                    stream_options={"include_usage": True},
                                                    extra_body={"moa": {"samples": 2}})
    chunks = [ChatCompletionChunk.model_validate(c.model_dump()) for c in stream]
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == spent(simlog)[1]


def test_an_and_pipeline_keeps_the_conversation_for_our_step(proxy: Proxy, simlog: SimLog) -> None:
    response = proxy.post({"model": "self_moa&re2-sim-strong", "messages": CONVERSATION, "moa": {"samples": 2}})
    reply = complete(response.json(), "self_moa&re2-sim-strong")
    proposals = simlog.of_kind("propose")
    assert proposals[0]["messages"] == CONVERSATION  # not optillm's flattened "User: ..." prompt
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == spent(simlog)  # type: ignore[union-attr]


def test_a_later_step_of_ours_answers_the_previous_answer_in_the_conversation(proxy: Proxy,
                                                                               simlog: SimLog) -> None:
    response = proxy.post({"model": "re2&self_moa-sim-strong", "messages": CONVERSATION, "moa": {"samples": 2}})
    assert response.status_code == 200, response.text
    first, *rest = simlog.calls()
    ours = [c for c in rest if c["kind"] == "propose"]
    assert ours and ours[0]["messages"][:-1] == CONVERSATION[:-1]
    assert ours[0]["messages"][-1] == {"role": "user", "content": first["outputs"][0]}


def test_tool_calls_of_a_combination_come_in_openai_form(proxy: Proxy) -> None:
    reply = proxy.client().chat.completions.create(model="self_moa|mixed_moa-sim-strong", messages=WEATHER,
                                                   tools=TOOLS,  # type: ignore[arg-type]
                                                   extra_body={"moa": {"samples": 2, "proposers": ["sim-strong"]}})
    assert len(reply.choices) == 2
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
        assert "[tool call]" not in (choice.message.content or "")


def test_none_cannot_be_combined(proxy: Proxy) -> None:
    response = proxy.post({"model": "none|moa-sim-strong", "messages": BAKER})
    assert response.status_code == 400 and "none" in response.json()["error"]["message"]


# --- structured output -------------------------------------------------------------------------------------


class Rolls(BaseModel):
    answer: int
    reasoning: str


@pytest.mark.parametrize("mode", ["synthesize", "select"])
def test_structured_output_in_every_mode(proxy: Proxy, simlog: SimLog, mode: str) -> None:
    parsed = proxy.client().chat.completions.parse(model="self_moa-sim-strong", messages=BAKER,
                                                   response_format=Rolls,
                                                   extra_body={"moa": {"samples": 3, "mode": mode}})
    rolls = parsed.choices[0].message.parsed
    assert isinstance(rolls, Rolls)  # a simulated model may be wrong, never unparseable
    if mode == "select":  # the answer is a proposal as written: the proposers were asked for the format
        assert all(c["params"].get("response_format") for c in simlog.of_kind("propose"))


@pytest.mark.parametrize("native", [False, True], ids=["as a tool call", "as response_format"])
def test_pydantic_ai_gets_its_output_type(proxy: Proxy, native: bool) -> None:
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    provider = OpenAIProvider(base_url=f"{proxy.url}/v1", api_key="sk-client-secret-0123456789")
    agent = Agent(OpenAIChatModel("self_moa-sim-strong", provider=provider),
                  output_type=NativeOutput(Rolls) if native else Rolls)
    result = agent.run_sync(BAKER[0]["content"])
    assert isinstance(result.output, Rolls)
