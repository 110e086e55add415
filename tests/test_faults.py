"""Fault injection through a real `selfmoa serve` and the simulator: retries, deadlines, dropped
samples, adapted parameters and the errors a client gets when nothing usable remains.

This module runs its own simulator and proxy (its own server YAML, fault models patched in), so
the call log and the fault draws are its own: after `/sim/reset`, a sequence of sequential calls
draws the same faults on every run. No assertion is about speed. Deadlines are checked as upper
bounds with a generous margin (`MARGIN`, for process start-up, scheduling and HTTP overhead on a
slow machine); the Retry-After check is a lower bound, which a slow machine only makes easier.
Throughput and latency figures live in `benchmarks/reliability.py`, not here.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from selfmoa.sim import BackgroundSim
from selfmoa.testing.live import CLIENT_KEY, Proxy, SimLog, free_port

MARGIN = 3.0  # seconds allowed past a deadline before a test calls it outlived (see module docstring)
UPSTREAM_KEY = "sk-upstream-secret-0123456789"  # what selfmoa.testing.live.Proxy puts in OPENAI_API_KEY
DEAD_KEY = "sk-dead-endpoint-secret-77"

# Simulated models with one kind of fault each (fields: plugin/sim/data/profile.yaml header).
FAULT_MODELS: dict[str, dict[str, Any]] = {
    "ok": {},
    "flaky-429": {"rate_429": 0.3, "retry_after": 0.3},
    "flaky-500": {"rate_500": 0.3},
    "flaky-reset": {"rate_reset": 0.3},
    "down-429": {"rate_429": 1.0, "retry_after": 0.5},
    "down-500": {"rate_500": 1.0},
    "down-reset": {"rate_reset": 1.0},
    "hang": {"rate_hang": 1.0},
    "slow": {"rate_hang": 1.0, "hang_seconds": 1.5},  # answers, after 1.5 s
    "truncating": {"rate_truncated": 1.0},
    "empty": {"rate_empty": 1.0},
    "picky": {"refuse_params": ["temperature", "top_p", "max_tokens"]},
    "one-choice": {"n_mode": "ignore"},
}

SERVER_CONFIG = """
defaults:
  timeout: 2          # the server's default deadline (seconds); tests that need longer send moa.timeout
presets:
  unreachable:
    proposers: [{model: ok, samples: 2, endpoint: dead}]
  hung-endpoint:
    proposers: [{model: hang, samples: 2, endpoint: same}]
caps:
  timeout: 30
endpoints:
  dead:
    base_url: ${DEAD_BASE_URL}
    api_key: ${DEAD_KEY}
  same:                 # the fault simulator again, as a named endpoint (its own client)
    base_url: ${SAME_BASE_URL}
"""

_questions = itertools.count(1)


@pytest.fixture(scope="module")
def fault_sim() -> Iterator[BackgroundSim]:
    with BackgroundSim(seed=3) as running:
        response = httpx.post(f"{running.root_url}/sim/profile", json={"models": FAULT_MODELS}, timeout=10)
        response.raise_for_status()
        yield running


@pytest.fixture(scope="module")
def fault_proxy(fault_sim: BackgroundSim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # bound and released: connecting is refused
    running = Proxy.configured(fault_sim.base_url, SERVER_CONFIG, tmp_path_factory.mktemp("fault-proxy"),
                               env={"DEAD_BASE_URL": dead, "DEAD_KEY": DEAD_KEY, "SAME_BASE_URL": fault_sim.base_url})
    yield running
    running.close()


@pytest.fixture
def calls(fault_sim: BackgroundSim) -> SimLog:
    """The simulator's call log, emptied, with call numbers (hence fault draws) back at the start."""
    httpx.post(f"{fault_sim.root_url}/sim/reset", timeout=10).raise_for_status()
    return SimLog(fault_sim.root_url)


@pytest.fixture
def client(fault_proxy: Proxy) -> openai.OpenAI:
    return fault_proxy.client()


def question() -> list[dict[str, str]]:
    """A question no other request asks, so its calls can be told apart in the simulator's log
    (an abandoned call of an earlier test may still reach it until that test's deadline)."""
    return [{"role": "user", "content": f"Fault probe {next(_questions)}: name a colour."}]


