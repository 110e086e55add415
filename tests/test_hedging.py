"""Hedged calls: a proposal or aggregation call that has not answered when it should have is raced
by an identical call; the first usable answer wins, the other is cancelled (no retry of it goes
out), and the process races at most a share of its calls in flight.

Counted, not timed: the races here wait at least a second for a call that the fake backend answers
at once or never (a hung call ends at its own timeout, as a real client's does), so a slow machine
cannot start a race these tests do not expect.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from selfmoa.answering import prepare
from selfmoa.approaches import (
    AnswerDelta,
    BackendMemory,
    Caller,
    Deadline,
    Done,
    Hedging,
    NotEnoughProposals,
    RetryPolicy,
    run,
    run_moa,
)
from selfmoa.config import ServerConfig, load_server_config, plan
from selfmoa.runtime import Runtime
from selfmoa.scope import RequestScope
from selfmoa.validation import ConfigError
from tests.conftest import events_of, make_caller, make_recipe
from tests.fakes import Call, FakeBackend, default_script, hang, later, status_error

USER = [{"role": "user", "content": "What is 6 x 7?"}]
RACE = Hedging(min_delay=1.0, after_share=0.1)  # with a 10 s deadline: race after 1 s on the wire


class Calls:
    """The calls of one kind a script has seen, numbered in order of arrival."""

    def __init__(self) -> None:
        self.seen: list[Call] = []

    def add(self, call: Call) -> int:
        self.seen.append(call)
        return len(self.seen)


def test_a_hung_n_call_is_raced_and_its_samples_count_once() -> None:
    proposals = Calls()

    def script(call: Call) -> Any:
        if call.kind == "propose" and proposals.add(call) == 1:
            return hang(call)
        return default_script(call)

    caller = make_caller(FakeBackend(script), hedging=RACE)
    outcome = run_moa(make_recipe(samples=5), USER, caller)
    first, raced = proposals.seen
    assert (first.n, raced.n) == (5, 5)
    assert (raced.messages, raced.params) == (first.messages, first.params)  # an identical call
    assert len(outcome.proposals) == 5 and not outcome.failures  # its samples count once
    assert caller.raced == 1 and outcome.calls == 3  # the n call, its race, the aggregation


def test_a_hung_fan_out_call_is_raced() -> None:
    singles = Calls()

    def script(call: Call) -> Any:
        if call.kind == "propose":
            if call.n > 1:
                raise status_error(400, "n must be 1 for this model", param="n")
            if singles.add(call) == 2:
                return hang(call)
        return default_script(call)

    caller = make_caller(FakeBackend(script), hedging=RACE)
    outcome = run_moa(make_recipe(samples=4), USER, caller)
    assert len(singles.seen) == 5  # four single calls where n is refused, one of them raced
    assert len(outcome.proposals) == 4 and caller.raced == 1


def test_raced_calls_stop_at_the_requests_budget() -> None:
    singles = Calls()

    def script(call: Call) -> Any:
        if call.kind == "propose":
            if call.n > 1:
                raise status_error(400, "n must be 1 for this model", param="n")
            if singles.add(call) <= 4:
                return hang(call)  # every first attempt hangs
        return default_script(call)

    caller = make_caller(FakeBackend(script), timeout=4, hedging=Hedging(min_delay=1.0, after_share=0.1, max_extra=2))
    outcome = run_moa(make_recipe(samples=4), USER, caller)
    assert caller.raced == 2 and len(singles.seen) == 6  # 4 calls, 2 races: the budget
    assert len(outcome.proposals) == 2 and len(outcome.failures) == 2


def test_without_hedging_a_hung_n_call_loses_every_sample_and_says_which_phase_ran_out() -> None:
    client = FakeBackend(lambda call: hang(call) if call.kind == "propose" else default_script(call))
    with pytest.raises(NotEnoughProposals) as raised:
        run_moa(make_recipe(samples=3), USER, make_caller(client, timeout=1.5, hedging=Hedging(enabled=False)))
    assert len(client.calls) == 1
    assert raised.value.status == 504 and "the proposal phase ran out of time" in str(raised.value)


def test_a_call_waiting_out_retry_after_is_not_raced() -> None:
    aggregations = Calls()

    def script(call: Call) -> Any:
        if call.kind == "aggregate" and aggregations.add(call) == 1:
            raise status_error(429, "slow down", headers={"Retry-After": "2"})
        return default_script(call)

    caller = make_caller(FakeBackend(script), hedging=Hedging(min_delay=0.5, after_share=0.05))
    outcome = run_moa(make_recipe(samples=2), USER, caller)
    assert outcome.text == "synthesis of 2"
    assert len(aggregations.seen) == 2 and caller.raced == 0  # the 429 and its retry 2 s later: no race between


def test_the_loser_is_cancelled_once_the_race_is_won() -> None:
    aggregations = Calls()

    async def fails_late(call: Call) -> list[str]:
        await asyncio.sleep(5)
        raise status_error(500, "failed after the race was won")  # a retry would follow at once

    def script(call: Call) -> Any:
        if call.kind == "aggregate" and aggregations.add(call) == 1:
            return fails_late(call)
        return default_script(call)

    client = FakeBackend(script)
    caller = make_caller(client, hedging=RACE)
    caller.retry = RetryPolicy(base=0.01)
    outcome = run_moa(make_recipe(samples=2), USER, caller)
    assert outcome.text == "synthesis of 2" and len(aggregations.seen) == 2
    assert aggregations.seen[0].cancelled and not aggregations.seen[1].cancelled  # its connection closed
    assert outcome.calls == len(client.calls)  # what the log line counts is what the backend saw


def test_a_hung_streamed_aggregation_is_raced() -> None:
    aggregations = Calls()

    def script(call: Call) -> Any:
        if call.kind == "aggregate" and aggregations.add(call) == 1:
            return hang(call)
        return default_script(call)

    events = events_of(make_recipe(samples=3), USER, make_caller(FakeBackend(script), hedging=RACE))
    text = "".join(e.delta.content or "" for e in events if isinstance(e, AnswerDelta))
    assert text == "synthesis of 3" and isinstance(events[-1], Done)
    assert len(aggregations.seen) == 2 and all(c.stream for c in aggregations.seen)


def test_proposal_calls_may_use_the_time_the_aggregation_would_have_had() -> None:
    def slow(call: Call) -> Any:
        if call.kind == "propose":
            return later(2.0, default_script(call))  # past the proposals' share (60% of 3 s), not the deadline
        return default_script(call)

    client = FakeBackend(slow)
    outcome = run_moa(make_recipe(samples=3), USER, make_caller(client, timeout=3, hedging=Hedging(enabled=False)))
    assert len(outcome.proposals) == 3 and outcome.text == "synthesis of 3"
    assert client.of_kind("propose")[0].timeout > 0.6 * 3  # its timeout is the request's, not the share's


def test_the_usual_answer_time_of_the_same_shape_of_call_decides() -> None:
    """`after_share: 1` never races by the share (the whole time left): only the usual time can."""
    only_usual = Hedging(after_usual=3.0, after_share=1.0, min_delay=0.1)
    memory = BackendMemory()
    for _ in range(3):
        memory.answered(("default", "m", "proposal n=5"), 0.1)  # n=5 proposals usually answer in 0.1 s
    proposals = Calls()

    def first_hangs(call: Call) -> Any:
        if call.kind == "propose" and proposals.add(call) == 1:
            return hang(call)
        return default_script(call)

    caller = make_caller(FakeBackend(first_hangs), memory=memory, hedging=only_usual)
    assert len(run_moa(make_recipe(samples=5), USER, caller).proposals) == 5 and caller.raced == 1

    memory = BackendMemory()
    for _ in range(3):
        memory.answered(("default", "m", "aggregation n=1"), 0.01)  # fast aggregations say nothing of proposals

    def slow(call: Call) -> Any:
        if call.kind == "propose":
            return later(1.0, default_script(call))
        return default_script(call)

    caller = make_caller(FakeBackend(slow), memory=memory, hedging=only_usual)
    assert len(run_moa(make_recipe(samples=5), USER, caller).proposals) == 5 and caller.raced == 0


def test_a_loaded_backend_is_not_sent_duplicates_beyond_the_processs_share() -> None:
    """Every call slow at once (the backend is loaded): ten runs in flight, each of whose calls
    would be raced after a second; the process races at most `max_share` of its calls in flight."""
    def loaded(call: Call) -> Any:
        return later(1.5, default_script(call))

    async def ten_runs(share: float) -> int:
        memory, backend = BackendMemory(), FakeBackend(loaded)
        policy = Hedging(min_delay=1.0, after_share=0.1, max_share=share)
        callers = [Caller({"default": backend}, memory, Deadline(10), hedging=policy) for _ in range(10)]
        await asyncio.gather(*(run(make_recipe(samples=2), USER, caller) for caller in callers))
        assert memory.in_flight == 0 and memory.raced_in_flight == 0  # every call accounted for at its end
        return sum(caller.raced for caller in callers)

    assert asyncio.run(ten_runs(share=1.0)) >= 10  # unthrottled: every slow proposal raced
    assert asyncio.run(ten_runs(share=0.2)) <= 4  # 20% of the ten calls in flight, then of the aggregations


def test_the_process_share_of_raced_calls() -> None:
    memory = BackendMemory()
    assert memory.take_race(0.2) and not memory.take_race(0.2)  # one raced call is always allowed
    memory.in_flight = 20
    assert memory.take_race(0.2) and memory.take_race(0.2) and memory.take_race(0.2)
    assert not memory.take_race(0.2)  # 4 of 20
    memory.race_over()
    assert memory.take_race(0.2)


def test_the_delay_before_a_race() -> None:
    policy = Hedging(after_usual=3.0, after_share=0.5, min_delay=0.5)
    assert policy.delay(None, time_left=10.0) == 5.0  # nothing remembered yet: half the time left
    assert policy.delay(1.0, time_left=10.0) == 3.0  # three times the usual answer time
    assert policy.delay(4.0, time_left=10.0) == 5.0  # ... but at the latest half the time left
    assert policy.delay(0.01, time_left=10.0) == 0.5  # never sooner than min_delay


# --- the server's settings -----------------------------------------------------------------------


def test_the_servers_hedging_settings_reach_each_requests_calls(tmp_path: Path) -> None:
    path = tmp_path / "selfmoa.yaml"
    path.write_text("hedging: {after_usual: 5, after_share: 0.25, min_delay: 2, max_extra_calls: 3}\n")
    server = load_server_config(path)
    job = prepare("self_moa", "m", {}, USER, {"default": FakeBackend()}, Runtime(server, BackendMemory(), ()),
                  RequestScope())
    assert job.caller.hedging == Hedging(after_usual=5, after_share=0.25, min_delay=2, max_extra=3)
    path.write_text("hedging: {max_share: 0.5}\n")
    assert plan("self_moa", "m", {}, USER, load_server_config(path)).hedging.max_share == 0.5
    path.write_text("hedging: {enabled: false}\n")
    assert not plan("self_moa", "m", {}, USER, load_server_config(path)).hedging.enabled


@pytest.mark.parametrize("body,budget", [
    ({"moa": {"samples": 2}}, 4),  # 3 planned calls: max_extra_calls (4) fits under the cap of 10
    ({"moa": {"samples": 6}}, 3),  # 6 proposals and an aggregation planned: room for 3 raced calls
    ({"moa": {"samples": 8}}, 0),  # 8 proposals and up to 2 aggregation rounds fill the cap: no race
    ({"moa": {"samples": 3}, "n": 2}, 1),  # two runs of 4 planned calls: 1 raced call each
])
def test_raced_calls_count_against_the_calls_cap(body: dict[str, Any], budget: int) -> None:
    hedging = plan("self_moa", "m", body, USER, ServerConfig.model_validate({"caps": {"calls": 10}})).hedging
    assert hedging.max_extra == budget and hedging.enabled == (budget > 0)


@pytest.mark.parametrize("settings,field", [
    ({"after_share": 2}, "hedging.after_share"),
    ({"after_usual": 0.5}, "hedging.after_usual"),
    ({"min_delay": -1}, "hedging.min_delay"),
    ({"max_extra_calls": -1}, "hedging.max_extra_calls"),
    ({"max_share": 0}, "hedging.max_share"),
    ({"enabled": "yes"}, "hedging.enabled"),
    ({"racing": True}, "hedging.racing"),
])
def test_bad_hedging_settings_name_the_field(tmp_path: Path, settings: dict[str, Any], field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"hedging": settings}))
    with pytest.raises(ConfigError) as refused:
        load_server_config(path)
    assert refused.value.field == f"{path}.{field}"
