"""The simulator's usage details and its aggregations' wording, over real HTTP.

`usage.completion_tokens_details.reasoning_tokens` is on every reply, whole and streamed, and counts
the reasoning part of the completion. n aggregations of one prompt word their synthesis differently
(a client asking for n distinct replies gets them) while the answer each carries stays the one the
simulator drew before its wording varied.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai
import pytest

from selfmoa.sim import BackgroundSim, extract_answer, load_tasks
from selfmoa.sim.behaviour import estimate_tokens

CHOICE = load_tasks("choice")
HALF = "sim-half"
FIELD = "sim-field-usage"
ANSWERS = ["63", "66", "12", "66", "66", "70"]
PINNED = ["12", "66", "66", "66", "66", "63", "66", "66", "66", "66",
          "66", "63", "66", "66", "66", "66", "66", "70", "66", "63"]
"""The answers of 20 samples of `mixed()` by `sim-half` at seed 0, recorded before the wording varied:
the answer is drawn before the wording, so rewording must leave every one of them where it was."""


@pytest.fixture(scope="module", autouse=True)
def _models(sim: BackgroundSim) -> None:
    patch(sim)


def patch(sim: BackgroundSim) -> None:
    models = {HALF: {"aggregator_skill": 0.5}, FIELD: {"reasoning": "field"}}
    httpx.post(f"{sim.root_url}/sim/profile", json={"models": models}).raise_for_status()


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def fenced(texts: list[str], question: str = "What is 41 + 25?") -> list[dict[str, Any]]:
    """An aggregation prompt written out here, so the pinned draws do not follow the approaches' wording."""
    blocks = "\n".join(f'<candidate id="{i}">\n{t}\n</candidate>' for i, t in enumerate(texts, 1))
    return [{"role": "system", "content": f"Combine the candidates below into one response.\n\n{blocks}"},
            {"role": "user", "content": question}]


def mixed() -> list[dict[str, Any]]:
    return fenced([f"Working {i}.\nAnswer: {a}" for i, a in enumerate(ANSWERS)])