class Asked:
    """One request's response, duration and question."""

    def __init__(self, response: httpx.Response, took: float, text: str) -> None:
        self.response, self.took, self.text = response, took, text

    def calls(self, log: SimLog, kind: str | None = None) -> list[dict[str, Any]]:
        """This request's backend calls (its question is in every prompt it sends)."""
        return [c for c in log.calls() if self.text in str(c["messages"]) and kind in (None, c["kind"])]


def ask(proxy: Proxy, model: str, moa: dict[str, Any] | None = None, **body: Any) -> Asked:
    """POST one chat request with a fresh question."""
    messages = question()
    payload = {"model": model, "messages": messages, **body}
    if moa is not None:
        payload["moa"] = moa
    started = time.monotonic()
    response = proxy.post(payload, timeout=120)
    return Asked(response, time.monotonic() - started, messages[0]["content"])


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert isinstance(body.get("error"), dict), f"not an OpenAI-shaped error: {response.text}"
    return body["error"]


def assert_clean(text: str) -> None:
    """No key and no traceback in what a client or an operator reads."""
    for secret in (CLIENT_KEY, UPSTREAM_KEY, DEAD_KEY):
        assert secret not in text
    assert "Traceback" not in text


# --- transient failures are retried ---------------------------------------------------------


@pytest.mark.parametrize("model,fault", [("flaky-429", "429"), ("flaky-500", "500"), ("flaky-reset", "reset")])
def test_transient_failures_are_retried_until_the_request_succeeds(
    fault_proxy: Proxy, calls: SimLog, model: str, fault: str
) -> None:
    faulted = 0
    for attempt in range(12):  # until the fault has shown up (the seeded draws bring it in the first few)
        if faulted and attempt >= 3:
            break
        asked = ask(fault_proxy, f"self_moa-{model}", {"samples": 2, "timeout": 20})
        assert asked.response.status_code == 200, asked.response.text
        assert asked.response.json()["choices"][0]["message"]["content"]
        made = sorted(asked.calls(calls), key=lambda c: c["seq"])
        assert made[-1]["status"] == 200
        for failed, retry in zip(made, made[1:]):  # a request's calls are sequential: the next is the retry
            if failed["fault"] == fault:
                faulted += 1
                assert retry["messages"] == failed["messages"]
                if fault == "429":  # Retry-After is a floor under the backoff (a lower bound: slowness only helps)
                    assert retry["started"] - failed["ended"] >= FAULT_MODELS[model]["retry_after"] - 0.01
    assert faulted, "12 requests at a 30% fault rate should have met this fault at least once"


def test_aggregation_calls_are_retried_too(fault_proxy: Proxy, calls: SimLog) -> None:
    aggregations: list[dict[str, Any]] = []
    for attempt in range(12):
        if any(c["fault"] == "500" for c in aggregations) and attempt >= 3:
            break
        asked = ask(fault_proxy, "self_moa-ok", {"samples": 2, "aggregator": "flaky-500", "timeout": 20})
        assert asked.response.status_code == 200, asked.response.text
        made = asked.calls(calls, "aggregate")
        assert made[-1]["status"] == 200
        aggregations += made
    assert any(c["fault"] == "500" for c in aggregations)


def test_seq_and_layers_survive_transient_faults(fault_proxy: Proxy) -> None:
    seq = ask(fault_proxy, "self_moa_seq-flaky-500", {"samples": 12, "timeout": 20}).response
    assert seq.status_code == 200, seq.text
    layered = ask(fault_proxy, "self_moa-flaky-reset", {"samples": 3, "layers": 2, "timeout": 20}).response
    assert layered.status_code == 200, layered.text


def test_an_unreachable_endpoint_is_retried_then_a_clear_error(fault_proxy: Proxy) -> None:
    asked = ask(fault_proxy, "mixed_moa-ok", {"preset": "unreachable", "timeout": 2})
    assert asked.response.status_code == 502
    message = error_of(asked.response)["message"]
    assert "mixed_moa" in message and "ok" in message and "connection error" in message
    assert asked.took <= 2 + MARGIN
    assert_clean(asked.response.text)


# --- deadlines: nothing outlives the request's deadline ---------------------------------------


