"""Tools: `tools`, `tool_choice` and `parallel_tool_calls` reach proposers and the aggregator; a
proposal that calls a tool is a candidate described as that call; the answer may be a tool call,
in OpenAI form; a conversation continuing after tool results reaches every call intact."""

from __future__ import annotations

import json

import openai

from selfmoa.approaches import Choice, run_moa
from selfmoa.approaches.prompts import candidate_of
from selfmoa.testing.live import SimLog
from tests.conftest import make_caller, make_recipe
from tests.conversations import AFTER_TOOL_RESULTS, CALL, TOOLS, WEATHER
from tests.fakes import Call, FakeBackend


def test_the_answer_is_a_tool_call_where_the_plain_model_calls_one(client: openai.OpenAI, simlog: SimLog) -> None:
    plain = client.chat.completions.create(model="sim-strong", messages=WEATHER, tools=TOOLS)  # type: ignore[arg-type]
    assert plain.choices[0].finish_reason == "tool_calls"
    simlog.clear()
    reply = client.chat.completions.create(model="self_moa-sim-strong", messages=WEATHER,  # type: ignore[arg-type]
                                           tools=TOOLS, tool_choice="auto", parallel_tool_calls=False)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    for backend_call in simlog.calls():  # proposers and aggregator alike saw the tools
        assert backend_call["params"]["tools"] == ["get_weather"]
        assert backend_call["params"]["tool_choice"] == "auto"
        assert backend_call["params"]["parallel_tool_calls"] is False
    [aggregation] = simlog.of_kind("aggregate")
    prompt = "\n".join(str(m["content"]) for m in aggregation["messages"])
    assert prompt.count('[tool call] get_weather({"city": "Paris"})') == 6


def test_select_returns_a_proposed_tool_call(client: openai.OpenAI, simlog: SimLog) -> None:
    reply = client.chat.completions.create(model="self_moa-sim-strong", messages=WEATHER, tools=TOOLS,  # type: ignore
                                           extra_body={"moa": {"mode": "select"}})
    assert reply.choices[0].finish_reason == "tool_calls"
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"  # type: ignore[index]
    assert "tools" not in simlog.of_kind("select")[0]["params"]  # the choosing call answers <best>N</best>


def test_a_conversation_after_tool_results_reaches_every_call(client: openai.OpenAI, simlog: SimLog) -> None:
    reply = client.chat.completions.create(model="self_moa-sim-strong", messages=AFTER_TOOL_RESULTS,  # type: ignore
                                           tools=TOOLS)
    assert reply.choices[0].finish_reason == "stop" and reply.choices[0].message.content
    for call in simlog.calls():
        turns = [m for m in call["messages"] if m["role"] != "system"]
        assert [m["role"] for m in turns] == ["user", "assistant", "tool"]
        assert turns[1]["tool_calls"][0]["id"] == "call_1" and turns[2]["content"] == "Sunny, 21 degrees"


# --- unit ----------------------------------------------------------------------------------------


def test_a_tool_call_proposal_is_described_as_that_call() -> None:
    choice = Choice(content="Let me look.", finish_reason="tool_calls", tool_calls=(CALL,))
    candidate = candidate_of(choice)
    assert candidate is not None
    assert candidate.text == 'Let me look.\n[tool call] get_weather({"city": "Paris"})'
    assert candidate_of(Choice(content="", finish_reason="tool_calls", tool_calls=(CALL,))) is not None
    assert candidate_of(Choice(content="  ")) is None


def test_a_synthesized_tool_call_is_the_answer() -> None:
    def script(call: Call) -> list[object]:
        if call.kind == "propose":
            return [Choice(content="", finish_reason="tool_calls", tool_calls=(CALL,))] * call.n
        return [Choice(content="", finish_reason="tool_calls", tool_calls=(CALL,))]

    backend = FakeBackend(script)
    recipe = make_recipe(samples=3, shared_params={"tools": TOOLS, "tool_choice": "auto"})
    outcome = run_moa(recipe, WEATHER, make_caller(backend))
    assert outcome.answer.tool_calls == (CALL,) and outcome.answer.finish_reason == "tool_calls"
    assert all(c.params["tools"] == TOOLS for c in backend.calls)
