"""`make reliability`: how `selfmoa serve` holds up under backend faults and hostile input, on the SIMULATOR.

A real `selfmoa serve` process sits in front of the bundled simulator, whose models here have
small but real latencies (tens of milliseconds) and injected faults. Each scenario sends its
requests concurrently and sorts every response into exactly one column:

- succeeded: a 200 whose answer is one of the answers its aggregator was shown, built only from
  usable candidates (each with a final answer line: nothing truncated, empty or failed got in), or,
  when the aggregation gave nothing usable, one of the request's own proposals verbatim (the trace
  says so);
- clear errors: an HTTP error status with an OpenAI-shaped body whose message names the approach,
  the model(s) and what the backend said (or, for a malformed body, a 400 naming the field), and
  carries no key;
- hung: no response within the deadline + 0.5 s;
- wrong answers: anything else (a 200 that fails the checks above, or an unclear error).

It prints a markdown table, then each scenario's goal with PASS or FAIL, and exits non-zero if a
goal is missed. These are simulator figures: they describe the proxy's behaviour, not any model.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.live (the proxy process) and the malformed-body catalogue

from selfmoa.sim import BackgroundSim, extract_answer, load_tasks  # noqa: E402
from tests.live import CLIENT_KEY, Proxy  # noqa: E402
from tests.test_hostile_input import BODY, MALFORMED  # noqa: E402
from tests.test_hostile_input import SERVER_CONFIG as HOSTILE_CONFIG  # noqa: E402

UPSTREAM_KEY = "sk-upstream-secret-0123456789"  # what tests.live.Proxy puts in OPENAI_API_KEY
HUNG_AFTER = 0.5  # seconds past the deadline after which a request counts as hung
SERVER_CONFIG = HOSTILE_CONFIG  # the caps the malformed-body catalogue is written against
SERVER_DEADLINE = float(yaml.safe_load(SERVER_CONFIG)["defaults"]["timeout"])

# Small but real latencies: a 40-token answer takes about 60 ms.
FAST = {"ttft_ms": 40, "per_token_ms": 0.5}
MODELS: dict[str, dict[str, Any]] = {
    "rel-a": {**FAST, "accuracy": 0.7},
    # 30% of calls fail transiently: 10% each of 429 (Retry-After 0.5 s), 500 and connection reset
    "rel-flaky-a": {**FAST, "accuracy": 0.7, "rate_429": 0.1, "retry_after": 0.5, "rate_500": 0.1, "rate_reset": 0.1},
    "rel-flaky-b": {**FAST, "accuracy": 0.6, "rate_429": 0.1, "retry_after": 0.5, "rate_500": 0.1, "rate_reset": 0.1},
    # every call fails, with each kind of transient fault
    "rel-down-a": {**FAST, "rate_429": 0.25, "retry_after": 1.0, "rate_500": 0.5, "rate_reset": 0.25},
    "rel-down-b": {**FAST, "rate_429": 0.5, "retry_after": 1.0, "rate_500": 0.5},
    # 20% of calls hang (until the client gives up); n refused, so each sample is a call of its own
    "rel-hang": {**FAST, "accuracy": 0.7, "rate_hang": 0.2, "n_mode": "refuse"},
    # returns at most 2 choices whatever n asks
    "rel-short": {**FAST, "accuracy": 0.7, "n_mode": "cap", "max_n": 2},
    # refuses n, temperature, top_p and max_tokens with a 400 naming the parameter
    "rel-picky": {**FAST, "accuracy": 0.7, "n_mode": "refuse", "refuse_params": ["temperature", "top_p", "max_tokens"]},
}

TASKS = load_tasks("arithmetic") + load_tasks("choice")
FAILURE_WORDS = re.compile(r"HTTP \d{3}|connection error|deadline|no answer|abandoned|timed out|truncated|empty")
MARKER = re.compile(r"\[probe ([\w-]+)\]")


@dataclass
class Request:
    """One request of a scenario: its body, and what a clear answer or error must mention."""

    body: Any
    slug: str = ""
    models: tuple[str, ...] = ()
    field: str | None = None  # a malformed body: the field its 400 must name
    samples: int | None = None  # when set, the final aggregation must have read this many candidates


@dataclass
class Scenario:
    name: str
    requests: list[Request]
    concurrency: int
    deadline: float
    goal: str
    met: Callable[[Tally], bool]
    warm_up: int = 0  # requests sent one at a time before the rest (what the backend refuses is learnt)
    notes: list[str] = field(default_factory=list)


@dataclass
class Tally:
    requests: int = 0
    succeeded: int = 0
    clear: int = 0
    hung: int = 0
    wrong: int = 0
    refusals: int = 0  # backend calls answered with a 400 (a refused parameter)
    latencies: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else math.nan

    def add(self, column: str, latency: float, example: str = "") -> None:
        self.requests += 1
        self.latencies.append(latency)
        setattr(self, column, getattr(self, column) + 1)
        if example and len(self.examples) < 3 and column != "succeeded":
            self.examples.append(f"{column}: {example}")


# --- the requests of each scenario ------------------------------------------------------------


def question(tag: str, index: int) -> list[dict[str, str]]:
    """A bundled task, marked so that the simulator's log can tell which request each call served."""
    task = TASKS[index % len(TASKS)]
    return [{"role": "user", "content": f"[probe {tag}-{index}] {task.question}"}]


