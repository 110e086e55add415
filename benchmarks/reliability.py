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

The last scenario is a soak (`soak.py`, `--soak-seconds`, 10 minutes by default): steady load with
hung calls and transient faults mixed in, while the proxy's memory and threads are sampled and
plotted (`--plot`, docs/soak.png).

It prints a markdown table, then each scenario's goal with PASS or FAIL, and exits non-zero if a
goal is missed. These are simulator figures: they describe the proxy's behaviour, not any model.
"""

from __future__ import annotations

import argparse
import datetime
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

from benchmarks.soak import DEADLINE, Soak, plot, raced_share, soak  # noqa: E402
from benchmarks.soak import MODELS as SOAK_MODELS  # noqa: E402
from benchmarks.verdicts import (  # noqa: E402
    HUNG_AFTER,
    UPSTREAM_KEY,
    Request,
    Tally,
    judge_answer,
    judge_error,
    message_of,
)
from selfmoa.sim import BackgroundSim, load_tasks  # noqa: E402
from selfmoa.testing.hostile import MALFORMED  # noqa: E402
from selfmoa.testing.hostile import SERVER_CONFIG as HOSTILE_CONFIG  # noqa: E402
from selfmoa.testing.live import CLIENT_KEY, Proxy  # noqa: E402

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
    # 20% of calls hang (until the client gives up); n honoured: the samples are one call
    "rel-hang-n": {**FAST, "accuracy": 0.7, "rate_hang": 0.2},
    # the same with n refused, so each sample is a call of its own
    "rel-hang": {**FAST, "accuracy": 0.7, "rate_hang": 0.2, "n_mode": "refuse"},
    **SOAK_MODELS,
    # returns at most 2 choices whatever n asks
    "rel-short": {**FAST, "accuracy": 0.7, "n_mode": "cap", "max_n": 2},
    # refuses n, temperature, top_p and max_tokens with a 400 naming the parameter
    "rel-picky": {**FAST, "accuracy": 0.7, "n_mode": "refuse", "refuse_params": ["temperature", "top_p", "max_tokens"]},
}

TASKS = load_tasks("arithmetic") + load_tasks("choice")
MARKER = re.compile(r"\[probe ([\w-]+)\]")


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


def hangs(count: int, deadline: float, model: str) -> list[Request]:
    return [moa_request(model, i, f"self_moa-{model}", {"samples": 6, "timeout": deadline, "grace": 1.0})
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


def run(scenario: Scenario, proxy: Proxy, sim_root: str) -> Tally:
    httpx.delete(f"{sim_root}/sim/calls", timeout=30)
    logged = len(proxy.log())
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
            tally.add("wrong" if problem else "clear", latency, problem or message_of(response))
    tally.refusals = sum(c["status"] == 400 for c in log)
    scenario.notes.append(f"{len(log)} backend calls, {tally.refusals} of them refused with a 400")
    counted, raced = raced_share(proxy.log()[logged:])
    if raced:
        scenario.notes.append(f"{raced} of the {counted} calls of answered requests were raced calls (paid for)")
    return tally


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
        Scenario("20% hangs, n honoured (1 call for 6 samples), 5 s deadline", hangs(args.requests, 5.0, "rel-hang-n"),
                 8, 5.0, ">= 95% succeed from real samples, every request back by 5 s + 0.5 s, none wrong",
                 lambda t: t.succeeded >= 0.95 * t.requests and t.hung == 0 and t.wrong == 0
                 and max(t.latencies) <= 5.0 + HUNG_AFTER),
        Scenario("20% hangs, n refused (6 calls), 5 s deadline", hangs(args.requests, 5.0, "rel-hang"), 8, 5.0,
                 ">= 98% succeed from real samples, every request back by 5 s + 0.5 s, none wrong",
                 lambda t: t.succeeded >= 0.98 * t.requests and t.hung == 0 and t.wrong == 0
                 and max(t.latencies) <= 5.0 + HUNG_AFTER),
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


def soak_name(result: Soak) -> str:
    return f"soak: {result.seconds / 60:g} min at {result.rate:g} requests/s, 20% hangs + 10% transient faults"


def soak_verdicts(result: Soak) -> list[tuple[bool, str]]:
    tally = result.tally
    back = tally.hung == 0 and tally.wrong == 0 and max(tally.latencies, default=0) <= DEADLINE + HUNG_AFTER
    return [(back, f"soak: every request answered or a clear error within its deadline ({DEADLINE:g} s + 0.5 s)"),
            (result.flat(), "soak: the proxy's RSS and thread count flat after the first minute "
                            "(last minute within 10% / 25% of the second)")]


def soak_notes(result: Soak, log: str, path: Path) -> str:
    """The soak's figures: memory and threads early and late, the share of raced calls, the plot."""
    (rss_early, rss_late), (threads_early, threads_late) = result.growth()
    peak_rss = max((r.rss_mb for r in result.readings), default=0.0)
    peak_threads = max((r.threads for r in result.readings), default=0)
    counted, raced = raced_share(log)
    plot(result, path)
    return (f"- soak: {result.sent} requests sent in {result.seconds:g} s; proxy RSS {rss_early:.1f} MB in the "
            f"second minute, {rss_late:.1f} MB in the last (peak {peak_rss:.1f} MB); threads "
            f"{threads_early:.0f} then {threads_late:.0f} (peak {peak_threads}); "
            f"{raced} of the {counted} calls of answered requests were raced calls (paid for); plot: {path}; "
            f"{'; '.join(result.tally.examples)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transient", type=int, default=500, help="requests in the 30%% transient-fault scenario")
    parser.add_argument("--requests", type=int, default=100, help="requests in each of the other backend scenarios")
    parser.add_argument("--rounds", type=int, default=15, help="times the malformed-body catalogue is sent")
    parser.add_argument("--soak-seconds", type=float, default=600, help="length of the soak (0: no soak)")
    parser.add_argument("--soak-rate", type=float, default=20, help="requests per second during the soak")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "soak.png", help="where the soak's plot goes")
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
            if args.soak_seconds > 0:
                logged = len(proxy.log())
                soaked = soak(proxy, sim.root_url, args.soak_seconds, args.soak_rate,
                              lambda i: question("soak", i)[0]["content"])
                lines.append(row(soak_name(soaked), soaked.tally, DEADLINE))
                verdicts += soak_verdicts(soaked)
                notes.append(soak_notes(soaked, proxy.log()[logged:], args.plot))
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
    print(f"Simulator figures, not real models. {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.node() or 'host'} ({platform.machine()}): "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {time.monotonic() - started:.0f} s in all.")
    return 0 if all(met for met, _ in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
