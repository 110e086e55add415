"""The simulator's structured output (`response_format`), over real HTTP with the openai client.

Proposals, aggregations and streams all honour `json_object` and `json_schema`; an aggregator reads
the answers of JSON candidates; a malformed `response_format` is a 400 naming it.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from selfmoa.sim import BackgroundSim, extract_answer, load_tasks
from selfmoa.sim.answers import answer_of

ARITH = load_tasks("arithmetic")
CHOICE = load_tasks("choice")
JSON_OBJECT = {"type": "json_object"}


@pytest.fixture(scope="module", autouse=True)
def _models(sim: BackgroundSim) -> None:
    """An always-right proposer and an aggregator that always follows the majority."""
    response = httpx.post(f"{sim.root_url}/sim/profile", json={"models": {
        "sim-right": {"accuracy": 1.0, "aggregator_skill": 1.0},
        "sim-thinker": {"accuracy": 1.0, "reasoning": "think_tags"}}})
    assert response.status_code == 200, response.text


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def schema_format(schema: dict[str, Any], name: str = "reply") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def fenced(question: str, candidates: list[str]) -> list[dict[str, Any]]:
    """An aggregation prompt as a model sees it, written here from the wire format (system placement)."""
    blocks = "\n\n".join(f'<candidate id="{i}">\n{text}\n</candidate>' for i, text in enumerate(candidates, 1))
    system = f"Combine the {len(candidates)} candidate answers below into one response.\n\n{blocks}"
    return [{"role": "system", "content": system}, *user(question)]


def content(response: Any, index: int = 0) -> str:
    text = response.choices[index].message.content
    assert isinstance(text, str)
    return text


# --- json_object -----------------------------------------------------------------------------

def test_json_object_proposals_carry_the_answer(client: openai.OpenAI) -> None:
    numeric = client.chat.completions.create(model="sim-right", messages=user(ARITH[0].question), n=3,
                                             response_format=JSON_OBJECT)
    for choice in numeric.choices:
        assert json.loads(choice.message.content or "") == {"answer": int(ARITH[0].answer)}
        assert choice.finish_reason == "stop"
    letter = client.chat.completions.create(model="sim-right", messages=user(CHOICE[0].question),
                                            response_format=JSON_OBJECT)
    assert json.loads(content(letter)) == {"answer": CHOICE[0].answer}
    generic = client.chat.completions.create(model="sim-medium", messages=user("Name a colour, please"),
                                             response_format=JSON_OBJECT)
    token = json.loads(content(generic))["answer"]
    plain = client.chat.completions.create(model="sim-medium", messages=user("Name a colour, please"))
    assert isinstance(token, str) and token == extract_answer(content(plain))


def test_usage_counts_the_json_text(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="sim-right", messages=user(ARITH[1].question),
                                              response_format=JSON_OBJECT)
    assert response.usage is not None and response.usage.completion_tokens == -(-len(content(response)) // 4)


def test_text_format_is_the_plain_reply(client: openai.OpenAI) -> None:
    messages = user(ARITH[2].question)
    plain = client.chat.completions.create(model="sim-medium", messages=messages, temperature=0)
    text = client.chat.completions.create(model="sim-medium", messages=messages, temperature=0,
                                          response_format={"type": "text"})
    assert content(text) == content(plain) and content(text).rstrip().splitlines()[-1].startswith("Answer: ")


def test_a_think_tags_model_writes_pure_json(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="sim-thinker", messages=user(ARITH[3].question),
                                              response_format=JSON_OBJECT)
    assert json.loads(content(response)) == {"answer": int(ARITH[3].answer)}


# --- json_schema -----------------------------------------------------------------------------

NESTED = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string"},
        "confidence": {"type": "number"},
        "steps": {"type": "integer"},
        "checked": {"type": "boolean"},
        "sources": {"type": "array", "items": {"type": "string"}},
        "unit": {"type": "string", "enum": ["rolls", "trays"]},
        "meta": {"type": "object", "properties": {"model": {"type": "string"},
                                                   "tags": {"type": "array", "items": {"type": "string"}}},
                 "required": ["model", "tags"], "additionalProperties": False},
        "final_answer": {"type": "integer"},
        "note": {"type": "string"},
    },
    "required": ["reasoning", "confidence", "steps", "checked", "sources", "unit", "meta", "final_answer"],
    "additionalProperties": False,
}


def test_json_schema_fills_required_properties_by_type(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="sim-right", messages=user(ARITH[0].question),
                                              response_format=schema_format(NESTED))
    reply = json.loads(content(response))
    assert list(reply) == NESTED["required"]  # only the required ones, in order
    assert isinstance(reply["reasoning"], str) and isinstance(reply["confidence"], (int, float))
    assert type(reply["steps"]) is int and type(reply["checked"]) is bool and reply["sources"] == []
    assert reply["unit"] == "rolls"  # an enum's first value
    assert set(reply["meta"]) == {"model", "tags"} and reply["meta"]["tags"] == []
    assert reply["final_answer"] == int(ARITH[0].answer)  # the answer-named property, of the right type


def test_the_answer_goes_in_the_first_string_or_number_that_fits(client: openai.OpenAI) -> None:
    numbers = {"type": "object", "properties": {"count": {"type": "integer"}, "label": {"type": "string"}},
               "required": ["count", "label"]}
    reply = json.loads(content(client.chat.completions.create(
        model="sim-right", messages=user(ARITH[0].question), response_format=schema_format(numbers))))
    assert reply == {"count": int(ARITH[0].answer), "label": ""}
    letter = json.loads(content(client.chat.completions.create(
        model="sim-right", messages=user(CHOICE[0].question), response_format=schema_format(numbers))))
    assert letter == {"count": 0, "label": CHOICE[0].answer}  # a letter does not fit an integer
    options = {"type": "object", "properties": {"pick": {"enum": ["A", "B", "C", "D"]}}, "required": ["pick"]}
    picked = json.loads(content(client.chat.completions.create(
        model="sim-right", messages=user(CHOICE[0].question), response_format=schema_format(options))))
    assert picked == {"pick": CHOICE[0].answer}


def test_refs_and_optional_properties(client: openai.OpenAI) -> None:
    schema = {"$defs": {"Result": {"type": "object", "properties": {"value": {"type": ["number", "null"]}},
                                   "required": ["value"]}},
              "type": "object", "properties": {"ok": {"type": "boolean"}, "result": {"$ref": "#/$defs/Result"}},
              "required": ["ok", "result"]}
    reply = json.loads(content(client.chat.completions.create(
        model="sim-right", messages=user(ARITH[4].question), response_format=schema_format(schema))))
    assert reply == {"ok": False, "result": {"value": int(ARITH[4].answer)}}
    optional = {"type": "object", "properties": {"done": {"type": "boolean"}, "answer": {"type": "string"}},
                "required": ["done"]}
    reply = json.loads(content(client.chat.completions.create(
        model="sim-right", messages=user(CHOICE[2].question), response_format=schema_format(optional))))
    assert reply == {"done": False, "answer": CHOICE[2].answer}  # added so that the answer is somewhere


# --- aggregation -----------------------------------------------------------------------------

TEXT_CANDIDATES = ["Working.\nAnswer: 63", "Working.\nAnswer: 66", "Again.\nAnswer: 66"]
JSON_CANDIDATES = ['{"answer": 63}', '{"answer": 66}', '{"reasoning": "x", "final_answer": "66"}',
                   '```json\n{"result": {"answer": 66.0}}\n```']


def test_an_aggregation_answers_in_json(sim: BackgroundSim, client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="sim-right", messages=fenced(ARITH[0].question, TEXT_CANDIDATES),
                                              response_format=JSON_OBJECT, n=3)
    assert [json.loads(c.message.content or "") for c in response.choices] == [{"answer": 66}] * 3
    record = httpx.get(f"{sim.root_url}/sim/calls").json()[-1]
    assert record["kind"] == "aggregate" and record["candidates"] == 3


def test_an_aggregator_reads_the_answers_of_json_candidates(client: openai.OpenAI) -> None:
    assert [answer_of(c) for c in JSON_CANDIDATES] == ["63", "66", "66", "66"]
    text = client.chat.completions.create(model="sim-right", messages=fenced(ARITH[0].question, JSON_CANDIDATES))
    assert extract_answer(content(text)) == "66"
    structured = client.chat.completions.create(model="sim-right", messages=fenced(ARITH[0].question, JSON_CANDIDATES),
                                                response_format=schema_format(NESTED))
    assert json.loads(content(structured))["final_answer"] == 66


def test_self_moa_over_json_proposals_combines_their_answers(client: openai.OpenAI) -> None:
    """Proposals in JSON from a weak model, aggregated: the reply carries the proposals' majority answer."""
    task = ARITH[6]
    proposals = client.chat.completions.create(model="sim-weak", messages=user(task.question), n=9,
                                               response_format=JSON_OBJECT)
    texts = [c.message.content or "" for c in proposals.choices]
    answers = [answer_of(t) for t in texts]
    assert None not in answers and len(set(answers)) > 1
    top = max(set(answers), key=answers.count)
    assert answers.count(top) > max(answers.count(a) for a in set(answers) - {top})  # seeded: a strict majority
    reply = client.chat.completions.create(model="sim-right", messages=fenced(task.question, texts),
                                           response_format=JSON_OBJECT)
    assert str(json.loads(content(reply))["answer"]) == top


