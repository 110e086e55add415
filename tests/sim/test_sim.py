"""The offline simulator, end to end over real HTTP (openai client and httpx against a live server)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal

import httpx
import openai
import pytest

from selfmoa.approaches import Candidate, Choice
from selfmoa.approaches.prompts import SELECT_INSTRUCTIONS, SYNTHESIZE_INSTRUCTIONS, aggregation_messages
from selfmoa.sim import TASK_SETS, BackgroundSim, ModelProfile, Profile, extract_answer, load_profile, load_tasks
from selfmoa.sim.behaviour import estimate_tokens, majority, prompt_tokens

ARITH = load_tasks("arithmetic")
CHOICE = load_tasks("choice")


def patch(sim: BackgroundSim, **models: dict) -> None:
    response = httpx.post(f"{sim.root_url}/sim/profile", json={"models": models})
    assert response.status_code == 200, response.text


def calls(sim: BackgroundSim) -> list[dict]:
    return httpx.get(f"{sim.root_url}/sim/calls").json()


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def ask(client: openai.OpenAI, model: str, text: str, **kwargs):
    return client.chat.completions.create(model=model, messages=user(text), **kwargs)


# --- shape -----------------------------------------------------------------------------------

def test_completion_shape_and_usage(client: openai.OpenAI) -> None:
    task = ARITH[0]
    response = ask(client, "sim-medium", task.question, n=2)
    assert response.object == "chat.completion" and response.id and response.created > 0
    assert response.model == "sim-medium"
    assert [c.index for c in response.choices] == [0, 1]
    for choice in response.choices:
        assert choice.finish_reason == "stop"
        assert re.search(r"\nAnswer: \S+$", choice.message.content)
    assert response.usage.prompt_tokens == prompt_tokens(user(task.question)) == estimate_tokens(task.question) + 4
    assert response.usage.completion_tokens == sum(estimate_tokens(c.message.content) for c in response.choices)
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_models_health_and_openai_errors(sim: BackgroundSim, client: openai.OpenAI) -> None:
    names = {m.id for m in client.models.list()}
    assert {"sim-strong", "sim-medium", "sim-weak", "sim-no-n", "sim-short-n", "sim-small-context",
            "sim-reasoner", "sim-picky"} <= names
    assert httpx.get(f"{sim.root_url}/health").json() == {"status": "ok"}
    with pytest.raises(openai.NotFoundError) as missing:
        ask(client, "no-such-model", "hi")
    assert missing.value.code == "model_not_found"
    url = f"{sim.base_url}/chat/completions"
    for bad in (b"{not json", b"[]", b'{"model": "sim-weak"}', b'{"model": "sim-weak", "messages": [], "n": 1}',
                b'{"model": "sim-weak", "messages": [{"role": "user", "content": "x"}], "n": 0}'):
        response = httpx.post(url, content=bad, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, bad
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_generic_prompt_echoes_and_ends_with_a_stable_token(client: openai.OpenAI) -> None:
    response = ask(client, "sim-medium", "Tell me a story about purple dragons tonight please", n=4)
    texts = [c.message.content for c in response.choices]
    assert all("purple dragons" in t for t in texts)
    tokens = {extract_answer(t) for t in texts}
    assert len(tokens) == 1 and None not in tokens


def test_last_user_message_decides_the_task(client: openai.OpenAI) -> None:
    messages = [*user(CHOICE[0].question), {"role": "assistant", "content": "Answer: C"}, *user("thanks, bye now")]
    response = client.chat.completions.create(model="sim-strong", messages=messages, n=3)
    assert all("thanks, bye now" in c.message.content for c in response.choices)


# --- n ---------------------------------------------------------------------------------------

def test_n_honoured_refused_capped_ignored(sim: BackgroundSim, client: openai.OpenAI) -> None:
    assert len(ask(client, "sim-medium", "count me", n=5).choices) == 5
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, "sim-no-n", "count me", n=2)
    assert refused.value.param == "n" and "n must be 1 for this model" in str(refused.value)
    assert len(ask(client, "sim-no-n", "count me", n=1).choices) == 1
    assert len(ask(client, "sim-short-n", "count me", n=5).choices) == 2
    patch(sim, **{"sim-ignore-n": {"n_mode": "ignore"}})
    response = ask(client, "sim-ignore-n", "count me", n=4)
    assert len(response.choices) == 1
    assert calls(sim)[-1]["n"] == 4 and calls(sim)[-1]["choices"] == 1


# --- randomness ------------------------------------------------------------------------------

def _script(server: BackgroundSim) -> list[str]:
    """A fixed call sequence; returns every text produced."""
    out = []
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0) as c:
        for task in ARITH[:4] + CHOICE[:4]:
            out += [ch.message.content for ch in ask(c, "sim-weak", task.question, n=3).choices]
            out += [ask(c, "sim-medium", task.question).choices[0].message.content]
    return out


def test_seeded_reproducibility_and_per_sample_variety() -> None:
    with BackgroundSim(seed=7) as a:
        first = _script(a)
    with BackgroundSim(seed=7) as b:
        second = _script(b)
    with BackgroundSim(seed=8) as c:
        other = _script(c)
    assert first == second
    assert first != other
    # successive samples of one prompt differ: 3 samples of 8 prompts are never all equal
    groups = [first[i:i + 3] for i in range(0, len(first), 4)]
    assert sum(len(set(g)) > 1 for g in groups) >= 6


def test_n_in_one_call_equals_successive_single_calls() -> None:
    question = ARITH[5].question
    with BackgroundSim(seed=3) as a, openai.OpenAI(base_url=a.base_url, api_key="x", max_retries=0) as c:
        batched = [ch.message.content for ch in ask(c, "sim-weak", question, n=6).choices]
    with BackgroundSim(seed=3) as b, openai.OpenAI(base_url=b.base_url, api_key="x", max_retries=0) as c:
        single = [ask(c, "sim-weak", question).choices[0].message.content for _ in range(6)]
    assert batched == single
    assert len(set(batched)) >= 3


def test_temperature_zero_is_greedy(client: openai.OpenAI) -> None:
    texts = {c.message.content for c in ask(client, "sim-weak", ARITH[7].question, n=5, temperature=0).choices}
    assert len(texts) == 1
    varied = {c.message.content for c in ask(client, "sim-weak", ARITH[7].question, n=5, temperature=1).choices}
    assert len(varied) > 1


# --- quality ---------------------------------------------------------------------------------

def _accuracy(client: openai.OpenAI, model: str, tasks: list, n: int) -> float:
    right = total = 0
    for task in tasks:
        for choice in ask(client, model, task.question, n=n).choices:
            right += extract_answer(choice.message.content) == task.answer
            total += 1
    return right / total


def test_accuracy_roughly_matches_profile(client: openai.OpenAI) -> None:
    tasks = ARITH[:20] + CHOICE[:20]
    strong, weak = _accuracy(client, "sim-strong", tasks, 5), _accuracy(client, "sim-weak", tasks, 5)
    assert 0.62 <= strong <= 0.88, strong  # profile: 0.75, 200 samples
    assert 0.27 <= weak <= 0.53, weak  # profile: 0.4
    math_arith = _accuracy(client, "sim-math", ARITH[:20], 5)
    math_choice = _accuracy(client, "sim-math", CHOICE[:20], 5)
    assert math_arith > math_choice + 0.1, (math_arith, math_choice)  # {arithmetic: 0.8, choice: 0.5}


def test_wrong_answers_are_plausible(client: openai.OpenAI) -> None:
    task = ARITH[0]  # answer 66
    answers = [extract_answer(c.message.content) for c in ask(client, "sim-weak", task.question, n=40).choices]
    wrong = [a for a in answers if a != task.answer]
    assert wrong and all(0 < abs(Decimal(a) - Decimal(task.answer)) <= 3 for a in wrong)
    letters = {extract_answer(c.message.content) for c in ask(client, "sim-weak", CHOICE[0].question, n=40).choices}
    assert len(letters) > 1 and letters <= set(CHOICE[0].options)


def _agreement_and_accuracy(client: openai.OpenAI, model: str, tasks: list, n: int) -> tuple[float, float]:
    """Share of tasks whose n samples all give one answer, and the share of samples that are right."""
    unanimous = right = 0
    for task in tasks:
        answers = [extract_answer(c.message.content) for c in ask(client, model, task.question, n=n).choices]
        unanimous += len(set(answers)) == 1
        right += sum(a == task.answer for a in answers)
    return unanimous / len(tasks), right / (len(tasks) * n)


def test_consistency_makes_samples_of_a_task_agree_at_the_same_accuracy(sim: BackgroundSim,
                                                                          client: openai.OpenAI) -> None:
    patch(sim, **{"sim-independent": {"accuracy": 0.6}, "sim-consistent": {"accuracy": 0.6, "consistency": 0.9}})
    tasks = ARITH[:40]
    independent = _agreement_and_accuracy(client, "sim-independent", tasks, 4)
    consistent = _agreement_and_accuracy(client, "sim-consistent", tasks, 4)
    # 4 independent samples at 0.6 agree on ~0.6^4 = 13% of tasks (plus the rare wrong-answer match);
    # at 0.9, all 4 repeat the settled answer on 0.9^4 = 66% of tasks
    assert independent[0] < 0.35 and consistent[0] > 0.45, (independent, consistent)
    for agreement, accuracy in (independent, consistent):
        assert 0.4 <= accuracy <= 0.8, (agreement, accuracy)  # profile 0.6, 160 samples; settled answers too
    # the settled answer is the model's own: another model (or seed) settles independently
    patch(sim, **{"sim-consistent-2": {"accuracy": 0.6, "consistency": 1.0}})
    first = [extract_answer(ask(client, "sim-consistent", t.question, temperature=1).choices[0].message.content)
             for t in tasks]
    second = [extract_answer(ask(client, "sim-consistent-2", t.question).choices[0].message.content) for t in tasks]
    assert first != second
    with pytest.raises(AssertionError, match="consistency"):
        patch(sim, **{"sim-consistent": {"consistency": 1.5}})


# --- aggregation -----------------------------------------------------------------------------

CANDIDATES = [Candidate(text=t, choice=Choice(content=t))
              for t in (f"Working {i}.\nAnswer: {a}" for i, a in enumerate(["63", "66", "12", "66", "66", "70"]))]


def test_synthesis_follows_the_majority_with_skill(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-judge": {"aggregator_skill": 1.0}, "sim-coin": {"aggregator_skill": 0.0}})
    messages = aggregation_messages(user(ARITH[0].question), CANDIDATES, SYNTHESIZE_INSTRUCTIONS)
    judged = client.chat.completions.create(model="sim-judge", messages=messages, n=10)
    assert all(c.message.content.startswith("Weighing the 6 candidates") for c in judged.choices)
    assert {extract_answer(c.message.content) for c in judged.choices} == {"66"}
    record = calls(sim)[-1]
    assert record["kind"] == "aggregate" and record["candidates"] == 6
    coin = client.chat.completions.create(model="sim-coin", messages=messages, n=30)
    picked = Counter(extract_answer(c.message.content) for c in coin.choices)
    assert set(picked) <= {"63", "66", "12", "70"} and len(picked) >= 3


def test_select_replies_with_a_majority_candidate(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-judge": {"aggregator_skill": 1.0}, "sim-coin": {"aggregator_skill": 0.0}})
    messages = aggregation_messages(user(ARITH[0].question), CANDIDATES, SELECT_INSTRUCTIONS)
    judged = client.chat.completions.create(model="sim-judge", messages=messages, n=10)
    picks = {int(re.fullmatch(r"<best>(\d+)</best>", c.message.content).group(1)) for c in judged.choices}
    assert picks <= {2, 4, 5} and len(picks) > 1
    assert calls(sim)[-1]["kind"] == "select"
    coin = client.chat.completions.create(model="sim-coin", messages=messages, n=30)
    assert {int(re.search(r"\d+", c.message.content).group()) for c in coin.choices} - {2, 4, 5}


def test_majority_ties_break_by_first_appearance() -> None:
    assert majority(["7", "5", "5", "7", None]) == "7"
    assert majority([None, None]) is None


# --- limits ----------------------------------------------------------------------------------

def test_context_length_exceeded(client: openai.OpenAI) -> None:
    assert ask(client, "sim-small-context", "short question").choices
    long_text = "word " * 600  # 3000 characters: 750 + 4 tokens
    with pytest.raises(openai.BadRequestError) as exceeded:
        ask(client, "sim-small-context", long_text)
    assert exceeded.value.code == "context_length_exceeded"
    assert "maximum context length is 600 tokens. However, your messages resulted in 754 tokens." in str(exceeded.value)
    assert ask(client, "sim-medium", long_text).choices  # the default window is 8192


def test_refuse_params(sim: BackgroundSim, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, "sim-picky", "hello", max_tokens=50)
    assert refused.value.param == "max_tokens"
    expected = ("Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.")
    assert expected in str(refused.value)
    assert ask(client, "sim-picky", "hello", max_completion_tokens=50).choices
    patch(sim, **{"sim-no-temp": {"refuse_params": ["temperature", "top_p"]}})
    with pytest.raises(openai.BadRequestError) as no_temp:
        ask(client, "sim-no-temp", "hello", temperature=0.7)
    assert no_temp.value.param == "temperature"
    assert ask(client, "sim-no-temp", "hello").choices


def test_max_tokens_and_stop(sim: BackgroundSim, client: openai.OpenAI) -> None:
    question = ARITH[1].question
    cut = ask(client, "sim-medium", question, max_tokens=5)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens <= 5 and len(cut.choices[0].message.content) <= 20
    cut = ask(client, "sim-medium", question, max_completion_tokens=4)
    assert cut.choices[0].finish_reason == "length" and len(cut.choices[0].message.content) <= 16
    stopped = ask(client, "sim-medium", question, stop=["Answer:"], n=3)
    for choice in stopped.choices:
        assert "Answer" not in choice.message.content and choice.message.content
        assert choice.finish_reason == "stop"
    assert calls(sim)[-1]["params"] == {"stop": ["Answer:"], "n": 3}


# --- faults ----------------------------------------------------------------------------------

def test_fault_429_with_retry_after(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-429": {"rate_429": 1.0, "retry_after": 2}})
    response = httpx.post(f"{sim.base_url}/chat/completions", json={"model": "sim-429", "messages": user("hi")})
    assert response.status_code == 429 and response.headers["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        ask(client, "sim-429", "hi")


def test_fault_rates_are_per_call_probabilities(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-some-429": {"rate_429": 0.3}})
    outcomes = []
    for i in range(100):
        try:
            ask(client, "sim-some-429", f"q {i % 5}")
            outcomes.append(200)
        except openai.RateLimitError:
            outcomes.append(429)
    assert 15 <= outcomes.count(429) <= 45


def test_fault_500(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-500": {"rate_500": 1.0}})
    with pytest.raises(openai.InternalServerError):
        ask(client, "sim-500", "hi")
    assert calls(sim)[-1]["status"] == 500


def test_fault_reset(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-reset": {"rate_reset": 1.0}})
    with pytest.raises(openai.APIConnectionError) as reset:
        ask(client, "sim-reset", "hi")
    assert not isinstance(reset.value, openai.APITimeoutError)
    record = calls(sim)[-1]
    assert record["fault"] == "reset" and record["status"] is None


def test_fault_hang_times_out_and_server_stays_responsive(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-hang": {"rate_hang": 1.0}})

    async def scenario() -> tuple[float, list[int]]:
        async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="x", max_retries=0, timeout=1.0) as hung, \
                httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=200)) as http:
            start = time.monotonic()
            hanging = asyncio.ensure_future(hung.chat.completions.create(model="sim-hang", messages=user("hi")))
            await asyncio.sleep(0.1)
            others = await asyncio.gather(*[
                http.post(f"{sim.base_url}/chat/completions", json={"model": "sim-weak", "messages": user(f"q{i}")})
                for i in range(120)])
            with pytest.raises(openai.APITimeoutError):
                await hanging
            return time.monotonic() - start, [r.status_code for r in others]

    elapsed, statuses = asyncio.run(scenario())
    assert statuses == [200] * 120
    assert 0.9 <= elapsed < 5
    time.sleep(0.2)  # the server notices the disconnect and ends the hang
    hung = [r for r in calls(sim) if r["model"] == "sim-hang"]
    assert hung[-1]["fault"] == "hang" and hung[-1]["ended"] is not None and hung[-1]["status"] is None


def test_fault_truncated_and_empty(sim: BackgroundSim, client: openai.OpenAI) -> None:
    patch(sim, **{"sim-trunc": {"rate_truncated": 1.0}, "sim-empty": {"rate_empty": 1.0}})
    truncated = ask(client, "sim-trunc", ARITH[2].question, n=3)
    for choice in truncated.choices:
        assert choice.finish_reason == "length" and choice.message.content
        assert extract_answer(choice.message.content) is None
    empty = ask(client, "sim-empty", ARITH[2].question, n=2)
    assert [c.message.content for c in empty.choices] == ["", ""]
    assert empty.usage.completion_tokens == 0


# --- reasoning and streaming -----------------------------------------------------------------

def test_reasoning_modes(sim: BackgroundSim, client: openai.OpenAI) -> None:
    tagged = ask(client, "sim-reasoner", CHOICE[3].question).choices[0].message.content
    assert re.match(r"<think>\n.+\n</think>\n\n", tagged, re.DOTALL)
    assert extract_answer(tagged) in CHOICE[3].options
    patch(sim, **{"sim-field": {"reasoning": "field"}})
    body = httpx.post(f"{sim.base_url}/chat/completions",
                      json={"model": "sim-field", "messages": user(CHOICE[3].question)}).json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] and "<think>" not in message["content"]
    plain = ask(client, "sim-medium", CHOICE[3].question).choices[0].message
    assert "<think>" not in plain.content and getattr(plain, "reasoning_content", None) is None


def test_stream(sim: BackgroundSim, client: openai.OpenAI) -> None:
    chunks = list(ask(client, "sim-medium", ARITH[3].question, stream=True, n=2,
                      stream_options={"include_usage": True}))
    texts, finishes = ["", ""], {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert len(chunks) > 10 and all(extract_answer(t) for t in texts)
    assert finishes == {0: "stop", 1: "stop"}
    assert chunks[-1].usage.completion_tokens == sum(estimate_tokens(t) for t in texts)
    assert calls(sim)[-1]["stream"] is True
    raw = httpx.post(f"{sim.base_url}/chat/completions",
                     json={"model": "sim-medium", "messages": user("hi"), "stream": True}).text
    assert raw.startswith("data: {") and raw.rstrip().endswith("data: [DONE]")


def test_latency_nonstream_and_stream() -> None:
    profile = Profile(time_scale=1.0, models={"slow": ModelProfile(ttft_ms=150, per_token_ms=6)})
    with BackgroundSim(profile, time_scale=None) as slow, \
            openai.OpenAI(base_url=slow.base_url, api_key="x", max_retries=0) as c:
        start = time.monotonic()
        response = ask(c, "slow", ARITH[0].question)
        elapsed = time.monotonic() - start
        expected = (150 + 6 * response.usage.completion_tokens) / 1000
        assert expected <= elapsed < expected + 1.0
        start = time.monotonic()
        stamps, text = [], ""
        for chunk in ask(c, "slow", ARITH[0].question, stream=True):
            stamps.append(time.monotonic() - start)
            text += chunk.choices[0].delta.content or ""
        assert stamps[0] >= 0.14  # time to first token
        assert stamps[-1] - stamps[0] >= 0.006 * estimate_tokens(text) * 0.9  # per-token latency between chunks


# --- introspection ---------------------------------------------------------------------------

def test_sim_calls_records_and_reset(sim: BackgroundSim, client: openai.OpenAI) -> None:
    assert httpx.delete(f"{sim.root_url}/sim/calls").status_code == 200
    assert calls(sim) == []
    ask(client, "sim-weak", "first", n=2, temperature=0.7, top_p=0.9, seed=5, max_tokens=100,
        response_format={"type": "text"})
    with pytest.raises(openai.BadRequestError):
        ask(client, "sim-no-n", "second", n=3)
    records = calls(sim)
    assert [r["model"] for r in records] == ["sim-weak", "sim-no-n"]
    first, second = records
    assert first["seq"] < second["seq"] and first["started"] <= first["ended"] <= second["started"]
    assert first["params"] == {"n": 2, "temperature": 0.7, "top_p": 0.9, "seed": 5, "max_tokens": 100,
                               "response_format": {"type": "text"}}
    assert (first["n"], first["choices"], first["status"], first["stream"]) == (2, 2, 200, False)
    assert first["kind"] == "propose" and first["candidates"] == 0
    assert first["messages"] == user("first") and first["prompt_tokens"] == prompt_tokens(user("first"))
    assert (second["status"], second["choices"]) == (400, 0)
    assert "sk-test-secret-123" not in httpx.get(f"{sim.root_url}/sim/calls").text
    httpx.delete(f"{sim.root_url}/sim/calls")
    assert calls(sim) == []


def test_sim_reset_replays_from_the_start(sim: BackgroundSim, client: openai.OpenAI) -> None:
    httpx.post(f"{sim.root_url}/sim/reset")
    first = [ask(client, "sim-weak", ARITH[11].question).choices[0].message.content for _ in range(4)]
    assert len(set(first)) > 1
    assert httpx.post(f"{sim.root_url}/sim/reset").status_code == 200
    assert calls(sim) == []
    again = [ask(client, "sim-weak", ARITH[11].question).choices[0].message.content for _ in range(4)]
    assert again == first and calls(sim)[0]["seq"] == 1


def test_sim_profile_get_and_patch(sim: BackgroundSim, client: openai.OpenAI) -> None:
    profile = httpx.get(f"{sim.root_url}/sim/profile").json()
    assert profile["models"]["sim-strong"]["accuracy"] == 0.75
    with pytest.raises(openai.NotFoundError):
        ask(client, "sim-new", "hi")
    patch(sim, **{"sim-new": {"accuracy": 1.0}})
    assert extract_answer(ask(client, "sim-new", ARITH[9].question).choices[0].message.content) == ARITH[9].answer
    patch(sim, **{"sim-new": {"accuracy": 0.0}})
    assert extract_answer(ask(client, "sim-new", ARITH[9].question).choices[0].message.content) != ARITH[9].answer
    for bad, field in (({"acuracy": 1}, "acuracy"), ({"accuracy": 2}, "accuracy"), ({"n_mode": "maybe"}, "n_mode")):
        response = httpx.post(f"{sim.root_url}/sim/profile", json={"models": {"sim-new": bad}})
        assert response.status_code == 400 and field in response.json()["error"]["message"]
        assert response.json()["error"]["param"].endswith(field)
    assert httpx.get(f"{sim.root_url}/sim/profile").json()["models"]["sim-new"]["accuracy"] == 0.0


# --- library pieces --------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Working.\nAnswer: 42", "42"),
    ("Answer: 42.0", "42"),
    ("Answer: 7\nthen again\nAnswer: 1,000.50", "1000.5"),
    ("answer: $12", "12"),
    ("Final Answer: **-3**", "-3"),
    ("Answer: (b)", "B"),
    ("Answer: C) Paris", "C"),
    ("Answer: amber", "amber"),
    ("no final line", None),
    ("", None),
])
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_bundled_tasks_are_consistent() -> None:
    assert set(TASK_SETS) == {"arithmetic", "choice"}
    assert len(ARITH) >= 40 and len(CHOICE) >= 40
    for task in ARITH:
        assert task.kind == "numeric" and task.answer == extract_answer(f"Answer: {task.answer}")
        assert task.stem in task.question and "Answer:" in task.question
    for task in CHOICE:
        assert task.kind == "choice" and task.answer in task.options
        assert f"\n{task.answer}) " in task.question and "Answer: <letter>" in task.question
    everything = ARITH + CHOICE
    assert len({t.id for t in everything}) == len(everything)
    stems = [t.stem for t in everything]
    assert not [(a, b) for a in stems for b in stems if a != b and a in b]
    with pytest.raises(ValueError):
        load_tasks("nope")


def test_bundled_profile() -> None:
    profile = load_profile()
    models = profile.models
    assert models["sim-strong"].accuracy == 0.75 and models["sim-medium"].accuracy == 0.6
    assert models["sim-weak"].accuracy == 0.4
    assert models["sim-no-n"].n_mode == "refuse"
    assert (models["sim-short-n"].n_mode, models["sim-short-n"].max_n) == ("cap", 2)
    assert models["sim-small-context"].context_window == 600
    assert models["sim-reasoner"].reasoning == "think_tags"
    assert models["sim-picky"].refuse_params == ["max_tokens"]
    with pytest.raises(ValueError):
        ModelProfile(rate_429=0.7, rate_500=0.5)


def test_serve_prints_the_real_port_and_keeps_secrets() -> None:
    code = "from selfmoa.sim import serve; serve(port=0, seed=1, time_scale=0)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        match = re.fullmatch(r"selfmoa sim listening on http://127\.0\.0\.1:(\d+)/v1", line)
        assert match and int(match.group(1)) > 0, line
        base = line.rsplit(" ", 1)[1]
        assert httpx.get(base.removesuffix("/v1") + "/health").json() == {"status": "ok"}
        response = httpx.post(f"{base}/chat/completions", json={"model": "sim-strong", "messages": user("hi")},
                              headers={"Authorization": "Bearer sk-very-secret"})
        assert response.status_code == 200
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "sk-very-secret" not in out + err
