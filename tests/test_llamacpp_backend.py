"""What a real third-party OpenAI-compatible backend does: llama.cpp's server (from the
``xllamacpp`` wheel) serving a tiny GGUF model written by the test itself.

These tests pin the behaviour that the approaches rely on or must work around:

* ``n`` is honoured for chat completions, but only up to the server's slot count
  (``--parallel``); a larger ``n`` is a 400 ``invalid_request_error``, not a silent shortfall.
* With ``n > 1`` the ``usage`` block counts the completion tokens of choice 0 only, not the sum.
* A prompt that does not fit one slot's context is a 400 ``exceed_context_size_error`` carrying
  ``n_prompt_tokens`` and ``n_ctx``; a prompt that fits but leaves less room than
  ``max_tokens`` is not an error: the completion is cut at the context end with
  ``finish_reason == "length"``.
* ``max_tokens`` / ``max_completion_tokens`` are honoured exactly, with ``finish_reason ==
  "length"``.
* Any model name is accepted; answers carry the served alias.

Skipped when ``xllamacpp`` / ``gguf`` are not installed (``requirements/llamacpp.txt``).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

# find_spec, not import: the native library is only loaded in the server's child process.
import openai
import pytest

from selfmoa.testing.llamacpp import LlamaServer, llamacpp_server, write_tiny_gguf  # noqa: E402

PARALLEL = 4
MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    tmp = tmp_path_factory.mktemp("llamacpp")
    model_path = tmp / "tiny-llama.gguf"
    alias = write_tiny_gguf(model_path, n_ctx_train=256)
    with llamacpp_server(model_path, ctx_size=512, parallel=PARALLEL, log_dir=tmp) as server:
        assert server.model == alias
        yield server


@pytest.fixture(scope="module")
def client(llama: LlamaServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=llama.base_url, api_key="unused", max_retries=0,
                       timeout=30.0) as c:
        yield c


def test_server_is_loopback_and_reports_its_context(llama: LlamaServer) -> None:
    assert llama.base_url.startswith("http://127.0.0.1:") and llama.base_url.endswith("/v1")
    # Slots are not unified: each gets ctx_size / parallel rounded up to a multiple of 256,
    # capped at the model's training context: min(256, roundup(512 / 4, 256)) = 256 here.
    assert llama.n_ctx == 256
    slots = llama.get_json("/slots")
    assert [s["n_ctx"] for s in slots] == [256] * PARALLEL


def test_models_endpoint_lists_the_alias(llama: LlamaServer, client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [llama.model]
    assert models[0].owned_by == "llamacpp"


def test_chat_completion_returns_text_and_usage(llama: LlamaServer,
                                                client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model=llama.model, messages=MESSAGES, max_tokens=12)
    assert resp.object == "chat.completion"
    assert resp.model == llama.model
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.message.content.isascii()
    usage = resp.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens == 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_any_model_name_is_accepted_and_answered_as_the_alias(llama: LlamaServer,
                                                              client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=2)
    assert resp.model == llama.model
    assert resp.choices[0].message.content


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_is_honoured_with_finish_reason_length(llama: LlamaServer,
                                                          client: openai.OpenAI,
                                                          field: str) -> None:
    resp = client.chat.completions.create(model=llama.model, messages=MESSAGES,
                                          **{field: 5})
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 5


def test_stop_string_gives_finish_reason_stop(llama: LlamaServer,
                                              client: openai.OpenAI) -> None:
    # The tiny model emits printable ASCII at random; over 200 tokens at temperature 1 it is
    # all but certain to produce one of these letters, and the stop string is not returned.
    resp = client.chat.completions.create(model=llama.model, messages=MESSAGES,
                                          max_tokens=200, temperature=1.0, seed=1,
                                          stop=["a", "e", "o"])
    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    assert not set("aeo") & set(choice.message.content or "")


def test_n_is_honoured_up_to_the_slot_count(llama: LlamaServer,
                                            client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model=llama.model, messages=MESSAGES, max_tokens=8,
                                          n=3, temperature=0.7, seed=3)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in resp.choices)
    assert all(c.message.content for c in resp.choices)
    # Samples differ: choice i is sampled with seed + i.
    assert len({c.message.content for c in resp.choices}) > 1
    # usage counts choice 0 only: 8, not 3 * 8. Callers that sum tokens must not trust it.
    assert resp.usage is not None and resp.usage.completion_tokens == 8


def test_n_equal_to_slot_count_is_accepted(llama: LlamaServer, client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model=llama.model, messages=MESSAGES, max_tokens=3,
                                          n=PARALLEL)
    assert len(resp.choices) == PARALLEL


@pytest.mark.parametrize("n", [PARALLEL + 2, 0])
def test_n_outside_1_to_slot_count_is_refused(llama: LlamaServer, client: openai.OpenAI,
                                              n: int) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=llama.model, messages=MESSAGES, max_tokens=3, n=n)
    err = info.value
    assert err.status_code == 400
    assert err.type == "invalid_request_error"
    assert err.body == {
        "code": 400,
        "type": "invalid_request_error",
        "message": f"Field 'n': Value must be between 1 <= value <= {PARALLEL}, but got {n}",
    }
    assert err.response.json() == {"error": err.body}


def test_prompt_over_the_context_is_a_400_exceed_context_size_error(
        llama: LlamaServer, client: openai.OpenAI) -> None:
    # The vocabulary has no multi-letter piece for "x": one token per character.
    long_prompt = [{"role": "user", "content": "x" * (llama.n_ctx + 50)}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=llama.model, messages=long_prompt, max_tokens=4)
    err = info.value
    assert err.status_code == 400
    assert err.type == "exceed_context_size_error"
    body = err.body
    assert isinstance(body, dict)
    assert body["code"] == 400
    assert body["n_ctx"] == llama.n_ctx
    assert body["n_prompt_tokens"] > llama.n_ctx
    assert body["message"] == (
        f"request ({body['n_prompt_tokens']} tokens) exceeds the available context size "
        f"({llama.n_ctx} tokens), try increasing it")
    # The wire shape: OpenAI's {"error": {...}} envelope with llama.cpp's extra fields.
    assert err.response.json() == {"error": body}


def test_prompt_filling_the_context_exactly_is_refused(llama: LlamaServer,
                                                       client: openai.OpenAI) -> None:
    # A prompt must leave room for at least one generated token.
    ok = client.chat.completions.create(
        model=llama.model, messages=[{"role": "user", "content": "x"}], max_tokens=1)
    overhead = ok.usage.prompt_tokens - 1  # template + BOS around a one-token message
    full = [{"role": "user", "content": "x" * (llama.n_ctx - overhead)}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=llama.model, messages=full, max_tokens=1)
    assert info.value.body["n_prompt_tokens"] == llama.n_ctx


def test_completion_is_cut_at_the_context_end_without_error(llama: LlamaServer,
                                                            client: openai.OpenAI) -> None:
    prompt = [{"role": "user", "content": "x" * (llama.n_ctx - 60)}]
    resp = client.chat.completions.create(model=llama.model, messages=prompt, max_tokens=100)
    assert resp.choices[0].finish_reason == "length"
    usage = resp.usage
    assert usage is not None
    assert usage.completion_tokens < 100
    assert usage.prompt_tokens + usage.completion_tokens == llama.n_ctx


def test_concurrent_single_requests_all_succeed(llama: LlamaServer,
                                                client: openai.OpenAI) -> None:
    # The fallback path for n > slots: k separate requests at once.
    def one(i: int) -> str:
        r = client.chat.completions.create(model=llama.model, messages=MESSAGES,
                                           max_tokens=6, temperature=0.7, seed=i)
        assert r.choices[0].finish_reason == "length"
        assert r.usage is not None and r.usage.completion_tokens == 6
        return r.choices[0].message.content or ""

    with concurrent.futures.ThreadPoolExecutor(max_workers=PARALLEL + 2) as pool:
        texts = list(pool.map(one, range(PARALLEL + 2)))
    assert len(texts) == PARALLEL + 2 and all(texts)


def test_streaming_with_n_interleaves_choices_and_sends_usage_per_choice(
        llama: LlamaServer, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=llama.model, messages=MESSAGES, max_tokens=4,
                                            n=2, stream=True,
                                            stream_options={"include_usage": True})
    text = {0: "", 1: ""}
    finish = {}
    usages = []
    with stream:
        for chunk in stream:
            if chunk.usage is not None:
                usages.append(chunk.usage.completion_tokens)
            for c in chunk.choices:
                text[c.index] += c.delta.content or ""
                if c.finish_reason:
                    finish[c.index] = c.finish_reason
    assert all(text.values())
    assert finish == {0: "length", 1: "length"}
    # One usage chunk per choice, each with that choice's own count.
    assert usages == [4, 4]