def moa_request(tag: str, index: int, model: str, moa: dict[str, Any], **extra: Any) -> Request:
    slug, _, backend = model.partition("-")
    proposers = tuple(p if isinstance(p, str) else p["model"] for p in moa.get("proposers", [])) or (backend,)
    models = tuple(dict.fromkeys((*proposers, moa.get("aggregator", backend))))
    body = {"model": model, "messages": question(tag, index), "moa": {**moa, "trace": True}, **extra}
    return Request(body=body, slug=slug, models=models)


def transient(count: int) -> list[Request]:
    """Every approach shape: one n-call, two models, Seq rounds, two layers."""
    shapes: list[tuple[str, dict[str, Any]]] = [
        ("self_moa-rel-flaky-a", {"samples": 6}),
        ("mixed_moa-rel-flaky-a", {"proposers": ["rel-flaky-a", "rel-flaky-b"], "samples": 6}),
        ("self_moa_seq-rel-flaky-a", {"samples": 9}),
        ("self_moa-rel-flaky-b", {"samples": 3, "layers": 2}),
    ]
    return [moa_request("transient", i, *shapes[i % len(shapes)]) for i in range(count)]


def total_failure(count: int, deadline: float) -> list[Request]:
    """Proposers failing, several models failing, and healthy proposers with a failing aggregator
    (every third request: answered with one of its proposals, since the plain model would answer)."""
    shapes: list[tuple[str, dict[str, Any]]] = [
        ("self_moa-rel-down-a", {"samples": 6}),
        ("mixed_moa-rel-a", {"proposers": ["rel-down-a", "rel-down-b"], "samples": 4, "aggregator": "rel-a"}),
        ("self_moa-rel-a", {"samples": 4, "aggregator": "rel-down-b"}),
    ]
    requests = []
    for i in range(count):
        model, moa = shapes[i % len(shapes)]
        request = moa_request("down", i, model, {**moa, "timeout": deadline})
        failing = [m for m in request.models if "down" in m]
        requests.append(Request(request.body, request.slug, tuple(failing)))
    return requests


def hangs(count: int, deadline: float) -> list[Request]:
    return [moa_request("hang", i, "self_moa-rel-hang", {"samples": 6, "timeout": deadline, "grace": 1.0})
            for i in range(count)]


def short_n(count: int) -> list[Request]:
    requests = [moa_request("short", i, "self_moa-rel-short", {"samples": 6}) for i in range(count)]
    for request in requests:
        request.samples = 6
    return requests


def refused(count: int) -> list[Request]:
    return [moa_request("picky", i, "self_moa-rel-picky", {"samples": 4}, temperature=0.3, top_p=0.9,
                        max_tokens=400) for i in range(count)]


def malformed(rounds: int) -> list[Request]:
    return [Request(body=body, field=name_field) for _ in range(rounds) for _, name_field, body in MALFORMED]


# --- sending and judging ------------------------------------------------------------------------


def send(http: httpx.Client, proxy: Proxy, request: Request, deadline: float) -> tuple[httpx.Response | None, float]:
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"}
    body = request.body
    content = body.encode() if isinstance(body, str) else None
    started = time.monotonic()
    try:
        response = http.post(f"{proxy.url}/v1/chat/completions", headers=headers, timeout=deadline + 10,
                             content=content, json=None if content is not None else body)
    except httpx.HTTPError:
        return None, time.monotonic() - started
    return response, time.monotonic() - started


