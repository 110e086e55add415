"""Our route's replies are complete OpenAI objects: identity, the requested model, the final call's
finish reason and logprobs, usage summed over every backend call, `n` choices, the trace; errors
OpenAI-shaped everywhere; `/v1/models` offers the approaches; `moa` never reaches a backend."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from selfmoa.sim import BackgroundSim
from selfmoa.testing.live import Proxy, SimLog
from tests.conversations import BAKER

SLUGS = ("self_moa", "mixed_moa", "self_moa_seq", "mixed_moa_seq")
MIXED = {"proposers": ["sim-strong", "sim-medium"]}


@pytest.mark.parametrize("slug", SLUGS)
def test_a_reply_is_a_complete_chat_completion(client: openai.OpenAI, proxy: Proxy, slug: str) -> None:
    body = proxy.post({"model": f"{slug}-sim-strong", "messages": BAKER, "moa": MIXED}).json()
    reply = ChatCompletion.model_validate(body)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion" and reply.created > 0
    assert reply.model == f"{slug}-sim-strong"  # as requested, prefix and all
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason == "stop"
    usage = reply.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0


def test_usage_is_the_sum_of_every_backend_call(client: openai.OpenAI, simlog: SimLog) -> None:
    reply = client.chat.completions.create(model="self_moa-sim-strong", messages=BAKER)  # type: ignore[arg-type]
    calls = simlog.calls()
    assert len(calls) == 2 and reply.usage is not None
    assert reply.usage.prompt_tokens == sum(c["prompt_tokens"] for c in calls)
    assert reply.usage.completion_tokens == sum(c["completion_tokens"] for c in calls)


def test_the_final_calls_finish_reason_is_returned(client: openai.OpenAI, simlog: SimLog) -> None:
    cut = client.chat.completions.create(model="self_moa-sim-strong", messages=BAKER, max_tokens=3)  # type: ignore[arg-type]
    assert cut.choices[0].finish_reason == "length"
    aggregation = simlog.of_kind("aggregate")[-1]
    assert aggregation["params"]["max_tokens"] == 3 and cut.choices[0].message.content == aggregation["outputs"][0]


def test_a_small_max_tokens_cuts_proposals_and_still_answers(client: openai.OpenAI, simlog: SimLog) -> None:
    plain = client.chat.completions.create(model="sim-strong", messages=BAKER, max_tokens=5)  # type: ignore[arg-type]
    assert plain.choices[0].finish_reason == "length"
    reply = client.chat.completions.create(model="self_moa-sim-strong", messages=BAKER,  # type: ignore[arg-type]
                                           max_tokens=5, extra_body={"moa": {"trace": True}})
    assert reply.choices[0].finish_reason == "length"
    trace = reply.model_extra["selfmoa"]  # type: ignore[index]
    assert len(trace["proposals"]) == 6 and {p["finish_reason"] for p in trace["proposals"]} == {"length"}
    assert simlog.of_kind("aggregate")[-1]["candidates"] == 6


def test_logprobs_come_from_the_final_call(client: openai.OpenAI, simlog: SimLog) -> None:
    reply = client.chat.completions.create(model="self_moa-sim-strong", messages=BAKER,  # type: ignore[arg-type]
                                           logprobs=True, top_logprobs=2)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == reply.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 for t in logprobs.content)
    assert simlog.of_kind("aggregate")[-1]["params"]["logprobs"] is True


def test_n_runs_the_approach_n_times_concurrently(client: openai.OpenAI, simlog: SimLog) -> None:
    reply = client.chat.completions.create(model="self_moa-sim-strong", messages=BAKER, n=2)  # type: ignore[arg-type]
    assert [c.index for c in reply.choices] == [0, 1]
    calls = simlog.calls()
    proposals = [c for c in calls if c["kind"] == "propose"]
    aggregations = [c for c in calls if c["kind"] == "aggregate"]
    assert len(proposals) == 2 and len(aggregations) == 2
    # concurrently: the second run's proposals went out before the first run's aggregation ended
    assert max(p["started"] for p in proposals) < max(a["ended"] for a in aggregations)
    assert reply.usage is not None and reply.usage.completion_tokens == sum(c["completion_tokens"] for c in calls)


def test_the_trace_says_how_the_answer_was_reached(client: openai.OpenAI, simlog: SimLog) -> None:
    reply = client.chat.completions.create(model="mixed_moa-sim-strong", messages=BAKER,  # type: ignore[arg-type]
                                           extra_body={"moa": {**MIXED, "trace": True}})
    trace = reply.model_extra["selfmoa"]  # type: ignore[index]
    assert trace["approach"] == "mixed_moa" and trace["aggregator"] == "sim-strong"
    outputs = [o for c in simlog.of_kind("propose") for o in c["outputs"]]
    assert sorted(p["text"] for p in trace["proposals"]) == sorted(outputs)
    assert {p["model"] for p in trace["proposals"]} == {"sim-strong", "sim-medium"}
    assert trace["rounds"] == 1 and trace["sequential"] is False and trace["calls"] == 3
    assert trace["failures"] == [] and trace["fallback"] is None and trace["wall_s"] > 0
    by_model = trace["usage_by_model"]
    assert by_model["sim-medium"]["calls"] == 1 and by_model["sim-strong"]["calls"] == 2
    assert sum(u["completion_tokens"] for u in by_model.values()) == reply.usage.completion_tokens  # type: ignore[union-attr]


def test_no_trace_unless_asked(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="self_moa-sim-strong", messages=BAKER)  # type: ignore[arg-type]
    assert "selfmoa" not in (reply.model_extra or {})


def test_moa_never_reaches_a_backend(client: openai.OpenAI, simlog: SimLog) -> None:
    # One client configuration for an A/B: the same body to the plain model and to an approach.
    plain = client.chat.completions.create(model="sim-strong", messages=BAKER,  # type: ignore[arg-type]
                                           extra_body={"moa": {"samples": 2}})
    assert plain.choices[0].message.content
    client.chat.completions.create(model="self_moa-sim-strong", messages=BAKER,  # type: ignore[arg-type]
                                   extra_body={"moa": {"samples": 2}})
    client.chat.completions.create(model="moa-sim-strong", messages=BAKER,  # type: ignore[arg-type]
                                   extra_body={"moa": {"samples": 2}})
    assert simlog.calls() and all("moa" not in str(c["params"]) for c in simlog.calls())


def test_models_lists_the_approaches_for_each_backend_model(proxy: Proxy, sim: BackgroundSim) -> None:
    ids = {m["id"] for m in httpx.get(f"{proxy.url}/v1/models", timeout=30).json()["data"]}
    backend = {m["id"] for m in httpx.get(f"{sim.base_url}/models", timeout=30).json()["data"]}
    assert backend <= ids
    assert {f"{slug}-{model}" for slug in SLUGS for model in backend} <= ids


def test_listing_the_approaches_can_be_turned_off(sim: BackgroundSim, tmp_path: Path) -> None:
    proxy = Proxy.configured(sim.base_url, "list_approaches: false\n", tmp_path)
    try:
        ids = {m["id"] for m in httpx.get(f"{proxy.url}/v1/models", timeout=30).json()["data"]}
        assert "sim-strong" in ids and not any(i.startswith("self_moa-") for i in ids)
    finally:
        proxy.close()


@pytest.mark.parametrize("model,status", [("self_moa-sim-missing", 404), ("self_mao-sim-strong", 404),
                                          ("sim-missing", 404)])
def test_an_unknown_model_is_an_openai_shaped_404_with_the_backends_message(proxy: Proxy, model: str,
                                                                            status: int) -> None:
    response = proxy.post({"model": model, "messages": BAKER})
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "does not exist" in error["message"] and model.split("-", 1)[-1] in error["message"]
    assert error["code"] == "model_not_found"


def test_every_route_answers_errors_in_openai_shape(proxy: Proxy) -> None:
    for response in (httpx.get(f"{proxy.url}/v1/nothing", timeout=30),
                     httpx.get(f"{proxy.url}/v1/chat/completions", timeout=30)):
        assert response.status_code in (404, 405)
        assert isinstance(response.json()["error"]["message"], str)


def test_the_openai_sdk_shows_our_error_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="self_moa-sim-strong", messages=BAKER,  # type: ignore[arg-type]
                                       extra_body={"moa": {"samples": 0}})
    assert refused.value.param == "moa.samples" and "moa.samples" in refused.value.message