def test_hanging_proposals_are_abandoned_at_the_deadline(fault_proxy: Proxy, calls: SimLog) -> None:
    moa = {"proposers": [{"model": "ok", "samples": 3}, {"model": "hang", "samples": 3}], "timeout": 3}
    asked = ask(fault_proxy, "mixed_moa-ok", moa)
    assert asked.response.status_code == 200, asked.response.text
    assert asked.took <= 3 + MARGIN
    assert [c["candidates"] for c in asked.calls(calls, "aggregate")] == [3]  # built from what arrived


def test_grace_stops_waiting_soon_after_the_minimum_arrived(fault_proxy: Proxy, calls: SimLog) -> None:
    moa = {"proposers": [{"model": "ok", "samples": 3}, {"model": "hang", "samples": 3}],
           "timeout": 20, "min_samples": 2, "grace": 0.2}
    asked = ask(fault_proxy, "mixed_moa-ok", moa)
    assert asked.response.status_code == 200, asked.response.text
    # Without grace, proposals would be waited for until 60% of the 20 s deadline (12 s); this takes ~0.3 s.
    assert asked.took < 12
    assert [c["candidates"] for c in asked.calls(calls, "aggregate")] == [3]


def test_a_hanging_aggregation_is_answered_with_a_proposal_by_the_deadline(fault_proxy: Proxy,
                                                                           calls: SimLog) -> None:
    asked = ask(fault_proxy, "self_moa-ok", {"samples": 2, "aggregator": "hang", "timeout": 2, "trace": True})
    assert asked.response.status_code == 200, asked.response.text
    assert asked.took <= 2 + MARGIN
    body = asked.response.json()
    proposals = [c["outputs"] for c in asked.calls(calls, "propose")][0]
    assert body["choices"][0]["message"]["content"] in proposals
    fallback = body["selfmoa"]["fallback"]
    assert "hang" in fallback and "deadline" in fallback and "answered with a proposal" in fallback
    assert "fallback=yes" in fault_proxy.log_once("fallback=yes")


def test_the_server_default_deadline_applies_when_the_request_sets_none(fault_proxy: Proxy) -> None:
    asked = ask(fault_proxy, "self_moa-hang", {"samples": 2})
    assert asked.response.status_code in (502, 504)
    message = error_of(asked.response)["message"]
    assert message.startswith("self_moa: ") and "hang" in message
    assert asked.took <= 2 + MARGIN  # the YAML's defaults.timeout


@pytest.mark.parametrize("model,moa", [
    ("self_moa-hang", {"samples": 2}),  # optillm's upstream client
    ("mixed_moa-ok", {"preset": "hung-endpoint"}),  # a named endpoint's own client
])
def test_hung_calls_end_by_the_deadline_on_every_client(fault_proxy: Proxy, calls: SimLog, model: str,
                                                       moa: dict[str, Any]) -> None:
    asked = ask(fault_proxy, model, {**moa, "timeout": 2})
    assert asked.response.status_code == 504
    assert "the proposal phase ran out of time" in error_of(asked.response)["message"]
    made = settled(asked, calls)
    assert made and all(c["fault"] == "hang" for c in made)
    for call in made:  # each call carried a timeout: its client hung up by the deadline (threads do not pile up)
        assert call["ended"] is not None and call["ended"] - call["started"] <= 2 + MARGIN


def test_a_failed_branch_of_a_combination_stops_the_others_calls(fault_proxy: Proxy, calls: SimLog) -> None:
    # self_moa fails at once (no such model); mixed_moa's proposals answer after 1.5 s, and its
    # aggregation would follow at once if nothing stopped it
    moa = {"proposers": ["slow"], "samples": 2, "aggregator": "ok", "timeout": 20}
    asked = ask(fault_proxy, "self_moa|mixed_moa-nosuch", moa)
    assert asked.response.status_code == 404, asked.response.text
    settled(asked, calls)
    time.sleep(0.5)
    assert asked.calls(calls, "aggregate") == []


def settled(asked: Asked, log: SimLog) -> list[dict[str, Any]]:
    """The request's calls once none is in flight any more (waiting at most 10 s)."""
    for _ in range(100):
        made = asked.calls(log)
        if all(c["ended"] is not None for c in made):
            return made
        time.sleep(0.1)
    return asked.calls(log)


