"""The principle, tested differentially: through `selfmoa serve`, a request to `APPROACH-M` never
fails where the same request to `M` succeeds, and its reply is as complete as `M`'s.

Every request shape of the matrix goes to `M` and to each approach, the same body (`moa`
included, as an A/B with one client configuration sends it), against the simulator and against a
real llama.cpp server. Where `M` succeeds, every approach succeeds and its reply validates as an
OpenAI `ChatCompletion` (streams: every chunk a `ChatCompletionChunk`); where `M` gets a client
error, the approach gets the same status.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from selfmoa.testing.live import Proxy
from selfmoa.testing.llamacpp import LlamaServer, llamacpp_server, write_tiny_gguf
from tests.conversations import AFTER_TOOL_RESULTS, BAKER, TOOLS, WEATHER

SLUGS = ("self_moa", "mixed_moa", "self_moa_seq", "mixed_moa_seq")
LONG = [{"role": "user", "content": "Summarise: " + "lorem ipsum dolor " * 4000}]

SHAPES: dict[str, dict[str, Any]] = {
    "plain": {},
    "small max_tokens": {"max_tokens": 4},
    "large max_tokens": {"max_tokens": 400},
    "max_completion_tokens": {"max_completion_tokens": 24},
    "stop": {"stop": ["\n"]},
    "seed": {"seed": 7, "temperature": 0.3},
    "response_format": {"response_format": {"type": "json_object"}},
    "tools": {"messages": WEATHER, "tools": TOOLS},
    "logprobs": {"logprobs": True, "top_logprobs": 2},
    "n 2": {"n": 2},
    "multi-turn with tool results": {"messages": AFTER_TOOL_RESULTS, "tools": TOOLS},
    "over-long prompt": {"messages": LONG},
    "unknown model": {"model": "no-such-model"},
    "stream": {"stream": True},
    "stream with usage": {"stream": True, "stream_options": {"include_usage": True}},
}


@dataclass
class Result:
    status: int
    reply: Any = None  # a ChatCompletion, or the list of chunks of a stream
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


def send(client: openai.OpenAI, model: str, shape: dict[str, Any], proposers: list[str]) -> Result:
    fields = {"messages": BAKER, **shape, "model": model}
    fields["extra_body"] = {"moa": {"proposers": proposers, "samples": 4}}
    try:
        if fields.get("stream"):
            stream = client.chat.completions.create(**fields)
            chunks = [ChatCompletionChunk.model_validate(c.model_dump()) for c in stream]
            return Result(200, chunks)
        raw = client.chat.completions.with_raw_response.create(**fields)
        return Result(raw.status_code, ChatCompletion.model_validate(raw.http_response.json()))
    except openai.APIStatusError as error:
        return Result(error.status_code, error=error.message)


def approach_model(slug: str, model: str) -> str:
    return f"{slug}-{model}"


def check(plain: Result, approach: Result, shape: dict[str, Any]) -> None:
    if not plain.ok:
        assert 400 <= plain.status < 500, plain.error
        assert approach.status == plain.status, approach.error
        return
    assert approach.ok, f"the plain model answered, the approach said {approach.status}: {approach.error}"
    if shape.get("stream"):
        check_stream(plain.reply, approach.reply, shape)
    else:
        check_completion(plain.reply, approach.reply)


def check_completion(plain: ChatCompletion, approach: ChatCompletion) -> None:
    assert len(approach.choices) == len(plain.choices)
    assert approach.usage is not None and approach.usage.prompt_tokens > 0 and approach.usage.completion_tokens > 0
    for mine, theirs in zip(approach.choices, plain.choices):
        assert mine.finish_reason is not None
        if theirs.finish_reason == "tool_calls":
            assert mine.finish_reason == "tool_calls" and mine.message.tool_calls
        if theirs.logprobs is not None:
            assert mine.logprobs is not None and mine.logprobs.content
        if theirs.finish_reason != "tool_calls":
            assert mine.message.content


def check_stream(plain: list[ChatCompletionChunk], approach: list[ChatCompletionChunk], shape: dict[str, Any]) -> None:
    text = "".join(c.choices[0].delta.content or "" for c in approach if c.choices)
    assert text and [c.choices[0].finish_reason for c in approach if c.choices][-1] is not None
    if (shape.get("stream_options") or {}).get("include_usage"):
        assert plain[-1].usage is not None
        usage = approach[-1].usage
        assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0


def run_matrix(client: openai.OpenAI, model: str, shape: dict[str, Any], proposers: list[str]) -> None:
    plain = send(client, shape.get("model", model), shape, proposers)
    for slug in SLUGS:
        approach = send(client, approach_model(slug, shape.get("model", model)), shape, proposers)
        check(plain, approach, shape)


# --- against the simulator -----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SHAPES))
def test_against_the_simulator(client: openai.OpenAI, name: str) -> None:
    run_matrix(client, "sim-strong", SHAPES[name], ["sim-strong", "sim-medium"])


# --- against a real llama.cpp server -------------------------------------------------------------

N_CTX = 2048


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    tmp = tmp_path_factory.mktemp("llamacpp-differential")
    model_path = tmp / "tiny-llama-differential.gguf"
    write_tiny_gguf(model_path, n_ctx_train=N_CTX, stop_probability=0.25)
    with llamacpp_server(model_path, ctx_size=N_CTX * 4, parallel=4, log_dir=tmp) as server:
        yield server


@pytest.fixture(scope="module")
def llama_client(llama: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    proxy = Proxy.selfmoa(llama.base_url, log_path=tmp_path_factory.mktemp("llamacpp-differential-log") / "proxy.log")
    try:
        with proxy.client() as client:
            yield client
    finally:
        proxy.close()


# llama.cpp answers any model name with its one model, so an unknown model is no error there.
LLAMA_SHAPES = [name for name in SHAPES if name != "unknown model"]


@pytest.mark.parametrize("name", LLAMA_SHAPES)
def test_against_llamacpp(llama: LlamaServer, llama_client: openai.OpenAI, name: str) -> None:
    run_matrix(llama_client, llama.model, SHAPES[name], [llama.model, "second-name"])


# --- a plain model through the proxy is the model itself ---------------------------------------------


def plain_reply(client: openai.OpenAI, model: str, stream: bool) -> Any:
    fields: dict[str, Any] = {"model": model, "messages": BAKER, "temperature": 0, "seed": 1, "max_tokens": 12}
    if stream:
        return [c.model_dump() for c in client.chat.completions.create(
            **fields, stream=True, stream_options={"include_usage": True})]
    return client.chat.completions.with_raw_response.create(**fields).http_response.json()


def test_a_plain_reply_through_the_proxy_is_the_backends(llama: LlamaServer, llama_client: openai.OpenAI) -> None:
    """Greedy decoding: the same request gives the same reply, directly or through `selfmoa serve`."""
    with openai.OpenAI(base_url=llama.base_url, api_key="unused", max_retries=0, timeout=60) as direct:
        mine, theirs = plain_reply(llama_client, llama.model, False), plain_reply(direct, llama.model, False)
    assert set(mine) == set(theirs) and mine["choices"][0]["message"] == theirs["choices"][0]["message"]
    counted = ("prompt_tokens", "completion_tokens", "total_tokens")  # what the cache served differs by turn
    assert {k: mine["usage"][k] for k in counted} == {k: theirs["usage"][k] for k in counted}


def test_a_plain_stream_through_the_proxy_has_the_backends_chunks(llama: LlamaServer,
                                                                   llama_client: openai.OpenAI) -> None:
    with openai.OpenAI(base_url=llama.base_url, api_key="unused", max_retries=0, timeout=60) as direct:
        mine, theirs = plain_reply(llama_client, llama.model, True), plain_reply(direct, llama.model, True)
    assert len(mine) == len(theirs) > 3  # chunk for chunk, not one chunk at the end
    assert [c["choices"] for c in mine] == [c["choices"] for c in theirs]
    assert mine[-1]["usage"]["completion_tokens"] == theirs[-1]["usage"]["completion_tokens"]