def post(sim: BackgroundSim, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{sim.base_url}/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


def streamed_usage(client: openai.OpenAI, model: str, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    chunks = list(client.chat.completions.create(model=model, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}, **kwargs))
    assert chunks[-1].usage is not None
    return chunks[-1].usage


def details(usage: dict[str, Any]) -> int:
    reasoning: int = usage["completion_tokens_details"]["reasoning_tokens"]
    return reasoning


# --- usage.completion_tokens_details -----------------------------------------------------------

def test_a_model_without_reasoning_reports_zero(sim: BackgroundSim, client: openai.OpenAI) -> None:
    body = post(sim, {"model": "sim-medium", "messages": user("Say hello")})
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    usage = streamed_usage(client, "sim-medium", user("Say hello"))
    assert usage.completion_tokens_details.reasoning_tokens == 0 and usage.completion_tokens > 0


def test_reasoning_content_is_counted(sim: BackgroundSim, client: openai.OpenAI) -> None:
    body = post(sim, {"model": FIELD, "messages": user(CHOICE[3].question), "n": 2})
    thoughts = [c["message"]["reasoning_content"] for c in body["choices"]]
    texts = [c["message"]["content"] for c in body["choices"]]
    assert details(body["usage"]) == sum(estimate_tokens(t) for t in thoughts) > 0
    assert body["usage"]["completion_tokens"] == details(body["usage"]) + sum(estimate_tokens(t) for t in texts)
    record = httpx.get(f"{sim.root_url}/sim/calls").json()[-1]
    assert record["reasoning_tokens"] == details(body["usage"])


def test_think_blocks_in_the_content_are_counted(sim: BackgroundSim, client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="sim-reasoner", messages=user(CHOICE[3].question))
    content = response.choices[0].message.content or ""
    block = re.match(r"<think>.*?</think>", content, re.DOTALL)
    assert block is not None and response.usage is not None
    reasoning = response.usage.completion_tokens_details.reasoning_tokens  # type: ignore[union-attr]
    assert reasoning == estimate_tokens(block.group()) < response.usage.completion_tokens


def test_a_think_block_cut_by_the_token_limit_is_all_reasoning(sim: BackgroundSim) -> None:
    body = post(sim, {"model": "sim-reasoner", "messages": user(CHOICE[4].question), "max_tokens": 5})
    assert body["choices"][0]["finish_reason"] == "length"
    assert "</think>" not in body["choices"][0]["message"]["content"]
    assert details(body["usage"]) == body["usage"]["completion_tokens"] == 5


def test_structured_content_carries_no_reasoning(sim: BackgroundSim) -> None:
    body = post(sim, {"model": "sim-reasoner", "messages": user(CHOICE[3].question),
                      "response_format": {"type": "json_object"}})
    assert details(body["usage"]) == 0 and body["usage"]["completion_tokens"] > 0


def test_the_streamed_usage_chunk_matches_the_whole_reply() -> None:
    """Two fresh simulators at one seed: the same call, streamed and not, reports the same usage."""
    question = user(CHOICE[5].question)
    usages = []
    for stream in (False, True):
        with BackgroundSim(seed=4, time_scale=0.0) as fresh:
            patch(fresh)
            with openai.OpenAI(base_url=fresh.base_url, api_key="x", max_retries=0, timeout=10) as c:
                for model in ("sim-reasoner", FIELD, "sim-weak"):
                    if stream:
                        usages.append(streamed_usage(c, model, question, n=2).model_dump())
                    else:
                        reply = c.chat.completions.create(model=model, messages=question, n=2)
                        usages.append(reply.usage.model_dump() if reply.usage else None)
    whole, streamed = usages[:3], usages[3:]
    assert whole == streamed
    assert [u["completion_tokens_details"]["reasoning_tokens"] > 0 for u in whole] == [True, True, False]


# --- the wording of aggregations ---------------------------------------------------------------

def aggregations(sim: BackgroundSim, model: str, messages: list[dict[str, Any]], n: int = 20) -> list[str]:
    body = post(sim, {"model": model, "messages": messages, "n": n})
    return [choice["message"]["content"] for choice in body["choices"]]


def test_twenty_aggregations_of_one_prompt_mostly_differ_and_keep_their_answers() -> None:
    with BackgroundSim(seed=0, time_scale=0.0) as fresh:
        patch(fresh)
        texts = aggregations(fresh, HALF, mixed())
    assert len(set(texts)) >= 15
    assert [extract_answer(t) for t in texts] == PINNED


def test_agreeing_candidates_of_an_unknown_question_still_give_distinct_syntheses(sim: BackgroundSim) -> None:
    """optillm's n test: one question the simulator has no task for, every proposal the same token."""
    texts = aggregations(sim, "sim-strong", fenced(["Here is a reply.\nAnswer: amber"] * 3, "Tell me a story"))
    assert len(set(texts)) >= 15 and {extract_answer(t) for t in texts} == {"amber"}
    assert all(t.startswith("Weighing the 3 candidates") for t in texts)


def test_the_wording_names_a_candidate_that_carries_the_kept_answer(sim: BackgroundSim) -> None:
    for text in aggregations(sim, HALF, mixed()):
        answer = extract_answer(text)
        named = [int(n) for n in re.findall(r"candidate (\d+)", text)]
        assert named and all(ANSWERS[n - 1] == answer for n in named), text
        assert len(re.findall(r"answer\s*:", text, re.IGNORECASE)) == 1 and text.count("\n") == 1


def test_the_wording_is_reproducible_for_a_seed_and_request_order() -> None:
    runs = []
    for seed in (5, 5, 6):
        with BackgroundSim(seed=seed, time_scale=0.0) as fresh:
            patch(fresh)
            runs.append(aggregations(fresh, HALF, mixed(), n=3) + aggregations(fresh, HALF, mixed(), n=3))
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_candidates_without_answers_give_none_or_the_others_answer(sim: BackgroundSim) -> None:
    silent = aggregations(sim, "sim-strong", fenced(["I am not sure.", "No idea."]), n=5)
    assert all(extract_answer(t) is None and t.startswith("Weighing the 2 candidates") for t in silent)
    assert len(set(silent)) > 1
    partly = aggregations(sim, "sim-strong", fenced(["Answer: 4", "No idea.", "Answer: 4"]), n=5)
    assert {extract_answer(t) for t in partly} == {"4"} and len(set(partly)) > 1
