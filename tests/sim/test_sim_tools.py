"""The simulator's tool calls, logprobs and pairwise judging, over real HTTP with the openai client."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from selfmoa.approaches import Candidate, Choice
from selfmoa.approaches.prompts import (
    CANDIDATE_CLOSE,
    CUT_OFF_OPEN,
    SELECT_INSTRUCTIONS,
    SYNTHESIZE_INSTRUCTIONS,
    aggregation_messages,
    in_system_prompt,
)
from selfmoa.sim import BackgroundSim, load_profile, load_tasks
from selfmoa.sim.judge import WINNER_PATTERN
from selfmoa.sim.logprobs import pieces
from selfmoa.sim.tools import arguments

ARITH = load_tasks("arithmetic")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
TOOLS = [WEATHER, TIME]


def patch(sim: BackgroundSim, **models: dict[str, Any]) -> None:
    response = httpx.post(f"{sim.root_url}/sim/profile", json={"models": models})
    assert response.status_code == 200, response.text


def last_call(sim: BackgroundSim) -> dict[str, Any]:
    record: dict[str, Any] = httpx.get(f"{sim.root_url}/sim/calls").json()[-1]
    return record


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def post(sim: BackgroundSim, **body: Any) -> httpx.Response:
    body.setdefault("model", "sim-medium")
    return httpx.post(f"{sim.base_url}/chat/completions", json=body, timeout=10)


def called(response: ChatCompletion, index: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """(name, parsed arguments) of one choice's tool calls."""
    calls = response.choices[index].message.tool_calls or []
    return [(c.function.name, json.loads(c.function.arguments)) for c in calls]


# --- tool choice -----------------------------------------------------------------------------

def test_required_calls_the_tool_the_user_names_else_the_first(sim: BackgroundSim, client: openai.OpenAI) -> None:
    named = client.chat.completions.create(model="sim-medium", messages=user("What is the get_time in Tokyo?"),
                                           tools=TOOLS, tool_choice="required")
    choice = named.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert called(named) == [("get_time", {"zone": "Tokyo"})]
    seq = last_call(sim)["seq"]
    assert [c.id for c in choice.message.tool_calls or []] == [f"call_sim_{seq}_0_0"]
    unnamed = client.chat.completions.create(model="sim-medium", messages=user("How warm is it in Lisbon?"),
                                             tools=TOOLS, tool_choice="required")
    assert [name for name, _ in called(unnamed)] == ["get_weather"]


