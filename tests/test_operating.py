"""Operating `selfmoa serve` as a service: Prometheus metrics equal to what was sent and what the
backends reported, summed over `--workers`; request ids end to end; `/ready` and a graceful
drain on SIGTERM; `--max-in-flight` refusals; JSON logs without keys."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from selfmoa.sim import BackgroundSim
from selfmoa.testing.live import CLIENT_KEY, Proxy, SimLog

ASK = [{"role": "user", "content": "What is 2 + 2?"}]
HEADERS = {"Authorization": f"Bearer {CLIENT_KEY}"}


def scrape(proxy: Proxy) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of a /metrics scrape: (name, labels) -> value."""
    samples = {}
    for line in httpx.get(f"{proxy.url}/metrics", headers=HEADERS, timeout=10).text.splitlines():
        found = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if found and not line.startswith("#"):
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
            samples[(found.group(1), labels)] = float(found.group(3))
    return samples


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


@pytest.fixture(scope="module")
def fresh_sim() -> Iterator[BackgroundSim]:
    """A simulator of this module's own: its call log is all these servers' calls."""
    with BackgroundSim(seed=3) as running:
        yield running


@pytest.fixture(scope="module")
def workers(fresh_sim: BackgroundSim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    folder = tmp_path_factory.mktemp("workers")
    running = Proxy.selfmoa(fresh_sim.base_url, "--workers", "2", log_path=folder / "proxy.log")
    yield running
    running.close()


def test_metrics_count_every_request_and_token_over_every_worker(workers: Proxy, fresh_sim: BackgroundSim) -> None:
    log = SimLog(fresh_sim.root_url)
    log.clear()
    sent = {"self_moa": 4, "none": 4, "moa": 2}
    for approach, count in sent.items():
        model = "sim-strong" if approach == "none" else f"{approach}-sim-strong"
        for _ in range(count):
            assert workers.post({"model": model, "messages": ASK, "moa": {"samples": 3}}).status_code == 200
    calls = [c for c in log.calls() if c["status"] == 200]
    for _ in range(4):  # every scrape, whichever worker answers it, has every worker's counts
        samples = scrape(workers)
        for approach, count in sent.items():
            assert total(samples, "selfmoa_requests_total", approach=approach, status="200") == count
        assert total(samples, "selfmoa_tokens_total", type="prompt") == sum(c["prompt_tokens"] for c in calls)
        assert total(samples, "selfmoa_tokens_total", type="completion") == \
            sum(c["completion_tokens"] for c in calls)
        assert total(samples, "selfmoa_backend_calls_total", outcome="ok") == len(calls)
        assert total(samples, "selfmoa_backend_calls_total", kind="plain") == sent["none"]
        assert total(samples, "selfmoa_backend_calls_total", kind="optillm") == \
            len(calls) - sent["self_moa"] * 2 - sent["none"]  # a self_moa request: one n call, one aggregation
        assert total(samples, "selfmoa_in_flight_requests") == 0
        assert total(samples, "selfmoa_request_duration_seconds_count", approach="self_moa") == sent["self_moa"]


def test_a_streamed_reply_has_its_time_to_first_token(workers: Proxy) -> None:
    before = total(scrape(workers), "selfmoa_time_to_first_token_seconds_count", approach="self_moa")
    with httpx.stream("POST", f"{workers.url}/v1/chat/completions", headers=HEADERS, timeout=60,
                      json={"model": "self_moa-sim-strong", "messages": ASK, "stream": True}) as response:
        assert response.status_code == 200 and "".join(response.iter_text())
    after = total(scrape(workers), "selfmoa_time_to_first_token_seconds_count", approach="self_moa")
    assert after == before + 1


# --- request ids ---------------------------------------------------------------------------------------


def test_a_request_id_is_taken_echoed_logged_and_traced(proxy: Proxy) -> None:
    response = proxy.post({"model": "self_moa-sim-strong", "messages": ASK, "moa": {"samples": 2, "trace": True}},
                          headers={"x-request-id": "ticket-1234"})
    assert response.headers["x-request-id"] == "ticket-1234"
    assert response.json()["selfmoa"]["request_id"] == "ticket-1234"
    log = proxy.log_once("request_id=ticket-1234")
    [line] = [line for line in log.splitlines() if "request_id=ticket-1234" in line]
    assert "approach=self_moa" in line and "status=200" in line


def test_a_request_without_an_id_or_with_a_bad_one_gets_one(proxy: Proxy) -> None:
    made = proxy.post({"model": "sim-strong", "messages": ASK}).headers["x-request-id"]
    bad = proxy.post({"model": "sim-strong", "messages": ASK}, headers={"x-request-id": "no spaces\tplease"})
    assert made.startswith("req_") and bad.headers["x-request-id"].startswith("req_") and made != \
        bad.headers["x-request-id"]
    assert httpx.get(f"{proxy.url}/health", timeout=10).headers["x-request-id"].startswith("req_")


# --- readiness and graceful drain -------------------------------------------------------------------------


@pytest.fixture
def slow_sim() -> Iterator[BackgroundSim]:
    """A simulator whose self_moa request takes about two seconds."""
    with BackgroundSim(seed=4, time_scale=4.0) as running:
        yield running


def slow_requests(proxy: Proxy, count: int, results: list[int]) -> list[threading.Thread]:
    def one() -> None:
        try:
            response = proxy.post({"model": "self_moa-sim-strong", "messages": ASK, "moa": {"samples": 6}}, timeout=60)
            results.append(response.status_code)
        except httpx.HTTPError as error:
            results.append(-1)
            raise AssertionError(f"cut: {error}") from None

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_sigterm_drains_every_request_in_flight_then_exits_0(slow_sim: BackgroundSim, tmp_path: Path) -> None:
    proxy = Proxy.selfmoa(slow_sim.base_url, "--graceful-timeout", "30", log_path=tmp_path / "proxy.log")
    results: list[int] = []
    threads = slow_requests(proxy, 8, results)
    time.sleep(0.5)  # on their way
    proxy.process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert httpx.get(f"{proxy.url}/ready", timeout=10).status_code == 503
    late = proxy.post({"model": "sim-strong", "messages": ASK})
    assert late.status_code == 503 and late.headers.get("retry-after")
    for thread in threads:
        thread.join(60)
    assert results == [200] * 8  # nothing in flight was cut
    assert proxy.process.wait(30) == 0
    assert "draining: 8 request(s) in flight" in proxy.log()
    proxy.close()


def test_a_drain_that_times_out_says_which_requests_it_cut(slow_sim: BackgroundSim, tmp_path: Path) -> None:
    proxy = Proxy.selfmoa(slow_sim.base_url, "--graceful-timeout", "0.2", log_path=tmp_path / "proxy.log")
    results: list[int] = []
    threads = slow_requests(proxy, 1, results)
    time.sleep(0.5)
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(30) == 0
    for thread in threads:
        thread.join(10)
    [cut] = [line for line in proxy.log().splitlines() if "still in flight" in line]
    assert "approach=self_moa" in cut and "request_id=req_" in cut
    proxy.close()


def test_ready_is_200_while_serving(proxy: Proxy) -> None:
    assert httpx.get(f"{proxy.url}/ready", timeout=10).json() == {"status": "ready"}


# --- overload ----------------------------------------------------------------------------------------------


def test_beyond_max_in_flight_a_clear_refusal_with_retry_after(slow_sim: BackgroundSim, tmp_path: Path) -> None:
    proxy = Proxy.selfmoa(slow_sim.base_url, "--max-in-flight", "2", log_path=tmp_path / "proxy.log")
    try:
        results: list[int] = []
        threads = slow_requests(proxy, 2, results)
        time.sleep(0.5)
        refused = proxy.post({"model": "sim-strong", "messages": ASK})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "max_in_flight"
        for thread in threads:
            thread.join(60)
        assert results == [200, 200]
        assert total(scrape(proxy), "selfmoa_refused_requests_total", reason="max_in_flight") == 1
        assert proxy.post({"model": "sim-strong", "messages": ASK}).status_code == 200  # room again
    finally:
        proxy.close()


# --- logs -----------------------------------------------------------------------------------------------------


def test_json_logs_one_object_per_line_without_keys(sim: BackgroundSim, tmp_path: Path) -> None:
    proxy = Proxy.selfmoa(sim.base_url, "--log-format", "json", log_path=tmp_path / "proxy.log")
    try:
        proxy.post({"model": "self_moa-sim-strong", "messages": ASK}, headers={"x-request-id": "json-1"})
        proxy.post({"model": "sim-strong", "messages": ASK})
        lines = [line for line in proxy.log_once('"approach": "none"').splitlines() if line.strip()]
        objects = [json.loads(line) for line in lines]  # every line is one JSON object
        [ours] = [o for o in objects if o.get("request_id") == "json-1"]
        assert ours["approach"] == "self_moa" and ours["status"] == 200 and ours["calls"] == 2
        assert isinstance(ours["wall"], float) and ours["proposers"] == "sim-strongx6"
        assert any(o.get("approach") == "none" for o in objects)
        assert CLIENT_KEY not in proxy.log() and "sk-upstream-secret-0123456789" not in proxy.log()
    finally:
        proxy.close()


def test_metrics_want_the_proxy_key_and_health_does_not(sim: BackgroundSim, tmp_path: Path) -> None:
    proxy = Proxy.selfmoa(sim.base_url, "--optillm-api-key", "sk-proxy-key-0123456789",
                          log_path=tmp_path / "proxy.log")
    try:
        assert httpx.get(f"{proxy.url}/metrics", timeout=10).status_code == 401
        authorized = httpx.get(f"{proxy.url}/metrics", timeout=10,
                               headers={"Authorization": "Bearer sk-proxy-key-0123456789"})
        assert authorized.status_code == 200 and "selfmoa_in_flight_requests" in authorized.text
        assert httpx.get(f"{proxy.url}/health", timeout=10).status_code == 200
        assert httpx.get(f"{proxy.url}/ready", timeout=10).status_code == 200
    finally:
        proxy.close()