def test_a_select_reply_in_json_names_a_candidate(client: openai.OpenAI) -> None:
    messages = fenced(ARITH[0].question, TEXT_CANDIDATES)
    messages[0]["content"] += "\n\nReply with the best one's number in the form <best>N</best>."
    reply = client.chat.completions.create(model="sim-right", messages=messages, response_format=JSON_OBJECT)
    assert json.loads(content(reply))["answer"] in (2, 3)


# --- streaming -------------------------------------------------------------------------------

@pytest.mark.parametrize("form", [JSON_OBJECT, schema_format(NESTED)], ids=["json_object", "json_schema"])
def test_streamed_pieces_concatenate_to_the_json(client: openai.OpenAI, form: dict[str, Any]) -> None:
    for messages in (user(ARITH[0].question), fenced(ARITH[0].question, TEXT_CANDIDATES)):
        whole = content(client.chat.completions.create(model="sim-right", messages=messages, response_format=form,
                                                       temperature=0))
        stream = client.chat.completions.create(model="sim-right", messages=messages, response_format=form,
                                                temperature=0, stream=True)
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert len([p for p in pieces if p]) > 1 and "".join(pieces) == whole
        assert json.loads(whole)


# --- invalid formats -------------------------------------------------------------------------

@pytest.mark.parametrize("form, param", [
    ("json", "response_format"),
    (["json_object"], "response_format"),
    ({}, "response_format.type"),
    ({"type": "xml"}, "response_format.type"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": "reply"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"name": "reply"}}, "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "reply", "schema": "object"}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}, "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "a reply", "schema": {}}}, "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "r", "schema": {}, "strict": "yes"}},
     "response_format.json_schema.strict"),
])
def test_an_invalid_response_format_is_a_400_naming_it(sim: BackgroundSim, client: openai.OpenAI, form: Any,
                                                       param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="sim-medium", messages=user("hi"), response_format=form)
    assert refused.value.param == param and param in refused.value.message
    body = refused.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error"
    record = httpx.get(f"{sim.root_url}/sim/calls").json()[-1]
    assert record["status"] == 400 and record["choices"] == 0
