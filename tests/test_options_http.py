"""Every documented `moa` option and request field, over HTTP: each test fails if its option did nothing."""

from __future__ import annotations

import time

import openai
import pytest

from selfmoa.sim import BackgroundSim, load_tasks
from selfmoa.testing.live import SimLog

TASK = load_tasks("choice")[0]
ASK = [{"role": "user", "content": TASK.question}]


def ask(client: openai.OpenAI, model: str = "self_moa-sim-strong", **moa: object) -> str:
    reply = client.chat.completions.create(model=model, messages=ASK, extra_body={"moa": moa} if moa else None)
    return reply.choices[0].message.content or ""


def proposals(simlog: SimLog) -> list[dict]:
    return [c for c in simlog.calls() if c["kind"] == "propose"]


def test_the_answer_is_the_aggregators_and_usage_sums_every_call(client: openai.OpenAI, simlog: SimLog) -> None:
    reply = client.chat.completions.create(model="self_moa-sim-strong", messages=ASK)
    calls = simlog.calls()
    assert reply.choices[0].message.content == calls[-1]["outputs"][0]
    assert reply.usage.completion_tokens == sum(c["completion_tokens"] for c in calls)


def test_samples(client: openai.OpenAI, simlog: SimLog) -> None:
    ask(client, samples=3)
    assert [c["n"] for c in proposals(simlog)] == [3]
    assert simlog.of_kind("aggregate")[0]["candidates"] == 3


def test_proposers_with_explicit_samples(client: openai.OpenAI, simlog: SimLog) -> None:
    ask(client, "mixed_moa-sim-strong", proposers=[{"model": "sim-math", "samples": 2}, "sim-trivia"], samples=4)
    assert sorted((c["model"], c["n"]) for c in proposals(simlog)) == [("sim-math", 2), ("sim-trivia", 4)]


def test_aggregator(client: openai.OpenAI, simlog: SimLog) -> None:
    ask(client, aggregator="sim-medium", samples=2)
    assert [c["model"] for c in simlog.of_kind("aggregate")] == ["sim-medium"]
    assert [c["model"] for c in proposals(simlog)] == ["sim-strong"]


def test_temperature_and_max_tokens_shape_the_proposals(client: openai.OpenAI, simlog: SimLog) -> None:
    ask(client, samples=2)
    assert proposals(simlog)[0]["params"]["temperature"] == 0.7  # the paper's setting by default
    simlog.clear()
    ask(client, samples=2, temperature=1.3, max_tokens=321)
    params = proposals(simlog)[0]["params"]
    assert params["temperature"] == 1.3 and params["max_tokens"] == 321


def test_request_fields_shape_the_final_aggregation(client: openai.OpenAI, simlog: SimLog) -> None:
    client.chat.completions.create(
        model="self_moa-sim-strong", messages=ASK, temperature=0.2, top_p=0.9, max_tokens=400, stop=["STOP"],
        seed=11, response_format={"type": "text"}, extra_body={"moa": {"samples": 2}},
    )
    final = simlog.of_kind("aggregate")[0]["params"]
    assert {k: final.get(k) for k in ("temperature", "top_p", "max_tokens", "stop", "seed", "response_format")} == {
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 400, "stop": ["STOP"], "seed": 11,
        "response_format": {"type": "text"},
    }
    proposal = proposals(simlog)[0]["params"]
    assert proposal["temperature"] == 0.7 and proposal["max_tokens"] == 400 and "seed" not in proposal


def test_layers(client: openai.OpenAI, simlog: SimLog) -> None:
    ask(client, samples=2, layers=2)
    calls = simlog.calls()
    assert len(calls) == 3
    layer_two = calls[1]
    assert layer_two["candidates"] == 2 and "as references" in str(layer_two["messages"])
    assert calls[2]["candidates"] == 2


def test_window_and_synthesis_slots(client: openai.OpenAI, simlog: SimLog) -> None:
    ask(client, "self_moa_seq-sim-strong", samples=11, window=5, synthesis_slots=2)
    rounds = [c for c in simlog.calls() if c["kind"] == "aggregate"]
    assert [r["candidates"] for r in rounds] == [5, 5, 5]  # 1 + ceil((11 - 5) / (5 - 2))
    first_synthesis = rounds[0]["outputs"][0]
    assert str(rounds[1]["messages"]).count(first_synthesis.splitlines()[0]) == 2  # carried in 2 slots


