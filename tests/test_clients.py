"""The clients people use parse every reply of our approaches, usage included: the openai SDK
(sync, async, streaming) and LiteLLM (which LangChain and many agent stacks sit on)."""

from __future__ import annotations

import asyncio

import litellm
import openai

from selfmoa.testing.live import CLIENT_KEY, Proxy
from tests.conversations import BAKER

MODEL = "self_moa-sim-strong"


def test_openai_sync(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=BAKER)  # type: ignore[arg-type]
    assert reply.choices[0].message.content and reply.usage and reply.usage.prompt_tokens > 0


def test_openai_async_and_async_streaming(proxy: Proxy) -> None:
    async def both() -> tuple[openai.types.chat.ChatCompletion, list[openai.types.chat.ChatCompletionChunk]]:
        async with openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
            whole = await client.chat.completions.create(model=MODEL, messages=BAKER)  # type: ignore[arg-type]
            stream = await client.chat.completions.create(model=MODEL, messages=BAKER, stream=True,  # type: ignore
                                                          stream_options={"include_usage": True})
            return whole, [chunk async for chunk in stream]

    whole, chunks = asyncio.run(both())
    assert whole.usage and whole.usage.total_tokens > 0
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage and chunks[-1].usage.prompt_tokens > 0


def test_openai_stream_helper_accumulates_the_answer(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model=MODEL, messages=BAKER,  # type: ignore[arg-type]
                                        stream_options={"include_usage": True}) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content and final.usage and final.usage.completion_tokens > 0


def test_litellm(proxy: Proxy) -> None:
    reply = litellm.completion(model=f"openai/{MODEL}", messages=BAKER, api_base=f"{proxy.url}/v1",
                               api_key=CLIENT_KEY, num_retries=0)
    assert reply.choices[0].message.content  # type: ignore[union-attr]
    usage = reply.usage  # type: ignore[attr-defined]
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0 and usage.total_tokens > usage.prompt_tokens


def test_litellm_streaming_with_usage(proxy: Proxy) -> None:
    chunks = list(litellm.completion(model=f"openai/{MODEL}", messages=BAKER, api_base=f"{proxy.url}/v1",
                                     api_key=CLIENT_KEY, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # type: ignore[union-attr]
    assert text
    usages = [c.usage for c in chunks if getattr(c, "usage", None)]  # type: ignore[union-attr]
    assert usages and usages[-1].prompt_tokens > 0