def test_named_choice_calls_that_function_only(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="sim-medium", messages=user("use get_weather for Paris"), tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert response.choices[0].finish_reason == "tool_calls"
    assert called(response) == [("get_time", {"zone": "Paris"})]


def test_auto_calls_a_tool_only_when_the_user_names_it(client: openai.OpenAI) -> None:
    auto = client.chat.completions.create(model="sim-medium", messages=user("Please use GET_WEATHER for Paris"),
                                          tools=TOOLS)
    assert called(auto) == [("get_weather", {"city": "Paris"})]
    plain = client.chat.completions.create(model="sim-medium", messages=user("How warm is it in Paris?"),
                                           tools=TOOLS, tool_choice="auto")
    assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.tool_calls is None
    assert "Answer:" in (plain.choices[0].message.content or "")
    refused = client.chat.completions.create(model="sim-medium", messages=user("use get_weather for Paris"),
                                             tools=TOOLS, tool_choice="none")
    assert refused.choices[0].finish_reason == "stop" and refused.choices[0].message.tool_calls is None


def test_parallel_calls_each_named_tool_in_order_of_mention(client: openai.OpenAI) -> None:
    text = "Use get_time for Tokyo, then get_weather for Osaka"
    both = client.chat.completions.create(model="sim-medium", messages=user(text), tools=TOOLS)
    assert called(both) == [("get_time", {"zone": "Tokyo"}), ("get_weather", {"city": "Osaka"})]
    ids = [c.id for c in both.choices[0].message.tool_calls or []]
    assert len(set(ids)) == 2 and all(re.fullmatch(r"call_sim_\d+_0_[01]", i) for i in ids)
    one = client.chat.completions.create(model="sim-medium", messages=user(text), tools=TOOLS,
                                         parallel_tool_calls=False)
    assert called(one) == [("get_time", {"zone": "Tokyo"})]


def test_every_choice_of_n_calls(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="sim-medium", messages=user("use get_weather for Rome"),
                                              tools=TOOLS, n=3)
    assert [called(response, i) for i in range(3)] == [[("get_weather", {"city": "Rome"})]] * 3
    ids = {c.id for choice in response.choices for c in choice.message.tool_calls or []}
    assert len(ids) == 3


# --- arguments -------------------------------------------------------------------------------

BOOKING = {"type": "object", "required": ["city", "nights", "budget", "breakfast", "room", "extras", "guest", "when"],
           "properties": {
               "city": {"type": "string"}, "nights": {"type": "integer"}, "budget": {"type": "number"},
               "breakfast": {"type": "boolean"}, "room": {"type": "string", "enum": ["double", "single"]},
               "extras": {"type": "array", "items": {"type": "string"}}, "guest": {"type": "object"},
               "when": {"type": ["string", "null"]}, "note": {"type": "string"}}}


def test_arguments_fill_every_required_property_by_its_type(client: openai.OpenAI) -> None:
    tool = {"type": "function", "function": {"name": "book_hotel", "parameters": BOOKING}}
    response = client.chat.completions.create(model="sim-medium", messages=user("please book_hotel in Vienna"),
                                              tools=[tool])
    assert called(response) == [("book_hotel", {"city": "Vienna", "nights": 1, "budget": 1, "breakfast": True,
                                                "room": "double", "extras": [], "guest": {}, "when": "Vienna"})]


def test_string_arguments_fall_back_to_the_first_long_word() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    assert arguments(schema, "is it warm in oslo", "search", ["search"]) == {"q": "warm"}
    assert arguments(schema, "search for cheap flights", "search", ["search"]) == {"q": "cheap"}
    assert arguments(schema, "no", "search", ["search"]) == {"q": "unknown"}
    assert arguments({"type": "object"}, "anything", "search", ["search"]) == {}


# --- the conversation after a call -----------------------------------------------------------

def _after_the_call(question: str, result: str) -> list[dict[str, Any]]:
    call = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
    return [*user(f"{question}\nUse calculator if you like."),
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": result}]


def test_a_tool_result_turn_gets_a_text_reply_that_uses_it(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-exact": {"accuracy": 1.0}})
    task = ARITH[0]
    calculator = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}
    result = "12 * 8 - 30 = 66,\ncomputed by the calculator tool in 3 ms, which is quick"
    messages = _after_the_call(task.question, result)
    response = client.chat.completions.create(model="sim-exact", messages=messages, tools=[calculator])
    choice = response.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    quoted = result.replace("\n", " ")[:60]
    assert len(quoted) == 60 and quoted.endswith("3 ms, w")
    assert choice.message.content == f"Using the tool result: {quoted}\nAnswer: {task.answer}"
    again = client.chat.completions.create(model="sim-exact", messages=messages, tools=[calculator],
                                           tool_choice="required")
    assert again.choices[0].finish_reason == "tool_calls" and called(again) == [("calculator", {})]


# --- aggregation -----------------------------------------------------------------------------

PARIS = '[tool call] get_weather({"city": "Paris"})'
LYON = '[tool call] get_weather({"city":"Lyon"})'


def fenced(texts: list[str], mode: str = "synthesize") -> list[dict[str, Any]]:
    candidates = [Candidate(text=t, choice=Choice(content=t)) for t in texts]
    template = SELECT_INSTRUCTIONS if mode == "select" else SYNTHESIZE_INSTRUCTIONS
    return aggregation_messages(user("use get_weather for Paris"), candidates, template)


def _aggregate(client: openai.OpenAI, candidates: list[str], mode: str = "synthesize", **kwargs: Any) -> ChatCompletion:
    messages = fenced(candidates, mode)
    return client.chat.completions.create(model="sim-medium", messages=messages, **kwargs)


def test_aggregating_mostly_tool_call_candidates_calls(sim: BackgroundSim, client: openai.OpenAI) -> None:
    candidates = [f"I will check.\n{LYON}", PARIS, "It is sunny.\nAnswer: sunny", PARIS]
    response = _aggregate(client, candidates, tools=TOOLS, n=2)
    for choice in response.choices:
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []] == [
            ("get_weather", '{"city": "Paris"}')]
    record = last_call(sim)
    assert record["kind"] == "aggregate" and record["candidates"] == 4 and record["outputs"] == [PARIS, PARIS]
    lyon = _aggregate(client, [LYON, LYON, PARIS], tools=TOOLS)
    assert [c.function.arguments for c in lyon.choices[0].message.tool_calls or []] == ['{"city":"Lyon"}']


def test_a_cut_off_candidate_still_proposes_its_call(client: openai.OpenAI) -> None:
    messages = fenced([PARIS, "Answer: rain"])
    cut = f'{CUT_OFF_OPEN.format(index=3)}\n{PARIS}\n{CANDIDATE_CLOSE}'
    messages = in_system_prompt(messages, cut)
    response = client.chat.completions.create(model="sim-medium", messages=messages, tools=TOOLS)
    assert response.choices[0].finish_reason == "tool_calls"


def test_aggregating_mostly_text_candidates_writes_text(client: openai.OpenAI) -> None:
    text = ["Sunny.\nAnswer: sunny", PARIS, "Cloudy.\nAnswer: sunny"]
    response = _aggregate(client, text, tools=TOOLS)
    assert response.choices[0].finish_reason == "stop"
    assert (response.choices[0].message.content or "").startswith("Weighing the 3 candidates")
    half = _aggregate(client, [PARIS, "Answer: sunny"], tools=TOOLS)
    assert half.choices[0].finish_reason == "stop"


def test_tool_call_candidates_without_tools_or_with_none_or_select_stay_text(client: openai.OpenAI) -> None:
    candidates = [PARIS, PARIS, PARIS]
    assert _aggregate(client, candidates).choices[0].finish_reason == "stop"
    assert _aggregate(client, candidates, tools=TOOLS, tool_choice="none").choices[0].finish_reason == "stop"
    selected = _aggregate(client, candidates, mode="select", tools=TOOLS).choices[0]
    assert selected.finish_reason == "stop" and re.fullmatch(r"<best>[123]</best>", selected.message.content or "")


# --- streaming -------------------------------------------------------------------------------

def test_streamed_tool_calls_are_reassembled_by_the_sdk(client: openai.OpenAI) -> None:
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    with client.chat.completions.stream(model="sim-medium", messages=user("use get_weather for Paris"),
                                        tools=[strict]) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert call.function.parsed_arguments == {"city": "Paris"}
    assert call.id.startswith("call_sim_")
    assert events.count("tool_calls.function.arguments.delta") >= 2
    assert "tool_calls.function.arguments.done" in events


def _raw_chunks(sim: BackgroundSim, **body: Any) -> list[ChatCompletionChunk]:
    text = post(sim, stream=True, **body).text
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [ChatCompletionChunk.model_validate(json.loads(e)) for e in events[:-1]]


def test_parallel_streamed_calls_arrive_header_first_then_argument_pieces(sim: BackgroundSim) -> None:
    chunks = _raw_chunks(sim, messages=user("Use get_time for Tokyo, then get_weather for Osaka"), tools=TOOLS)
    deltas = [d for c in chunks for choice in c.choices for d in choice.delta.tool_calls or []]
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        if delta.index not in calls:
            assert delta.id and delta.type == "function" and delta.function
            assert delta.function.name and delta.function.arguments == ""
            calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
        else:
            assert delta.id is None and delta.function and delta.function.arguments
            calls[delta.index]["arguments"] += delta.function.arguments
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_time", {"zone": "Tokyo"}), ("get_weather", {"city": "Osaka"})]
    assert len(deltas) >= 2 + 2 * 2  # a header and at least two argument pieces per call
    assert chunks[0].choices[0].delta.content is None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


# --- validation and the call log -------------------------------------------------------------

BAD_TOOL_REQUESTS = [
    ({"tools": "get_weather"}, "tools"),
    ({"tools": []}, "tools"),
    ({"tools": [{"type": "retrieval", "function": WEATHER["function"]}]}, "tools[0].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
    ({"tools": [WEATHER, {"type": "function", "function": {"name": "has spaces"}}]}, "tools[1].function.name"),
    ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_stock"}}}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function"}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"tools": TOOLS, "logprobs": "true"}, "logprobs"),
]