def test_mode_select_returns_a_proposal_verbatim(client: openai.OpenAI, simlog: SimLog) -> None:
    answer = ask(client, samples=4, mode="select")
    drawn = [text for c in proposals(simlog) for text in c["outputs"]]
    assert answer in drawn
    assert simlog.calls()[-1]["kind"] == "select"


def test_min_samples(client: openai.OpenAI, simlog: SimLog) -> None:
    simlog.patch({"sim-half-empty": {"accuracy": 0.7, "rate_empty": 0.5}})
    assert ask(client, "self_moa-sim-half-empty", samples=6, min_samples=1, aggregator="sim-strong")
    with pytest.raises(openai.APIStatusError) as error:
        ask(client, "self_moa-sim-half-empty", samples=6, min_samples=6, aggregator="sim-strong")
    assert error.value.status_code == 502 and "6 needed" in str(error.value) and "empty" in str(error.value)


def test_timeout_bounds_a_hanging_backend(proxy: object, client: openai.OpenAI, simlog: SimLog) -> None:
    simlog.patch({"sim-hang": {"rate_hang": 1.0}})
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as error:
        ask(client, "self_moa-sim-hang", samples=2, timeout=2)
    assert time.monotonic() - started < 2 + 5  # generous margin: the point is it is not the default 30 s
    assert error.value.status_code == 504 and "sim-hang" in str(error.value)  # lost to the deadline


def test_grace_stops_waiting_for_stragglers(client: openai.OpenAI, simlog: SimLog) -> None:
    simlog.patch({"sim-hang": {"rate_hang": 1.0}})
    started = time.monotonic()
    ask(client, "mixed_moa-sim-strong", proposers=["sim-strong", "sim-hang"], samples=2, timeout=30, grace=0.5)
    # without grace the proposals would wait for 60 % of the 30 s deadline
    assert time.monotonic() - started < 12


def test_include_reasoning(client: openai.OpenAI, simlog: SimLog) -> None:
    ask(client, "self_moa-sim-reasoner", samples=2)
    assert "<think>" not in str(simlog.of_kind("aggregate")[0]["messages"])
    simlog.clear()
    ask(client, "self_moa-sim-reasoner", samples=2, include_reasoning=True)
    assert "<think>" in str(simlog.of_kind("aggregate")[0]["messages"])


def test_preset(client: openai.OpenAI, simlog: SimLog) -> None:
    ask(client, "mixed_moa-sim-weak", preset="duo")
    assert sorted((c["model"], c["n"]) for c in proposals(simlog)) == [("sim-medium", 3), ("sim-strong", 3)]
    assert [c["model"] for c in simlog.of_kind("aggregate")] == ["sim-strong"]


def test_a_preset_routes_to_a_named_endpoint(client: openai.OpenAI, simlog: SimLog, second_sim: BackgroundSim) -> None:
    second = SimLog(second_sim.root_url)
    second.clear()
    ask(client, "mixed_moa-sim-weak", preset="routed")
    assert simlog.calls() == []
    assert [(c["kind"], c["n"]) for c in second.calls()] == [("propose", 2), ("aggregate", 1)]


def test_over_the_context_budget_switches_to_seq(client: openai.OpenAI, simlog: SimLog) -> None:
    ask(client, "self_moa-sim-small-context", samples=6)  # the server config gives it a 330-token budget
    rounds = simlog.of_kind("aggregate")
    assert len(rounds) > 1 and all(r["status"] == 200 for r in rounds)


def test_a_context_length_error_switches_to_seq(client: openai.OpenAI, simlog: SimLog) -> None:
    simlog.patch({"sim-tiny-context": {"context_window": 400}})  # unknown to the server config
    reply = ask(client, "self_moa-sim-tiny-context", samples=8)
    rounds = simlog.of_kind("aggregate")
    statuses = [c["status"] for c in rounds]
    assert statuses[0] == 400 and len(statuses) > 2 and statuses[-1] == 200  # Seq rounds, narrowed as needed
    assert all(c["candidates"] < 8 for c in rounds[1:])  # no round read every sample at once
    assert reply == rounds[-1]["outputs"][0]  # the last round's synthesis: no fallback


def test_a_refused_parameter_is_adapted(client: openai.OpenAI, simlog: SimLog) -> None:
    client.chat.completions.create(model="self_moa-sim-picky", messages=ASK, max_tokens=300,
                                   extra_body={"moa": {"samples": 2}})
    accepted = [c["params"] for c in simlog.calls() if c["status"] == 200]
    assert accepted and all("max_tokens" not in p and p["max_completion_tokens"] == 300 for p in accepted)
