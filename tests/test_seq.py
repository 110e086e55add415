"""Self-MoA-Seq: round counts, the bounded prompt, overlap, and the automatic switch to Seq."""

from __future__ import annotations

import logging
import math
import threading
import time

import pytest

from selfmoa.approaches import Proposer, rounds_needed, run_moa
from selfmoa.approaches.seq import windows
from tests.conftest import make_caller, make_recipe
from tests.fakes import Call, FakeBackend, default_script, status_error

USER = [{"role": "user", "content": "Summarise the plot of Hamlet."}]


@pytest.mark.parametrize("samples,window,slots", [(6, 6, 3), (7, 6, 3), (12, 6, 3), (30, 6, 3), (20, 4, 1), (9, 5, 2)])
def test_rounds_and_prompt_bound(samples: int, window: int, slots: int) -> None:
    client = FakeBackend()
    recipe = make_recipe(samples=samples, sequential=True, window=window, synthesis_slots=slots)
    outcome = run_moa(recipe, USER, make_caller(client))
    expected = 1 + math.ceil(max(0, samples - window) / (window - slots))
    aggregations = client.of_kind("aggregate")
    assert outcome.rounds == rounds_needed(samples, window, slots) == expected == len(aggregations)
    assert all(len(a.candidates) <= window for a in aggregations)
    assert len(aggregations[0].candidates) == min(window, samples)
    assert sum(c.n for c in client.of_kind("propose")) == samples
    for previous, later in zip(aggregations, aggregations[1:]):
        carried = later.candidates[:slots]
        assert carried == [f"synthesis of {len(previous.candidates)}"] * slots  # the running synthesis, repeated


def test_windows_split_mixed_proposers_in_order() -> None:
    chunks = windows([Proposer("m", 4), Proposer("d", 5)], window=6, synthesis_slots=3)
    assert [[(p.model, p.samples) for p in c] for c in chunks] == [[("m", 4), ("d", 2)], [("d", 3)]]


def test_sampling_of_later_windows_overlaps_aggregation_of_earlier_ones() -> None:
    def slow(call: Call) -> list[str]:
        time.sleep(0.3 if call.kind == "aggregate" else 0.1)
        return default_script(call)

    client = FakeBackend(slow)
    run_moa(make_recipe(samples=12, sequential=True), USER, make_caller(client))
    first_round = client.of_kind("aggregate")[0]
    last_window = client.of_kind("propose")[-1]
    assert last_window.started < first_round.ended


def test_a_round_whose_samples_all_failed_is_skipped() -> None:
    failed = threading.Event()  # windows are sampled concurrently: fail whichever 3-sample window asks first

    def a_later_window_fails(call: Call) -> list[str]:
        if call.kind == "propose" and call.n == 3 and not failed.is_set():
            failed.set()
            raise status_error(404, "gone")
        return default_script(call)

    client = FakeBackend(a_later_window_fails)
    outcome = run_moa(make_recipe(samples=12, sequential=True), USER, make_caller(client))
    assert len(outcome.failures) == 3 and len(outcome.proposals) == 9
    assert outcome.rounds == 2


def test_one_shot_switches_to_seq_when_over_the_context_budget(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="selfmoa")
    client = FakeBackend(lambda c: default_script(c) if c.kind != "propose" else ["x" * 400] * c.n)
    recipe = make_recipe(samples=12, context_budget=700)
    outcome = run_moa(recipe, USER, make_caller(client))
    assert outcome.sequential and outcome.rounds > 1
    assert all(len(a.candidates) * 100 < 700 for a in client.of_kind("aggregate"))
    assert "switching to Seq" in caplog.text
    within = run_moa(make_recipe(samples=12, context_budget=100_000), USER, make_caller(FakeBackend()))
    assert not within.sequential


def test_one_shot_switches_to_seq_when_the_backend_says_too_long() -> None:
    def small_context(call: Call) -> list[str]:
        if call.kind == "aggregate" and len(call.candidates) > 4:
            raise status_error(400, "maximum context length is 600 tokens", code="context_length_exceeded")
        return default_script(call)

    client = FakeBackend(small_context)
    outcome = run_moa(make_recipe(samples=8), USER, make_caller(client))
    assert outcome.sequential
    assert [len(a.candidates) for a in client.of_kind("aggregate")] == [8, 4, 4, 4]


def test_the_seq_window_narrows_until_rounds_fit() -> None:
    def three_fit(call: Call) -> list[str]:
        if call.kind == "aggregate" and len(call.candidates) > 3:
            raise status_error(400, "request exceeds the available context size", code="exceed_context_size_error")
        return default_script(call)

    client = FakeBackend(three_fit)
    outcome = run_moa(make_recipe(samples=12), USER, make_caller(client))
    sizes = [len(a.candidates) for a in client.of_kind("aggregate")]
    assert outcome.sequential and sizes[0] == 12 and sizes[-1] <= 3
    assert all(size <= 3 for size in sizes[sizes.index(3):])


def test_a_synthesis_cut_off_at_its_limit_is_marked_so_to_the_next_round() -> None:
    rounds = iter([("first synthesis, cut sh", "length"), "second synthesis"])
    client = FakeBackend(lambda c: default_script(c) if c.kind == "propose" else [next(rounds)])
    outcome = run_moa(make_recipe(samples=9, sequential=True), USER, make_caller(client))
    second = client.of_kind("aggregate")[1]
    assert second.prompt.count('<candidate id="1" cut_off="true">\nfirst synthesis, cut sh') == 1
    assert second.prompt.count('cut_off="true">') == 3  # the three synthesis slots
    assert outcome.text == "second synthesis"


def test_a_round_that_gives_nothing_usable_ends_with_the_last_synthesis() -> None:
    rounds = iter(["first synthesis", "", ""])
    client = FakeBackend(lambda c: default_script(c) if c.kind == "propose" else [next(rounds)])
    outcome = run_moa(make_recipe(samples=9, sequential=True), USER, make_caller(client))
    assert outcome.text == "first synthesis" and outcome.rounds == 1
    assert outcome.fallback is not None and "previous round's synthesis" in outcome.fallback