@pytest.mark.parametrize("fields, param", BAD_TOOL_REQUESTS)
def test_malformed_tool_fields_are_a_400_naming_the_field(sim: BackgroundSim, fields: dict[str, Any],
                                                          param: str) -> None:
    response = post(sim, messages=user("use get_weather for Paris"), **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and f"'{param}'" in error["message"]


def test_refuse_params_tools_still_refuses(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-no-tools": {"refuse_params": ["tools"]}})
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="sim-no-tools", messages=user("use get_weather"), tools=TOOLS)
    assert refused.value.param == "tools" and "'tools' is not supported" in str(refused.value)


def test_the_call_log_records_tool_and_logprob_options(sim: BackgroundSim, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="sim-medium", messages=user("use get_weather for Paris"), tools=TOOLS,
                                   tool_choice="auto", parallel_tool_calls=False, logprobs=True, top_logprobs=2)
    record = last_call(sim)
    assert record["params"] == {"tools": ["get_weather", "get_time"], "tool_choice": "auto",
                                "parallel_tool_calls": False, "logprobs": True, "top_logprobs": 2}
    assert record["outputs"] == [PARIS] and record["kind"] == "propose"


# --- logprobs --------------------------------------------------------------------------------

def test_logprobs_cover_the_text_token_by_token(sim: BackgroundSim) -> None:
    body = post(sim, messages=user(ARITH[4].question), n=2, logprobs=True, top_logprobs=3).json()
    response = ChatCompletion.model_validate(body)
    for choice in response.choices:
        assert choice.logprobs is not None and choice.logprobs.refusal is None
        entries = choice.logprobs.content or []
        assert [e.token for e in entries] == pieces(choice.message.content or "")
        assert "".join(e.token for e in entries) == choice.message.content
        for entry in entries:
            assert entry.logprob < 0 and entry.bytes == list(entry.token.encode())
            tops = entry.top_logprobs
            assert len(tops) == 3 and (tops[0].token, tops[0].logprob) == (entry.token, entry.logprob)
            assert all(t.token != entry.token and t.logprob < entry.logprob for t in tops[1:])
            assert [t.logprob for t in tops] == sorted((t.logprob for t in tops), reverse=True)


def test_logprobs_are_absent_unless_asked_and_leave_the_text_alone(sim: BackgroundSim) -> None:
    httpx.post(f"{sim.root_url}/sim/reset")
    plain = post(sim, messages=user(ARITH[6].question)).json()
    assert plain["choices"][0]["logprobs"] is None
    httpx.post(f"{sim.root_url}/sim/reset")
    asked = post(sim, messages=user(ARITH[6].question), logprobs=True).json()
    assert asked["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"]
    assert all(e["top_logprobs"] == [] for e in asked["choices"][0]["logprobs"]["content"])
    httpx.post(f"{sim.root_url}/sim/reset")
    assert post(sim, messages=user(ARITH[6].question), logprobs=True).json()["choices"] == asked["choices"]
    off = post(sim, messages=user(ARITH[6].question), logprobs=False).json()
    assert off["choices"][0]["logprobs"] is None


def test_a_tool_call_choice_has_empty_content_logprobs(sim: BackgroundSim) -> None:
    body = post(sim, messages=user("use get_weather for Paris"), tools=TOOLS, logprobs=True, top_logprobs=1).json()
    assert ChatCompletion.model_validate(body).choices[0].finish_reason == "tool_calls"
    assert body["choices"][0]["logprobs"] == {"content": [], "refusal": None}


@pytest.mark.parametrize("fields", [{"top_logprobs": 2}, {"logprobs": False, "top_logprobs": 0},
                                    {"logprobs": True, "top_logprobs": 21}, {"logprobs": True, "top_logprobs": -1},
                                    {"logprobs": True, "top_logprobs": "2"}])
def test_bad_top_logprobs_is_a_400_naming_it(client: openai.OpenAI, fields: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="sim-medium", messages=user("hi"), **fields)
    assert refused.value.param == "top_logprobs" and "top_logprobs" in str(refused.value)


def test_streamed_logprobs_ride_with_their_pieces(sim: BackgroundSim, client: openai.OpenAI) -> None:
    chunks = _raw_chunks(sim, messages=user(ARITH[8].question), logprobs=True, top_logprobs=2)
    content = [c.choices[0] for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 5
    for choice in content:
        assert choice.logprobs is not None and len(choice.logprobs.content or []) == 1
        assert (choice.logprobs.content or [])[0].token == choice.delta.content
    with client.chat.completions.stream(model="sim-medium", messages=user(ARITH[8].question), logprobs=True,
                                        top_logprobs=2) as stream:
        final = stream.get_final_completion()
    tokens = [e.token for e in (final.choices[0].logprobs.content or [])]
    assert tokens and "".join(tokens) == final.choices[0].message.content


# --- pairwise judging ------------------------------------------------------------------------

def judge_prompt(question: str, a: str, b: str) -> str:
    return (f"Which response answers the question better?\n\n<question>{question}</question>\n\n"
            f'<response id="A">{a}</response>\n\n<response id="B">\n{b}\n</response>\n\n'
            "Reply with <winner>A</winner>, <winner>B</winner> or <winner>tie</winner>.")


def verdicts(client: openai.OpenAI, model: str, prompt: str, n: int) -> list[str]:
    response = client.chat.completions.create(model=model, messages=user(prompt), n=n)
    out = []
    for choice in response.choices:
        reason, last = (choice.message.content or "").rsplit("\n", 1)
        match = WINNER_PATTERN.fullmatch(last)
        assert match and reason.strip(), choice.message.content
        out.append(match.group(1))
    return out


def test_the_judge_prefers_the_correct_response(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-fair": {"judge_skill": 1.0}})
    task = ARITH[0]  # 66
    right, wrong = "12 * 8 = 96, minus 30.\nAnswer: 66", "I think it is 63.\nAnswer: 63"
    assert verdicts(client, "sim-fair", judge_prompt(task.question, wrong, right), 5) == ["B"] * 5
    record = last_call(sim)
    assert record["kind"] == "judge" and record["candidates"] == 0
    assert verdicts(client, "sim-fair", judge_prompt(task.stem, right, wrong), 5) == ["A"] * 5
    reply = client.chat.completions.create(model="sim-fair", messages=user(judge_prompt(task.stem, right, wrong)))
    assert reply.choices[0].message.content == "Response A states the correct final answer.\n<winner>A</winner>"


def test_the_judge_ties_equals(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-fair": {"judge_skill": 1.0}})
    task = ARITH[0]
    both_right = judge_prompt(task.question, "Answer: 66", "After some careful working.\nAnswer: 66.0")
    assert verdicts(client, "sim-fair", both_right, 5) == ["tie"] * 5
    both_wrong = judge_prompt(task.question, "Answer: 63", "Answer: 70")
    assert verdicts(client, "sim-fair", both_wrong, 5) == ["tie"] * 5


def test_without_a_known_task_the_judge_prefers_the_longer_response(sim: BackgroundSim,
                                                                    client: openai.OpenAI) -> None:
    patch(sim, **{"sim-fair": {"judge_skill": 1.0}})
    prompt = judge_prompt("Write a haiku about rain.", "Rain.", "Soft rain on the roof,\nthe garden drinks, I listen.")
    assert verdicts(client, "sim-fair", prompt, 4) == ["B"] * 4


def test_an_unskilled_judge_flips_coins_reproducibly(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-coin": {"judge_skill": 0.0}})
    prompt = judge_prompt(ARITH[1].question, "Answer: 14", "Answer: 14")
    httpx.post(f"{sim.root_url}/sim/reset")
    first = verdicts(client, "sim-coin", prompt, 40)
    counts = Counter(first)
    assert set(counts) == {"A", "B"} and min(counts.values()) >= 8
    httpx.post(f"{sim.root_url}/sim/reset")
    assert verdicts(client, "sim-coin", prompt, 40) == first


def test_judge_skill_is_a_validated_profile_field(sim: BackgroundSim) -> None:
    assert load_profile().models["sim-strong"].judge_skill == 0.9
    response = httpx.post(f"{sim.root_url}/sim/profile", json={"models": {"sim-fair": {"judge_skill": 1.5}}})
    assert response.status_code == 400 and response.json()["error"]["param"] == "models.sim-fair.judge_skill"


def test_a_prompt_with_one_response_is_not_a_judge_prompt(sim: BackgroundSim, client: openai.OpenAI) -> None:
    text = '<question>Write a haiku.</question>\n<response id="A">Rain.</response>'
    reply = client.chat.completions.create(model="sim-medium", messages=user(text))
    assert "<winner>" not in (reply.choices[0].message.content or "") and last_call(sim)["kind"] == "propose"
