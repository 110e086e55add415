"""Concurrent proposals: `n` batching, top-up, fallback remembered, dropped samples."""

from __future__ import annotations

import asyncio

from selfmoa.approaches import BackendMemory, Deadline, Proposer, run_moa
from selfmoa.approaches.sampling import propose
from tests.conftest import make_caller, make_recipe
from tests.fakes import Call, FakeBackend, default_script, later, status_error

USER = [{"role": "user", "content": "What is 6 x 7?"}]


def test_self_moa_is_one_n_call_then_one_aggregation(fake: FakeBackend) -> None:
    outcome = run_moa(make_recipe(samples=6), USER, make_caller(fake))
    assert [(c.kind, c.n) for c in fake.calls] == [("propose", 6), ("aggregate", 1)]
    assert len(fake.calls[1].candidates) == 6
    assert outcome.text == "synthesis of 6"
    assert outcome.calls == 2 and outcome.rounds == 1 and not outcome.sequential
    assert outcome.completion_tokens == 70  # 10 per choice, every call counted


def test_refused_n_falls_back_to_single_calls_and_is_remembered() -> None:
    def refuses_n(call: Call) -> list[str]:
        if call.n > 1:
            raise status_error(400, "n must be 1 for this model", param="n")
        return default_script(call)

    client, memory = FakeBackend(refuses_n), BackendMemory()
    first = asyncio.run(propose(make_caller(client, memory=memory), [Proposer("m", 4)], USER, {}, Deadline(5)))
    assert len(first.samples) == 4
    assert [c.n for c in client.calls] == [4, 1, 1, 1, 1]
    client.calls.clear()
    asyncio.run(propose(make_caller(client, memory=memory), [Proposer("m", 4)], USER, {}, Deadline(5)))
    assert [c.n for c in client.calls] == [1, 1, 1, 1]  # the refusal is not paid again


def test_short_n_is_topped_up_and_the_limit_remembered() -> None:
    def caps_at_two(call: Call) -> list[str]:
        return [f"s{i}" for i in range(min(call.n, 2))]

    client, memory = FakeBackend(caps_at_two), BackendMemory()
    batch = asyncio.run(propose(make_caller(client, memory=memory), [Proposer("m", 5)], USER, {}, Deadline(5)))
    assert len(batch.samples) == 5  # never padded with copies: every sample came from a call
    assert sorted(c.n for c in client.calls) == [1, 2, 5]
    client.calls.clear()
    asyncio.run(propose(make_caller(client, memory=memory), [Proposer("m", 5)], USER, {}, Deadline(5)))
    assert sorted(c.n for c in client.calls) == [1, 2, 2]


def test_empty_and_failed_samples_are_dropped_and_cut_off_ones_kept() -> None:
    def mixed(call: Call) -> list[object]:
        if call.model == "broken":
            raise status_error(404, "model not found")
        return ["good", "", ("cut sho", "length"), "<think>only thinking</think>"]

    client = FakeBackend(mixed)
    proposers = [Proposer("m", 4), Proposer("broken", 2)]
    batch = asyncio.run(propose(make_caller(client), proposers, USER, {}, Deadline(5)))
    assert [(s.text, s.candidate.cut_off) for s in batch.samples] == [("good", False), ("cut sho", True)]
    reasons = sorted(f.reason for f in batch.failures)
    assert reasons == ["HTTP 404: model not found"] * 2 + ["empty response"] * 2
    assert {f.status for f in batch.failures} == {404, None}


def test_reasoning_is_kept_out_of_candidates_unless_asked() -> None:
    client = FakeBackend(lambda c: default_script(c) if c.kind != "propose" else ["<think>scratch</think>42"] * c.n)
    run_moa(make_recipe(samples=2), USER, make_caller(client))
    assert client.of_kind("aggregate")[0].candidates == ["42", "42"]
    client.calls.clear()
    run_moa(make_recipe(samples=2, include_reasoning=True), USER, make_caller(client))
    assert client.of_kind("aggregate")[0].candidates == ["<think>scratch</think>42"] * 2


def test_mixed_proposers_are_sampled_concurrently_per_model() -> None:
    client = FakeBackend(delay=0.2)
    recipe = make_recipe(proposers=(Proposer("a", 3), Proposer("b", 3)), aggregator="a")
    run_moa(recipe, USER, make_caller(client))
    proposals = client.of_kind("propose")
    assert sorted((c.model, c.n) for c in proposals) == [("a", 3), ("b", 3)]
    assert proposals[1].started < proposals[0].ended  # both in flight at once


def test_proposers_sample_at_the_moa_temperature_and_max_tokens(fake: FakeBackend) -> None:
    recipe = make_recipe(samples=2, temperature=1.1, max_tokens=77, final_params={"temperature": 0.0, "seed": 5})
    run_moa(recipe, USER, make_caller(fake))
    proposal, aggregation = fake.calls
    assert proposal.params == {"temperature": 1.1, "max_tokens": 77}
    assert aggregation.params == {"temperature": 0.0, "seed": 5}


def test_multi_turn_conversation_and_system_prompt_reach_every_call(fake: FakeBackend) -> None:
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Pick a number."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Double it."},
    ]
    run_moa(make_recipe(samples=2), conversation, make_caller(fake))
    proposal, aggregation = fake.calls
    assert proposal.messages == conversation
    assert aggregation.messages[1:] == conversation[1:]  # placement: system
    assert aggregation.messages[0]["content"].startswith("You are terse.\n\n")


def test_a_refusal_that_states_the_largest_n_is_used_for_the_batches() -> None:
    def four_slots(call: Call) -> list[str]:  # llama.cpp's answer when n exceeds its slots
        if call.n > 4:
            raise status_error(400, "Field 'n': Value must be between 1 <= value <= 4, but got 6")
        return default_script(call)

    client = FakeBackend(four_slots)
    batch = asyncio.run(propose(make_caller(client), [Proposer("m", 6)], USER, {}, Deadline(5)))
    assert len(batch.samples) == 6
    assert sorted(c.n for c in client.calls) == [2, 4, 6]


def test_grace_applies_to_the_single_calls_of_a_backend_without_n() -> None:
    def slow_sixth(call: Call) -> list[str]:
        if call.n > 1:
            raise status_error(400, "n must be 1 for this model", param="n")
        slow_sixth.count += 1  # type: ignore[attr-defined]
        if slow_sixth.count == 6:  # type: ignore[attr-defined]
            return later(3, default_script(call))
        return default_script(call)

    slow_sixth.count = 0  # type: ignore[attr-defined]
    batch = asyncio.run(propose(make_caller(FakeBackend(slow_sixth)), [Proposer("m", 6)], USER, {}, Deadline(20),
                                enough=5, grace=0.2))
    assert len(batch.samples) == 5
    assert [f.reason for f in batch.failures] == ["abandoned: no answer in time"]