def test_optillms_repeated_runs_share_the_request_deadline(fault_proxy: Proxy) -> None:
    # optillm runs the approach `n` times in a row; each run would wait 1.8 s for the hung proposals
    # if the deadline restarted with every run (4 x 1.8 s = 7.2 s). Later runs may fail for lack of
    # time: what matters here is when the request ends.
    moa = {"proposers": [{"model": "ok", "samples": 2}, {"model": "hang", "samples": 2}], "timeout": 3}
    asked = ask(fault_proxy, "mixed_moa-ok", moa, n=4)
    assert asked.response.status_code in (200, 502, 504), asked.response.text
    assert asked.took <= 3 + MARGIN


def test_seq_rounds_end_by_the_deadline_with_what_arrived(fault_proxy: Proxy, calls: SimLog) -> None:
    moa = {"proposers": [{"model": "ok", "samples": 6}, {"model": "hang", "samples": 6}], "timeout": 3}
    asked = ask(fault_proxy, "mixed_moa_seq-ok", moa)
    assert asked.response.status_code == 200, asked.response.text
    assert asked.took <= 3 + MARGIN
    assert [c["candidates"] for c in asked.calls(calls, "aggregate")] == [6]  # later windows never arrived


# --- bad samples are dropped, never aggregated -------------------------------------------------


def test_empty_samples_are_dropped(fault_proxy: Proxy, calls: SimLog) -> None:
    moa = {"proposers": [{"model": "ok", "samples": 3}, {"model": "empty", "samples": 3}], "timeout": 20}
    asked = ask(fault_proxy, "mixed_moa-ok", moa)
    assert asked.response.status_code == 200, asked.response.text
    assert [c["candidates"] for c in asked.calls(calls, "aggregate")] == [3]
    assert "samples_ok=3 samples_failed=3" in fault_proxy.log_once("samples_ok=3 samples_failed=3")


def test_truncated_samples_are_kept_and_marked_cut_off(fault_proxy: Proxy, calls: SimLog) -> None:
    moa = {"proposers": [{"model": "ok", "samples": 3}, {"model": "truncating", "samples": 3}], "timeout": 20}
    asked = ask(fault_proxy, "mixed_moa-ok", moa)
    assert asked.response.status_code == 200, asked.response.text
    [aggregation] = asked.calls(calls, "aggregate")
    assert aggregation["candidates"] == 6
    prompt = "\n".join(str(m.get("content")) for m in aggregation["messages"])
    assert len(re.findall(r'<candidate id="\d+" cut_off="true">', prompt)) == 3


def test_only_truncated_proposals_still_make_an_answer(fault_proxy: Proxy, calls: SimLog) -> None:
    asked = ask(fault_proxy, "self_moa-truncating", {"samples": 3, "timeout": 20})
    assert asked.response.status_code == 200, asked.response.text
    assert asked.calls(calls, "aggregate")[0]["candidates"] == 3


def test_nothing_usable_is_an_error_saying_why(fault_proxy: Proxy, calls: SimLog) -> None:
    asked = ask(fault_proxy, "self_moa-empty", {"samples": 3, "timeout": 20})
    assert asked.response.status_code == 502
    message = error_of(asked.response)["message"]
    assert message.startswith("self_moa: ") and "empty" in message and "empty response" in message
    assert asked.calls(calls, "aggregate") == []


def test_an_empty_aggregation_is_asked_once_more_then_a_proposal_answers(fault_proxy: Proxy,
                                                                       calls: SimLog) -> None:
    asked = ask(fault_proxy, "self_moa-ok", {"samples": 2, "aggregator": "empty", "timeout": 20, "trace": True})
    assert asked.response.status_code == 200, asked.response.text
    assert len(asked.calls(calls, "aggregate")) == 2
    proposals = asked.calls(calls, "propose")[0]["outputs"]
    assert asked.response.json()["choices"][0]["message"]["content"] in proposals
    assert "empty aggregation twice" in asked.response.json()["selfmoa"]["fallback"]


# --- every call failing: an HTTP error a client can act on -------------------------------------


@pytest.mark.parametrize("model,status,said", [
    ("down-429", 429, ["HTTP 429", "Rate limit reached"]),
    ("down-500", 502, ["HTTP 500", "The server had an error"]),
    ("down-reset", 502, ["connection error"]),
])
def test_total_failure_is_an_error_naming_approach_model_and_backend(
    client: openai.OpenAI, model: str, status: int, said: list[str]
) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model=f"self_moa-{model}", messages=question(),  # type: ignore[arg-type]
                                       extra_body={"moa": {"timeout": 2}})
    assert time.monotonic() - started <= 2 + MARGIN
    error = raised.value
    assert error.status_code == status
    assert error.response.headers["x-should-retry"] == "false"  # we retried already: each rerun pays again
    message = error.body["message"]  # type: ignore[index]
    assert message.startswith("self_moa: ") and model in message
    for words in said:
        assert words in message
    assert_clean(error.response.text)


