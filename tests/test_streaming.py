"""True streaming: the final aggregation is relayed as the aggregator writes it (Seq: its last
round; `select`: the chosen candidate), in standard chunks, with a usage chunk when asked; an
error before the first byte is an HTTP status, after it an error event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from selfmoa.approaches import (
    AnswerDelta,
    Choice,
    Done,
    ProposalsArrived,
    StreamInterrupted,
    TransientError,
    moa_events,
)
from selfmoa.approaches.backend import Chunk, Delta
from selfmoa.testing.live import Proxy, SimLog
from tests.conftest import events_of, make_caller, make_recipe
from tests.conversations import BAKER, TOOLS
from tests.fakes import Call, FakeBackend, default_script


def stream(client: openai.OpenAI, model: str, **fields: object) -> list[ChatCompletionChunk]:
    chunks = list(client.chat.completions.create(model=model, messages=BAKER, stream=True, **fields))  # type: ignore
    for chunk in chunks:  # each one a standard chunk
        ChatCompletionChunk.model_validate(chunk.model_dump())
    return chunks


def content(chunks: list[ChatCompletionChunk], index: int = 0) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == index)


# --- over HTTP ---------------------------------------------------------------------------------


def test_the_answer_streams_as_the_aggregator_writes_it(client: openai.OpenAI, simlog: SimLog) -> None:
    chunks = stream(client, "self_moa-sim-strong")
    [aggregation] = simlog.of_kind("aggregate")
    assert aggregation["stream"] is True  # the aggregator itself was asked to stream...
    assert not any(c["stream"] for c in simlog.of_kind("propose"))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert content(chunks) == aggregation["outputs"][0] and len(pieces) > 3  # ...and is relayed piece by piece
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert {c.model for c in chunks} == {"self_moa-sim-strong"} and len({c.id for c in chunks}) == 1


def test_a_usage_chunk_when_asked(client: openai.OpenAI, simlog: SimLog) -> None:
    chunks = stream(client, "self_moa-sim-strong", stream_options={"include_usage": True})
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    calls = simlog.calls()
    assert usage.prompt_tokens == sum(c["prompt_tokens"] for c in calls)
    assert usage.completion_tokens == sum(c["completion_tokens"] for c in calls)
    assert all(c.usage is None for c in stream(client, "self_moa-sim-strong"))


def test_seq_streams_its_last_round(client: openai.OpenAI, simlog: SimLog) -> None:
    chunks = stream(client, "self_moa_seq-sim-strong", extra_body={"moa": {"samples": 12}})
    aggregations = simlog.of_kind("aggregate")
    assert [a["stream"] for a in aggregations] == [False, False, True]
    assert content(chunks) == aggregations[-1]["outputs"][0]


def test_select_streams_the_chosen_candidate(client: openai.OpenAI, simlog: SimLog) -> None:
    chunks = stream(client, "self_moa-sim-strong", extra_body={"moa": {"mode": "select"}})
    [choosing] = simlog.of_kind("select")
    assert choosing["stream"] is False
    assert content(chunks) in simlog.of_kind("propose")[0]["outputs"]


def test_a_streamed_tool_call(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="self_moa-sim-strong", messages=[{"role": "user", "content": "use get_weather for Paris"}],
        tools=TOOLS, stream=True))  # type: ignore[arg-type]
    fragments = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert fragments and fragments[0].function and fragments[0].function.name == "get_weather"
    arguments = "".join(f.function.arguments or "" for f in fragments if f.function)
    assert arguments == '{"city": "Paris"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_n_choices_stream_side_by_side(client: openai.OpenAI) -> None:
    chunks = stream(client, "self_moa-sim-strong", n=2)
    assert content(chunks, 0) and content(chunks, 1)
    finishes = {c.choices[0].index: c.choices[0].finish_reason
                for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finishes == {0: "stop", 1: "stop"}


def test_the_trace_rides_on_the_finish_chunk(client: openai.OpenAI) -> None:
    chunks = stream(client, "self_moa-sim-strong", extra_body={"moa": {"trace": True}})
    [last] = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(last.model_extra["selfmoa"]["proposals"]) == 6  # type: ignore[index]


def test_a_fallback_answer_is_streamed_too(client: openai.OpenAI, simlog: SimLog) -> None:
    simlog.patch({"sim-blank": {"rate_empty": 1.0}})
    chunks = stream(client, "self_moa-sim-strong", extra_body={"moa": {"aggregator": "sim-blank", "samples": 2}})
    assert content(chunks) in simlog.of_kind("propose")[0]["outputs"]


def test_an_error_after_the_first_byte_is_an_error_event(proxy: Proxy, simlog: SimLog) -> None:
    simlog.patch({"sim-cut": {"rate_stream_cut": 1.0}})
    body = {"model": "self_moa-sim-strong", "messages": BAKER, "stream": True,
            "moa": {"aggregator": "sim-cut", "samples": 2}}
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        events = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert any('"content": "' in event and '"content": ""' not in event for event in events[:-1])  # part of it...
    assert '"error"' in events[-1] and "sim-cut" in events[-1]  # ...then the error, and the end
    assert "[DONE]" not in events
    with pytest.raises(openai.APIError, match="broke off"):
        list(proxy.client().chat.completions.create(model="self_moa-sim-strong", messages=BAKER, stream=True,  # type: ignore
                                                    extra_body={"moa": {"aggregator": "sim-cut", "samples": 2}}))


# --- the core's events -------------------------------------------------------------------------

USER = [{"role": "user", "content": "hi"}]


def answer_of(events: list[object]) -> tuple[str, Choice]:
    text = "".join(e.delta.content or "" for e in events if isinstance(e, AnswerDelta))
    [done] = [e for e in events if isinstance(e, Done)]
    return text, done.outcome.answer


def test_streamed_deltas_add_up_to_the_answer() -> None:
    backend = FakeBackend(lambda c: default_script(c) if c.kind == "propose" else ["one two three"])
    text, answer = answer_of(events_of(make_recipe(samples=2), USER, make_caller(backend)))
    assert text == answer.content == "one two three"
    assert [c.stream for c in backend.calls] == [False, True]


def test_without_stream_no_deltas() -> None:
    events = events_of(make_recipe(samples=2), USER, make_caller(FakeBackend()), stream=False)
    assert not any(isinstance(e, AnswerDelta) for e in events) and isinstance(events[-1], Done)


def test_an_empty_streamed_aggregation_is_asked_again_and_never_relayed() -> None:
    replies = iter(["", "second try"])
    backend = FakeBackend(lambda c: default_script(c) if c.kind == "propose" else [next(replies)])
    text, answer = answer_of(events_of(make_recipe(samples=2), USER, make_caller(backend)))
    assert text == answer.content == "second try"


class Breaking(FakeBackend):
    """Streams two pieces of the aggregation, then the connection drops."""

    @asynccontextmanager
    async def stream(self, model: str, messages: object, params: object, *,  # type: ignore[override]
                     timeout: float, headers: object = None) -> AsyncIterator[AsyncIterator[Chunk]]:
        self.calls.append(Call(model=model, messages=list(messages), n=1, params={}, stream=True))  # type: ignore

        async def chunks() -> AsyncIterator[Chunk]:
            yield Chunk(deltas=[Delta(content="half ")])
            yield Chunk(deltas=[Delta(content="an answer")])
            raise TransientError("m", "connection dropped")
        yield chunks()


def test_a_stream_that_breaks_after_output_cannot_fall_back() -> None:
    seen: list[object] = []

    async def read() -> None:
        async for event in moa_events(make_recipe(samples=2), USER, make_caller(Breaking()), stream=True):
            seen.append(event)

    with pytest.raises(StreamInterrupted):
        asyncio.run(read())
    assert "".join(e.delta.content or "" for e in seen if isinstance(e, AnswerDelta)) == "half an answer"


def test_a_run_abandoned_by_its_reader_stops_its_calls() -> None:
    """The reader (a client that hung up) goes away after the proposals: the aggregation in
    flight is cancelled, and nothing more goes out."""
    async def slow_aggregation(call: Call) -> list[str]:
        await asyncio.sleep(30)
        return ["too late"]

    backend = FakeBackend(lambda c: default_script(c) if c.kind == "propose" else slow_aggregation(c))

    async def read_then_leave() -> None:
        events = moa_events(make_recipe(samples=2), USER, make_caller(backend), stream=True)
        async for event in events:
            if isinstance(event, ProposalsArrived):
                await asyncio.sleep(0.1)  # the aggregation is on the wire
                break
        await events.aclose()

    asyncio.run(asyncio.wait_for(read_then_leave(), 10))
    assert [c.kind for c in backend.calls] == ["propose", "aggregate"]
    assert backend.calls[1].cancelled
