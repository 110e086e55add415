"""`selfmoa serve` over HTTP with the openai client: each slug, optillm's routing, errors, logging."""

from __future__ import annotations

import openai
import pytest

from selfmoa.sim import extract_answer, load_tasks
from selfmoa.testing.live import CLIENT_KEY, Proxy, SimLog

TASK = load_tasks("arithmetic")[0]
ASK = [{"role": "user", "content": TASK.question}]


def test_self_moa_is_one_n_call_and_one_aggregation(client: openai.OpenAI, simlog: SimLog) -> None:
    reply = client.chat.completions.create(model="self_moa-sim-strong", messages=ASK)
    calls = simlog.calls()
    expected = [("propose", "sim-strong", 6), ("aggregate", "sim-strong", 1)]
    assert [(c["kind"], c["model"], c["n"]) for c in calls] == expected
    assert calls[1]["candidates"] == 6
    assert extract_answer(reply.choices[0].message.content) is not None
    assert reply.usage.completion_tokens > 0


def test_mixed_moa_samples_each_model_and_aggregates_with_the_request_model(client: openai.OpenAI,
                                                                           simlog: SimLog) -> None:
    client.chat.completions.create(model="mixed_moa-sim-strong", messages=ASK,
                                   extra_body={"moa": {"proposers": ["sim-medium", "sim-weak"]}})
    calls = simlog.calls()
    assert sorted((c["model"], c["n"]) for c in calls if c["kind"] == "propose") == [("sim-medium", 3), ("sim-weak", 3)]
    assert [(c["model"], c["candidates"]) for c in calls if c["kind"] == "aggregate"] == [("sim-strong", 6)]


@pytest.mark.parametrize("slug,extra", [
    ("self_moa_seq", {"samples": 12}),
    ("mixed_moa_seq", {"proposers": [{"model": "sim-strong", "samples": 6}, {"model": "sim-medium", "samples": 6}]}),
])
def test_seq_slugs_aggregate_in_bounded_rounds(client: openai.OpenAI, simlog: SimLog, slug: str, extra: dict) -> None:
    client.chat.completions.create(model=f"{slug}-sim-strong", messages=ASK, extra_body={"moa": extra})
    aggregations = simlog.of_kind("aggregate")
    assert [a["candidates"] for a in aggregations] == [6, 6, 6]  # 1 + ceil((12 - 6) / 3) rounds
    assert sum(c["n"] for c in simlog.of_kind("propose")) == 12


@pytest.mark.parametrize("route", ["field", "tag", "system_tag"])
def test_optillm_routing_reaches_our_approaches(proxy: Proxy, simlog: SimLog, route: str) -> None:
    body: dict = {"model": "sim-strong", "messages": [{"role": "user", "content": TASK.question}]}
    if route == "field":
        body["optillm_approach"] = "self_moa"
    elif route == "tag":
        body["messages"][0]["content"] += " <optillm_approach>self_moa</optillm_approach>"
    else:
        body["messages"].insert(0, {"role": "system", "content": "<optillm_approach>self_moa</optillm_approach>"})
    assert proxy.post(body).status_code == 200
    assert [c["kind"] for c in simlog.calls()] == ["propose", "aggregate"]
    assert "optillm_approach" not in str(simlog.calls()[0]["messages"])


def test_and_pipeline_with_an_optillm_approach(client: openai.OpenAI, simlog: SimLog) -> None:
    reply = client.chat.completions.create(model="self_moa&re2-sim-strong", messages=ASK)
    kinds = [c["kind"] for c in simlog.calls()]
    assert kinds[:2] == ["propose", "aggregate"] and len(kinds) > 2  # re2 runs on our answer
    assert reply.choices[0].message.content


def test_or_combination_returns_both_answers(client: openai.OpenAI, simlog: SimLog) -> None:
    reply = client.chat.completions.create(model="self_moa|mixed_moa-sim-strong", messages=ASK,
                                           extra_body={"moa": {"proposers": ["sim-medium"], "samples": 2}})
    assert len(reply.choices) == 2
    assert len(simlog.of_kind("aggregate")) == 2