def marker(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    found = MARKER.search(str(body.get("messages")))
    return found.group(1) if found else None


def calls_by_request(log: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The simulator's calls grouped by the probe marker in their prompts."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in log:
        found = MARKER.search(str(call.get("messages")))
        if found:
            grouped[found.group(1)].append(call)
    return grouped


def judge_answer(response: httpx.Response, request: Request, calls: list[dict[str, Any]]) -> str | None:
    """None when a 200 is a sound answer; else what is wrong with it."""
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "a 200 without an answer"
    answer = extract_answer(content or "")
    if answer is None:
        return f"a 200 without a final answer: {content!r:.120}"
    trace = response.json().get("selfmoa") or {}
    if trace.get("fallback"):
        proposals = [p["text"] for p in trace.get("proposals", [])]
        return None if content in proposals else "a fallback answer that is none of the proposals"
    aggregations = [c for c in calls if c["status"] == 200 and c["candidates"]]
    if not aggregations:
        return "no aggregation call found for this request"
    final = max(aggregations, key=lambda c: c["ended"] or 0)
    prompt = "\n".join(str(m.get("content")) for m in final["messages"])
    candidates = re.findall(r'<candidate id="\d+"[^>]*>\n(.*?)\n</candidate>', prompt, re.S)
    shown = [extract_answer(text) for text in candidates]
    if None in shown:
        return "a candidate without a final answer was aggregated"
    if answer not in shown:
        return f"answer {answer!r} is none of the candidates' {sorted(set(map(str, shown)))}"
    if request.samples is not None and final["candidates"] != request.samples:
        return f"aggregated {final['candidates']} candidates, not {request.samples}"
    return None


def judge_error(response: httpx.Response, request: Request) -> str | None:
    """None when an error response is clear; else what is unclear about it."""
    text = response.text
    if CLIENT_KEY in text or UPSTREAM_KEY in text or "Traceback" in text:
        return "a key or a traceback in the error"
    try:
        error = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code} without an OpenAI-shaped error: {text[:120]}"
    if request.field is not None:
        if request.field == BODY:
            named = "body" in message
        else:
            named = error.get("param") == request.field and request.field in message
        if response.status_code == 400 and named:
            return None
        return f"HTTP {response.status_code} not naming {request.field}: {message[:120]}"
    if response.status_code < 500 and response.status_code != 429:
        return f"HTTP {response.status_code} for a backend failure: {message[:120]}"
    if not message.startswith(f"{request.slug}: "):
        return f"the approach is not named: {message[:120]}"
    if not any(model in message for model in request.models) or not FAILURE_WORDS.search(message):
        return f"the model or the backend's answer is not named: {message[:160]}"
    return None


def run(scenario: Scenario, proxy: Proxy, sim_root: str) -> Tally:
    httpx.delete(f"{sim_root}/sim/calls", timeout=30)
    results: list[tuple[Request, httpx.Response | None, float]] = []
    with httpx.Client(trust_env=False, limits=httpx.Limits(max_connections=scenario.concurrency + 4)) as http:
        for request in scenario.requests[: scenario.warm_up]:
            results.append((request, *send(http, proxy, request, scenario.deadline)))
        with ThreadPoolExecutor(max_workers=scenario.concurrency) as pool:
            rest = scenario.requests[scenario.warm_up:]
            sent = pool.map(lambda r: send(http, proxy, r, scenario.deadline), rest)
            results.extend((request, *outcome) for request, outcome in zip(rest, sent))
    log = httpx.get(f"{sim_root}/sim/calls", timeout=60).json()
    grouped = calls_by_request(log)
    tally = Tally()
    for request, response, latency in results:
        if response is None or latency > scenario.deadline + HUNG_AFTER:
            tally.add("hung", latency, f"no answer after {latency:.2f} s")
        elif response.status_code == 200:
            problem = None if request.field is None else "a 200 for a malformed body"
            problem = problem or judge_answer(response, request, grouped.get(marker(request.body) or "", []))
            tally.add("wrong" if problem else "succeeded", latency, problem or "")
        else:
            problem = judge_error(response, request)
            tally.add("wrong" if problem else "clear", latency, problem or _message(response))
    tally.refusals = sum(c["status"] == 400 for c in log)
    scenario.notes.append(f"{len(log)} backend calls, {tally.refusals} of them refused with a 400")
    return tally


def _message(response: httpx.Response) -> str:
    try:
        return f"HTTP {response.status_code} {str(response.json()['error']['message'])[:200]!r}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found.group(1)) / 1024 if found else None


# --- the report ---------------------------------------------------------------------------------


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    return [
        Scenario("30% transient faults (429/500/reset)", transient(args.transient), 16, SERVER_DEADLINE,
                 ">= 99.5% succeed, none hung or wrong",
                 lambda t: t.succeeded >= 0.995 * t.requests and t.hung == 0 and t.wrong == 0),
        Scenario("100% faults (proposers, or only the aggregator)", total_failure(args.requests, 5.0), 8, 5.0,
                 "a clear error where every proposer fails, a proposal where only the aggregator fails, "
                 "all within the deadline",
                 lambda t: t.succeeded == t.requests // 3 and t.clear == t.requests - t.requests // 3
                 and t.p99 <= 5.0 + HUNG_AFTER),
        Scenario("20% hangs, 5 s deadline", hangs(args.requests, 5.0), 8, 5.0,
                 "every request returns by 5 s + 0.5 s, none wrong",
                 lambda t: t.hung == 0 and t.wrong == 0 and max(t.latencies) <= 5.0 + HUNG_AFTER),
        Scenario("short n (at most 2 of n=6)", short_n(args.requests), 16, SERVER_DEADLINE,
                 "100% succeed with all 6 samples aggregated",
                 lambda t: t.succeeded == t.requests),
        Scenario("refused parameters (n, temperature, top_p, max_tokens)", refused(args.requests), 16,
                 SERVER_DEADLINE, "100% succeed, each refusal paid once (4 400s in all)",
                 lambda t: t.succeeded == t.requests and t.refusals == 4, warm_up=1),
        Scenario(f"{len(MALFORMED)} malformed bodies x {args.rounds}", malformed(args.rounds), 8, SERVER_DEADLINE,
                 "100% 400s naming the field, server alive, memory flat",
                 lambda t: t.clear == t.requests),
    ]


def row(name: str, tally: Tally, deadline: float) -> str:
    cells = [name, tally.requests, tally.succeeded, tally.clear, tally.hung, tally.wrong,
             f"{tally.p99:.2f} s / {deadline:g} s"]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transient", type=int, default=500, help="requests in the 30%% transient-fault scenario")
    parser.add_argument("--requests", type=int, default=100, help="requests in each of the other backend scenarios")
    parser.add_argument("--rounds", type=int, default=15, help="times the malformed-body catalogue is sent")
    args = parser.parse_args()

    started = time.monotonic()
    lines = ["| scenario | requests | succeeded | clear errors | hung | wrong answers | p99 latency vs deadline |",
             "|---|---|---|---|---|---|---|"]
    verdicts: list[tuple[bool, str]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as folder, BackgroundSim(seed=1, time_scale=1.0) as sim:
        httpx.post(f"{sim.root_url}/sim/profile", json={"models": MODELS}, timeout=30).raise_for_status()
        proxy = Proxy.configured(sim.base_url, SERVER_CONFIG, Path(folder))
        try:
            for scenario in scenarios(args):
                memory_before = None
                if scenario.requests and scenario.requests[0].field is not None:
                    run(Scenario("warm-up", malformed(3), 8, SERVER_DEADLINE, "", lambda t: True), proxy, sim.root_url)
                    memory_before = rss_mb(proxy.process.pid)
                tally = run(scenario, proxy, sim.root_url)
                met = scenario.met(tally)
                if memory_before is not None:
                    memory_after = rss_mb(proxy.process.pid)
                    alive = proxy.alive()
                    flat = memory_after is None or memory_after - memory_before <= 5.0
                    scenario.notes.append(f"proxy RSS {memory_before:.1f} -> {memory_after:.1f} MB"
                                          if memory_after is not None else "RSS not measurable here")
                    scenario.notes.append(f"server alive afterwards: {alive}")
                    met = met and alive and flat
                lines.append(row(scenario.name, tally, scenario.deadline))
                verdicts.append((met, f"{scenario.name}: {scenario.goal}"))
                notes.append(f"- {scenario.name}: {'; '.join([*scenario.notes, *tally.examples])}")
                print(f"... {scenario.name}: {tally.requests} requests done", file=sys.stderr, flush=True)
            leaked = [k for k in (CLIENT_KEY, UPSTREAM_KEY) if k in proxy.log()]
            verdicts.append((not leaked, "no key in the proxy log"))
        finally:
            proxy.close()

    print("\n".join(lines))
    print()
    for met, goal in verdicts:
        print(f"- {'PASS' if met else 'FAIL'}: {goal}")
    print()
    print("\n".join(notes))
    print()
    print(f"Simulator figures, not real models. {datetime.date.today().isoformat()}, {platform.node() or 'host'}: "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {time.monotonic() - started:.0f} s in all.")
    return 0 if all(met for met, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
