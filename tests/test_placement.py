"""`moa.placement`: where aggregation-style prompts put their instructions and candidates.

`last_user` (the default) appends them to the last user turn, so the conversation stays the prefix
of the proposers' prompt and a backend's prompt cache serves it; `system` is the MoA reference's
placement, a system message first. Checked on the prompts every approach sends (unit, fake
backend), over HTTP through `selfmoa serve` (simulator), and against real llama.cpp servers: one
with a chat template that refuses misplaced roles, and the prompt work the aggregation saves.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import openai
import pytest

from selfmoa.approaches import VARIANTS, Candidate, Choice, run_moa
from selfmoa.approaches.prompts import (
    AUTO_CACHED_TOKENS,
    SYNTHESIZE_INSTRUCTIONS,
    after_conversation,
    aggregation_messages,
)
from selfmoa.config import ServerConfig, load_server_config, resolve
from selfmoa.testing.live import Proxy, SimLog
from selfmoa.testing.llamacpp import STRICT_CHAT_TEMPLATE, LlamaServer, llamacpp_server, write_tiny_gguf
from selfmoa.validation import ConfigError
from tests.conftest import make_caller
from tests.conversations import AFTER_TOOL_RESULTS, TOOLS
from tests.fakes import FakeBackend

CONVERSATIONS: dict[str, list[dict[str, Any]]] = {
    "one question": [{"role": "user", "content": "Capital of France?"}],
    "system and turns": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Pick a number."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Double it."},
    ],
    "tool results": AFTER_TOOL_RESULTS,
    "content parts": [{"role": "user", "content": [{"type": "text", "text": "Describe this."}]}],
}
# Every approach, its Seq rounds (12 samples: 3 rounds) and layers (references prompts).
RUNS: dict[str, dict[str, Any]] = {
    "one-shot": {"samples": 4},
    "seq rounds": {"samples": 12},
    "two layers": {"samples": 3, "layers": 2},
    "select": {"samples": 4, "mode": "select"},
}


def render(messages: Sequence[dict[str, Any]]) -> str:
    """Messages in order as a template renders them, the last one left open (its end is where
    a prompt can still grow)."""
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        calls = "".join(json.dumps(c) for c in message.get("tool_calls") or [])
        parts.append(f"<|{message['role']}|>{content or ''}{calls}")
    return "".join(parts)


def through_last_user(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return list(messages[: last + 1])


def assert_reads_the_cached_prefix(conversation: Sequence[dict[str, Any]], prompt: Sequence[dict[str, Any]]) -> None:
    """The prompt starts with the conversation, unchanged, through its last user turn (all of it
    when it ends with one), and has exactly its roles: a template that took one takes the other."""
    assert render(prompt).startswith(render(through_last_user(conversation)))
    assert [m["role"] for m in prompt] == [m["role"] for m in conversation]
    if conversation[-1]["role"] == "user":
        assert render(prompt).startswith(render(conversation))


def recipe_for(slug: str, run: dict[str, Any], placement: str | None = None) -> Any:
    moa = {**run, "proposers": ["a", "b"]} if VARIANTS[slug].mixed else dict(run)
    if placement is not None:
        moa["placement"] = placement
    return resolve(slug, "a", {"moa": moa}, [{"role": "user", "content": "x"}], ServerConfig())


# --- the prompts every approach sends ----------------------------------------------------------


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("slug", list(VARIANTS))
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
def test_every_aggregation_prompt_starts_with_the_proposers_prompt(slug: str, run: str, conversation: str) -> None:
    messages = CONVERSATIONS[conversation]
    backend = FakeBackend()
    run_moa(recipe_for(slug, RUNS[run], "last_user"), messages, make_caller(backend))
    proposals = backend.of_kind("propose")
    readers = [c for c in backend.calls if c.kind != "propose"]
    assert proposals and readers
    assert all(c.messages == messages for c in proposals)
    for call in readers:
        assert_reads_the_cached_prefix(messages, call.messages)
    if run == "seq rounds" and VARIANTS[slug].sequential:
        assert len(backend.of_kind("aggregate")) == 3


@pytest.mark.parametrize("slug", list(VARIANTS))
def test_the_system_placement_puts_the_candidates_in_a_first_system_message(slug: str) -> None:
    messages = CONVERSATIONS["one question"]
    backend = FakeBackend()
    run_moa(recipe_for(slug, RUNS["two layers"], "system"), messages, make_caller(backend))
    readers = [c for c in backend.calls if c.kind != "propose"]
    assert readers
    for call in readers:
        assert call.messages[0]["role"] == "system" and call.candidates
        assert call.messages[1:] == messages
        assert not render(call.messages).startswith(render(messages))  # the cache cannot serve it


def test_the_instructions_follow_the_question_in_its_own_turn() -> None:
    candidates = [Candidate(text="Paris", choice=Choice(content="Paris"))]
    messages = CONVERSATIONS["system and turns"]
    prompt = aggregation_messages(messages, candidates, SYNTHESIZE_INSTRUCTIONS, "last_user")
    assert prompt[:-1] == messages[:-1]
    assert prompt[-1]["content"].startswith("Double it.\n\nYou have been given 1 candidate")
    assert prompt[-1]["content"].endswith('<candidate id="1">\nParis\n</candidate>')
    parts = aggregation_messages(CONVERSATIONS["content parts"], candidates, SYNTHESIZE_INSTRUCTIONS,
                                 "last_user")[-1]["content"]
    assert parts[0] == {"type": "text", "text": "Describe this."} and '<candidate id="1">' in parts[1]["text"]
    assert messages[-1]["content"] == "Double it."  # the conversation itself is not mutated


def test_without_a_user_turn_to_extend_the_instructions_go_in_the_system_prompt() -> None:
    prompt = after_conversation([{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hi"}],
                                "INSTRUCTIONS")
    assert prompt[0] == {"role": "system", "content": "Be brief.\n\nINSTRUCTIONS"} and len(prompt) == 2


# --- configuration -------------------------------------------------------------------------------


def test_placement_defaults_to_system_and_is_validated(tmp_path: Any) -> None:
    """`system` measured better with a real small aggregator (README), so it is the default."""
    user = [{"role": "user", "content": "x"}]
    assert resolve("self_moa", "m", {}, user, ServerConfig()).placement == "system"
    assert resolve("self_moa", "m", {"moa": {"placement": "last_user"}}, user, ServerConfig()).placement == "last_user"
    with pytest.raises(ConfigError) as error:
        resolve("self_moa", "m", {"moa": {"placement": "front"}}, user, ServerConfig())
    assert error.value.field == "moa.placement" and "'system', 'last_user' or 'auto'" in str(error.value)
    config = tmp_path / "selfmoa.yaml"
    config.write_text("defaults: {placement: last_user}\npresets:\n  reference: {placement: system}\n")
    server = load_server_config(config)
    assert resolve("self_moa", "m", {}, user, server).placement == "last_user"
    assert resolve("self_moa", "m", {"moa": {"preset": "reference"}}, user, server).placement == "system"


def test_auto_places_after_the_conversation_only_where_the_cache_pays() -> None:
    """`auto`: the MoA reference's system placement for short conversations, `last_user` once the
    part a cache would serve (after the system prompt, through the last user turn) is long."""
    candidates = [Candidate(text="Paris", choice=Choice(content="Paris"))]
    short = CONVERSATIONS["system and turns"]
    assert aggregation_messages(short, candidates, SYNTHESIZE_INSTRUCTIONS, "auto") == \
        aggregation_messages(short, candidates, SYNTHESIZE_INSTRUCTIONS, "system")
    long_system = [{"role": "system", "content": "rule " * 2000}, {"role": "user", "content": "Hi?"}]
    assert aggregation_messages(long_system, candidates, SYNTHESIZE_INSTRUCTIONS, "auto")[0]["role"] == "system"
    assert len(aggregation_messages(long_system, candidates, SYNTHESIZE_INSTRUCTIONS, "auto")) == 2
    document = "word " * (4 * AUTO_CACHED_TOKENS)
    rag = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"{document}\nSummarise."}]
    assert aggregation_messages(rag, candidates, SYNTHESIZE_INSTRUCTIONS, "auto") == \
        aggregation_messages(rag, candidates, SYNTHESIZE_INSTRUCTIONS, "last_user")


# --- over HTTP, through `selfmoa serve` and the simulator ------------------------------------------


def test_the_aggregator_reads_the_conversation_first_over_http(client: openai.OpenAI, simlog: SimLog) -> None:
    conversation = CONVERSATIONS["system and turns"]
    client.chat.completions.create(model="self_moa_seq-sim-strong", messages=conversation,  # type: ignore[arg-type]
                                   extra_body={"moa": {"samples": 9, "placement": "last_user"}})
    aggregations = simlog.of_kind("aggregate")
    assert len(aggregations) == 2 and all(c["messages"] == conversation for c in simlog.of_kind("propose"))
    for call in aggregations:
        assert_reads_the_cached_prefix(conversation, call["messages"])


def test_the_system_placement_over_http(client: openai.OpenAI, simlog: SimLog) -> None:
    conversation = CONVERSATIONS["system and turns"]
    client.chat.completions.create(model="self_moa-sim-strong", messages=conversation,  # type: ignore[arg-type]
                                   extra_body={"moa": {"samples": 3, "placement": "system"}})
    (aggregation,) = simlog.of_kind("aggregate")
    assert aggregation["messages"][1:] == conversation[1:] and aggregation["candidates"] == 3
    assert aggregation["messages"][0]["content"].startswith("You are terse.\n\nYou have been given 3 candidate")


# --- a real llama.cpp server -----------------------------------------------------------------------

N_CTX = 4096
PARALLEL = 4


@pytest.fixture(scope="module")
def strict_llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """llama.cpp with a chat template that raises on a system message after the first and on two
    user turns in a row (tool-call turns not counted, as Mistral's)."""
    tmp = tmp_path_factory.mktemp("llamacpp-strict")
    model_path = tmp / "tiny-llama-strict.gguf"
    write_tiny_gguf(model_path, n_ctx_train=N_CTX, stop_probability=0.25, chat_template=STRICT_CHAT_TEMPLATE)
    with llamacpp_server(model_path, ctx_size=N_CTX * PARALLEL, parallel=PARALLEL, log_dir=tmp) as server:
        yield server


@pytest.fixture(scope="module")
def strict_proxy(strict_llama: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    running = Proxy.selfmoa(strict_llama.base_url, log_path=tmp_path_factory.mktemp("strict-proxy") / "proxy.log")
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def direct(strict_llama: LlamaServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=strict_llama.base_url, api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.mark.parametrize("misplaced", [
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
    [*CONVERSATIONS["tool results"], {"role": "user", "content": "b"}],
], ids=["two user turns", "a late system message", "a user turn after tool results"])
def test_the_strict_template_refuses_misplaced_roles(direct: openai.OpenAI, strict_llama: LlamaServer,
                                                     misplaced: list[dict[str, Any]]) -> None:
    with pytest.raises(openai.BadRequestError):
        direct.chat.completions.create(model=strict_llama.model, messages=misplaced, max_tokens=2)  # type: ignore[arg-type]


@pytest.mark.parametrize("placement", ["last_user", "system", "auto"])
@pytest.mark.parametrize("conversation", ["one question", "system and turns", "tool results"])
def test_the_strict_template_accepts_every_approachs_prompts(strict_proxy: Proxy, strict_llama: LlamaServer,
                                                             conversation: str, placement: str) -> None:
    body: dict[str, Any] = {"messages": CONVERSATIONS[conversation], "max_tokens": 8, "tools": TOOLS}
    with strict_proxy.client() as client:
        client.chat.completions.create(model=strict_llama.model, **body)  # the plain model takes it
        for slug in VARIANTS:
            moa = {"samples": 3, "layers": 2, "placement": placement, "proposers": [strict_llama.model, "other"]}
            reply = client.chat.completions.create(model=f"{slug}-{strict_llama.model}", **body,
                                                   extra_body={"moa": moa})
            assert reply.choices[0].message.content or reply.choices[0].message.tool_calls
    # every aggregation was accepted: none replaced for an error (the tiny model's random text may,
    # rarely, be nothing but markup once cleaned: that is asked again, then replaced, and said so)
    replaced = [line for line in strict_proxy.log().splitlines() if "the aggregation gave nothing usable" in line]
    assert all("returned an empty aggregation twice" in line for line in replaced), replaced


def tokens(server: LlamaServer, text: str) -> int:
    request = urllib.request.Request(f"{server.root_url}/tokenize", data=json.dumps({"content": text}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return len(json.loads(response.read())["tokens"])


def test_the_aggregation_is_served_from_the_proposals_cache(strict_proxy: Proxy, strict_llama: LlamaServer) -> None:
    """Two fresh long questions, one per placement: the reply's `cached_tokens` (summed over the
    calls, as llama.cpp reports them) show the aggregation reading the conversation from the cache
    with `last_user` only."""
    cached = {}
    for placement in ("system", "last_user"):
        question = f"Summarise ({placement}): " + " ".join(f"w{i} of the {placement}" for i in range(100))
        with strict_proxy.client() as client:
            reply = client.chat.completions.create(
                model=f"self_moa-{strict_llama.model}", messages=[{"role": "user", "content": question}],
                max_tokens=8, extra_body={"moa": {"samples": 2, "placement": placement}})
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        cached[placement] = (reply.usage.prompt_tokens_details.cached_tokens or 0, tokens(strict_llama, question))
    (system, system_length), (last_user, last_user_length) = cached["system"], cached["last_user"]
    assert last_user >= 0.9 * last_user_length and system < system_length / 2