@pytest.mark.parametrize("model", ["sim-strong", "moa-sim-strong", "bon-sim-strong"])
def test_optillm_own_approaches_keep_working(client: openai.OpenAI, simlog: SimLog, model: str) -> None:
    reply = client.chat.completions.create(model=model, messages=ASK)
    assert reply.choices[0].message.content
    assert simlog.calls()


def test_multi_turn_messages_reach_proposers_intact(client: openai.OpenAI, simlog: SimLog) -> None:
    conversation = [
        {"role": "system", "content": "You are a careful tutor."},
        {"role": "user", "content": "I have a question."},
        {"role": "assistant", "content": "Go ahead."},
        {"role": "user", "content": TASK.question},
    ]
    client.chat.completions.create(model="self_moa-sim-strong", messages=conversation)
    proposal, aggregation = simlog.calls()
    assert proposal["messages"] == conversation
    assert aggregation["messages"][1:] == conversation[1:]  # the aggregation reads the same conversation
    assert aggregation["messages"][0]["content"].startswith("You are a careful tutor.\n\n")  # placement: system


def test_bad_configuration_is_a_400_naming_the_field(proxy: Proxy, client: openai.OpenAI, simlog: SimLog) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="self_moa-sim-strong", messages=ASK, extra_body={"moa": {"mode": "vote"}})
    assert "moa.mode" in str(error.value) and "'synthesize' or 'select'" in str(error.value)
    assert error.value.body["param"] == "moa.mode"
    assert simlog.calls() == []  # refused before any backend call
    assert proxy.alive()


def test_an_unknown_model_is_the_backends_404_naming_approach_and_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as error:
        client.chat.completions.create(model="self_moa-sim-missing", messages=ASK)
    assert error.value.status_code == 404
    message = str(error.value)
    assert "self_moa" in message and "sim-missing" in message and "404" in message


def test_refused_n_is_paid_once_per_endpoint_and_model(client: openai.OpenAI, simlog: SimLog) -> None:
    client.chat.completions.create(model="self_moa-sim-no-n", messages=ASK)
    first = [c["n"] for c in simlog.calls() if c["kind"] != "aggregate"]  # the refused call has no kind
    simlog.clear()
    client.chat.completions.create(model="self_moa-sim-no-n", messages=ASK)
    second = [c["n"] for c in simlog.calls() if c["kind"] != "aggregate"]
    assert first == [6, 1, 1, 1, 1, 1, 1] and second == [1] * 6


def test_short_n_is_topped_up(client: openai.OpenAI, simlog: SimLog) -> None:
    client.chat.completions.create(model="self_moa-sim-short-n", messages=ASK)
    assert simlog.of_kind("aggregate")[0]["candidates"] == 6


def test_streaming_a_moa_answer(client: openai.OpenAI, simlog: SimLog) -> None:
    chunks = list(client.chat.completions.create(model="self_moa-sim-strong", messages=ASK, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert extract_answer(text) is not None


def test_one_log_line_per_request_and_no_key_in_logs(proxy: Proxy, client: openai.OpenAI) -> None:
    before = proxy.log().count("selfmoa approach=self_moa ")
    client.chat.completions.create(model="self_moa-sim-strong", messages=ASK)
    log = proxy.log_once("selfmoa approach=self_moa ", before + 1)
    assert log.count("selfmoa approach=self_moa ") == before + 1
    line = log.rsplit("selfmoa approach=self_moa ", 1)[1].splitlines()[0]
    for field in ("proposers=sim-strongx6", "samples_ok=6", "samples_failed=0", "rounds=1", "calls=2", "wall="):
        assert field in line
    for secret in (CLIENT_KEY, "sk-upstream-secret-0123456789", "sk-second-endpoint-secret-42"):
        assert secret not in log


def test_optillms_approaches_reuse_one_upstream_client(proxy: Proxy, client: openai.OpenAI) -> None:
    for _ in range(3):
        client.chat.completions.create(model="re2-sim-strong", messages=ASK)
    assert proxy.log().count("Client type:") <= 1  # optillm logs this each time it builds one
