"""`selfmoa serve` in front of a real llama.cpp server (``selfmoa.testing.llamacpp``), end to end.

The tiny model is written with ``stop_probability``: after each token it ends its answer with
``</s>`` (``finish_reason == "stop"``) about one time in four, never right after a newline or a
space, so answers are short, never blank, and a 1-token budget always truncates. What llama.cpp does and selfmoa must
cope with (pinned in ``test_llamacpp_backend.py``): ``n`` above the slot count is a 400 naming the
limit, a prompt over a slot's context is a 400 ``exceed_context_size_error``.

Every assertion reads the proxy's one summary line per request (``selfmoa approach=... calls=..``)
or its answer; none depends on timing. Skipped without ``requirements/llamacpp.txt``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from selfmoa.approaches import Candidate, Choice
from selfmoa.approaches.prompts import SYNTHESIZE_INSTRUCTIONS, aggregation_messages
from selfmoa.testing.live import Proxy
from selfmoa.testing.llamacpp import LlamaServer, llamacpp_server, write_tiny_gguf

PARALLEL = 4  # llama.cpp's slots: the largest `n` it accepts
# One slot's context. The aggregation instructions alone take ~600 tokens (about one token a
# character with this vocabulary): 2048 leaves room for six short candidates.
N_CTX = 2048
STOP_PROBABILITY = 0.25
ASK = [{"role": "user", "content": "Say something."}]

SUMMARY = re.compile(
    r"selfmoa approach=(?P<approach>\S+) proposers=(?P<proposers>\S+) aggregator=(?P<aggregator>\S+) "
    r"samples_ok=(?P<ok>\d+) samples_failed=(?P<failed>\d+) rounds=(?P<rounds>\d+) seq=(?P<seq>yes|no) "
    r"calls=(?P<calls>\d+) prompt_tokens=(?P<prompt_tokens>\d+) completion_tokens=(?P<tokens>\d+) ")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    tmp = tmp_path_factory.mktemp("llamacpp-proxy")
    model_path = tmp / "tiny-llama-stops.gguf"
    write_tiny_gguf(model_path, n_ctx_train=N_CTX, stop_probability=STOP_PROBABILITY)
    with llamacpp_server(model_path, ctx_size=N_CTX * PARALLEL, parallel=PARALLEL,
                         log_dir=tmp) as server:
        assert server.n_ctx == N_CTX
        yield server


@pytest.fixture(scope="module")
def llama_proxy(llama: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    # No server config: selfmoa knows no context budget for the model, so only llama.cpp's own
    # refusal can make it switch to Seq.
    folder = tmp_path_factory.mktemp("llamacpp-proxy-log")
    running = Proxy.selfmoa(llama.base_url, log_path=folder / "proxy.log")
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def client(llama_proxy: Proxy) -> Iterator[openai.OpenAI]:
    with llama_proxy.client() as c:
        yield c


@pytest.fixture(scope="module")
def direct(llama: LlamaServer) -> Iterator[openai.OpenAI]:
    """llama.cpp itself, without the proxy."""
    with openai.OpenAI(base_url=llama.base_url, api_key="unused", max_retries=0, timeout=30) as c:
        yield c


def summaries(proxy: Proxy) -> list[dict[str, Any]]:
    found = []
    for match in SUMMARY.finditer(proxy.log()):
        line = match.groupdict()
        found.append({k: int(v) if v.isdigit() else v for k, v in line.items()})
    return found


def ask(proxy: Proxy, client: openai.OpenAI, model: str, messages: list[dict[str, str]] = ASK,
        **fields: Any) -> tuple[Any, dict[str, Any], str]:
    """One request through the proxy: (response, its summary line, the log it added)."""
    before_log = len(proxy.log())
    before = len(summaries(proxy))
    response = client.chat.completions.create(model=model, messages=messages, **fields)
    deadline = time.monotonic() + 10  # a request's line follows its reply
    while len(after := summaries(proxy)) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(after) == before + 1, proxy.log()[before_log:]
    return response, after[-1], proxy.log()[before_log:]


# --- the tiny model itself ---------------------------------------------------------------------


def test_the_model_stops_by_itself_with_stop(llama: LlamaServer, direct: openai.OpenAI) -> None:
    reply = direct.chat.completions.create(model=llama.model, messages=ASK, max_tokens=32,
                                           n=PARALLEL, temperature=0.7, seed=11)
    assert all(c.message.content and c.message.content.strip() for c in reply.choices)
    assert "stop" in {c.finish_reason for c in reply.choices}
    assert not any("</s>" in (c.message.content or "") for c in reply.choices)
    # ...but never after the template's newline: one token is always a truncated answer.
    one = direct.chat.completions.create(model=llama.model, messages=ASK, max_tokens=1,
                                         n=PARALLEL, temperature=0.7, seed=12)
    assert {c.finish_reason for c in one.choices} == {"length"}


# --- selfmoa serve in front of it -----------------------------------------------------------------


def test_n_above_the_slot_count_falls_back_to_batches_and_is_remembered(
        llama: LlamaServer, llama_proxy: Proxy, client: openai.OpenAI) -> None:
    # llama.cpp answers any model name with its one model: a name of this test's own gives it a
    # fresh endpoint+model memory whatever ran before.
    model = f"{llama.model}-n-probe"
    first, line, added = ask(llama_proxy, client, f"self_moa-{model}", max_tokens=12,
                             temperature=0.7, seed=1)
    assert (line["approach"], line["proposers"], line["aggregator"]) == ("self_moa", f"{model}x6", model)
    assert line["ok"] + line["failed"] == 6 and line["ok"] >= 1
    # the refused n=6, then n=4 and n=2, then the aggregation
    assert line["calls"] == 4
    assert f"{model} refuses n=6; falling back to n<=4" in added
    assert first.choices[0].message.content and first.choices[0].message.content.strip()
    assert first.usage is not None and first.usage.completion_tokens > 0

    second, line, _ = ask(llama_proxy, client, f"self_moa-{model}", max_tokens=12,
                          temperature=0.7, seed=1)
    assert line["ok"] + line["failed"] == 6
    assert line["calls"] == 3  # n=4 and n=2 straight away, then the aggregation
    assert second.choices[0].message.content and second.usage.completion_tokens > 0


def prompt_tokens(direct: openai.OpenAI, model: str, messages: list[dict[str, str]]) -> int:
    """What llama.cpp counts for `messages` (template and BOS included), fitting or not."""
    try:
        reply = direct.chat.completions.create(model=model, messages=messages, max_tokens=1)
    except openai.BadRequestError as error:
        assert error.type == "exceed_context_size_error" and isinstance(error.body, dict)
        return int(error.body["n_prompt_tokens"])
    assert reply.usage is not None
    return reply.usage.prompt_tokens


def test_a_real_context_overflow_switches_to_seq(llama: LlamaServer, llama_proxy: Proxy,
                                                 client: openai.OpenAI,
                                                 direct: openai.OpenAI) -> None:
    # A proposal gets at most 8 tokens (its longest piece, " and", has 4 characters), the answer
    # at most 4, and llama.cpp's tokenizer never needs more than one token a character: with
    # window 2 no Seq round holds more than two fenced 32-character texts (both marked cut off,
    # at worst). The one-shot prompt holds all 12 proposals (never blank; cut-off ones are kept),
    # each at least one character in its fence. A filler in the question puts the slot's context
    # between the two: the one shot overflows, while every Seq round fits whatever the texts are.
    # (Window 2 is set explicitly: after a refusal selfmoa's window is min(window, usable // 2).)
    proposal_max, answer_max, longest = 8, 4, "x" * 32

    def question(filler: int) -> list[dict[str, str]]:
        return [{"role": "user", "content": "Say something. " + "x" * filler}]

    def seq_round(filler: int) -> int:  # the worst case: both candidates marked as cut off
        cut = Candidate(text=longest, choice=Choice(content=longest, finish_reason="length"))
        return prompt_tokens(direct, llama.model,
                             aggregation_messages(question(filler), [cut, cut], SYNTHESIZE_INSTRUCTIONS))

    def one_shot(filler: int) -> int:
        short = Candidate(text="y", choice=Choice(content="y"))
        return prompt_tokens(direct, llama.model,
                             aggregation_messages(question(filler), [short] * 12, SYNTHESIZE_INSTRUCTIONS))

    gap = one_shot(0) - seq_round(0)
    assert gap >= 20, gap
    filler = llama.n_ctx - 1 - seq_round(0) - gap // 2
    # llama.cpp needs room for one generated token: a prompt must be shorter than n_ctx.
    assert seq_round(filler) < llama.n_ctx <= one_shot(filler)
    assert prompt_tokens(direct, llama.model, question(filler)) + proposal_max < llama.n_ctx

    moa = {"samples": 12, "max_tokens": proposal_max, "window": 2, "synthesis_slots": 1}
    reply, line, added = ask(llama_proxy, client, f"self_moa-{llama.model}", question(filler),
                             max_tokens=answer_max, temperature=0.7, seed=2,
                             extra_body={"moa": moa})
    assert reply.choices[0].message.content and reply.choices[0].message.content.strip()
    assert line["ok"] == 12 and line["failed"] == 0
    assert line["seq"] == "yes"
    assert line["rounds"] > 1
    assert line["rounds"] == line["ok"] - 1  # window 2, one synthesis slot: one new sample a round
    # the trigger was llama.cpp's own refusal, not a budget of ours (the proxy has none)
    assert "exceeds the available context size" in added
    assert "switching to Seq aggregation" in added


def test_a_token_limit_that_cuts_every_proposal_still_answers_like_the_plain_model(
        llama: LlamaServer, llama_proxy: Proxy, client: openai.OpenAI, direct: openai.OpenAI) -> None:
    # One token is never a complete answer for this model: every proposal and the answer end with
    # "length". The plain model answers 200 with that; so must the approach (it used to be a 502).
    plain = direct.chat.completions.create(model=llama.model, messages=ASK, max_tokens=1, seed=3)
    assert plain.choices[0].finish_reason == "length"
    reply, line, _ = ask(llama_proxy, client, f"self_moa-{llama.model}", max_tokens=1, seed=3,
                         extra_body={"moa": {"samples": 4, "min_samples": 2}})
    assert line["ok"] == 4 and line["failed"] == 0  # cut-off proposals are candidates, not failures
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content


def test_self_moa_seq_rounds_against_llamacpp(llama: LlamaServer, llama_proxy: Proxy,
                                              client: openai.OpenAI) -> None:
    # 32 tokens leave a proposal about 1e-4 chance of being truncated: every window has samples.
    moa = {"samples": 8, "window": 4, "synthesis_slots": 2, "max_tokens": 32}
    reply, line, _ = ask(llama_proxy, client, f"self_moa_seq-{llama.model}", max_tokens=12,
                         temperature=0.7, seed=4, extra_body={"moa": moa})
    assert line["approach"] == "self_moa_seq" and line["seq"] == "yes"
    assert line["ok"] + line["failed"] == 8
    assert line["rounds"] == 3  # 1 + ceil((8 - 4) / (4 - 2))
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