def test_a_rate_limit_outlasting_the_deadline_is_a_429_with_retry_after(fault_proxy: Proxy) -> None:
    asked = ask(fault_proxy, "self_moa-down-429", {"samples": 2, "timeout": 2})
    assert asked.response.status_code == 429
    assert asked.response.headers["Retry-After"] == "1"  # the backend asked for 0.5 s; whole seconds
    assert error_of(asked.response)["type"] == "rate_limit_error"


def test_total_failure_of_several_models_names_each(fault_proxy: Proxy) -> None:
    asked = ask(fault_proxy, "mixed_moa-ok", {"proposers": ["down-500", "down-429"], "samples": 4, "timeout": 2})
    assert asked.response.status_code == 502
    message = error_of(asked.response)["message"]
    assert "down-500: HTTP 500" in message and "down-429: HTTP 429" in message


@pytest.mark.parametrize("model", ["self_moa-down-500", "self_moa_seq-down-500", "mixed_moa-ok",
                                   "self_moa&re2-down-500", "self_moa|mixed_moa-down-500"])
def test_an_error_is_never_a_200(fault_proxy: Proxy, model: str) -> None:
    asked = ask(fault_proxy, model, {"proposers": ["down-500"], "timeout": 1})
    assert asked.response.status_code >= 400, asked.response.text
    assert error_of(asked.response)["message"].split(":")[0] in ("self_moa", "self_moa_seq", "mixed_moa")


def test_a_failed_streamed_request_is_an_error_status_not_a_stream(fault_proxy: Proxy) -> None:
    asked = ask(fault_proxy, "self_moa-down-500", {"timeout": 1}, stream=True)
    assert asked.response.status_code == 502
    assert "down-500: HTTP 500" in error_of(asked.response)["message"]


# --- backends that refuse parameters or under-deliver -----------------------------------------


def test_refused_parameters_are_dropped_once_and_remembered(fault_proxy: Proxy, calls: SimLog) -> None:
    sampling = {"temperature": 0.4, "top_p": 0.9, "max_tokens": 300}
    first = ask(fault_proxy, "self_moa-picky", {"samples": 3, "timeout": 20}, **sampling)
    assert first.response.status_code == 200, first.response.text
    refused = [c for c in first.calls(calls) if c["status"] == 400]
    assert {p for c in refused for p in c["params"]} >= {"temperature", "top_p", "max_tokens"}
    second = ask(fault_proxy, "self_moa-picky", {"samples": 3, "timeout": 20}, **sampling)
    assert second.response.status_code == 200, second.response.text
    made = second.calls(calls)
    assert [c["status"] for c in made] == [200, 200]  # no refusal paid again
    for call in made:
        assert not {"temperature", "top_p", "max_tokens"} & set(call["params"])
        assert call["params"]["max_completion_tokens"] == 300


def test_a_short_n_is_topped_up_and_remembered(fault_proxy: Proxy, calls: SimLog) -> None:
    first = ask(fault_proxy, "self_moa-one-choice", {"samples": 4, "timeout": 20})
    assert first.response.status_code == 200, first.response.text
    assert sorted(c["n"] for c in first.calls(calls, "propose")) == [1, 1, 1, 4]
    assert [c["candidates"] for c in first.calls(calls, "aggregate")] == [4]
    second = ask(fault_proxy, "self_moa-one-choice", {"samples": 4, "timeout": 20})
    assert second.response.status_code == 200, second.response.text
    assert [c["n"] for c in second.calls(calls, "propose")] == [1, 1, 1, 1]


# --- after all of the above ---------------------------------------------------------------------


def test_the_server_kept_serving_and_its_log_holds_no_secret(fault_proxy: Proxy) -> None:
    assert fault_proxy.alive()
    assert ask(fault_proxy, "self_moa-ok", {"samples": 2, "timeout": 20}).response.status_code == 200
    assert_clean(fault_proxy.log())
