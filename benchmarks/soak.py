"""The soak of `make reliability`: minutes of steady load on `selfmoa serve` over the SIMULATOR,
with hung calls and transient faults mixed in.

Requests go out at a fixed rate (open loop: a slow answer does not slow the sender down, as
independent clients do not wait for each other) in three shapes: one `n` call, three single
calls where `n` is refused, and a streamed answer. Every response is sorted into the columns of
the other scenarios (`verdicts.py`); an answer must come from the request's own proposals (its
trace). Meanwhile the proxy's resident memory and thread count are read from /proc/PID/status
every few seconds: flat after the first minute means nothing piles up behind hung calls (threads,
connections) and nothing leaks per request.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.verdicts import HUNG_AFTER, Request, Tally, judge_error, judge_traced, message_of
from selfmoa.testing.live import CLIENT_KEY, Proxy

FAST = {"ttft_ms": 40, "per_token_ms": 0.5}
# 20% of calls hang; 10% fail transiently: 429 (Retry-After 0.5 s), 500 or a dropped connection
FAULTS = {"rate_hang": 0.2, "rate_429": 0.04, "retry_after": 0.5, "rate_500": 0.03, "rate_reset": 0.03}
MODELS: dict[str, dict[str, Any]] = {
    "rel-soak": {**FAST, "accuracy": 0.7, **FAULTS},
    "rel-soak-single": {**FAST, "accuracy": 0.7, **FAULTS, "n_mode": "refuse"},
}
SHAPES: list[tuple[str, bool]] = [  # (model, streamed)
    ("self_moa-rel-soak", False),
    ("self_moa-rel-soak-single", False),
    ("self_moa-rel-soak", True),
]
DEADLINE = 5.0
SAMPLE_EVERY = 5.0  # seconds between two readings of the proxy's /proc/PID/status
WARM_UP = 60.0  # "flat after the first minute"


@dataclass
class Reading:
    at: float  # seconds since the soak started
    rss_mb: float
    threads: int


@dataclass
class Soak:
    seconds: float
    rate: float
    tally: Tally = field(default_factory=Tally)
    readings: list[Reading] = field(default_factory=list)
    sent: int = 0

    def window(self, start: float, end: float) -> list[Reading]:
        return [r for r in self.readings if start <= r.at < end] or self.readings[-1:]

    def growth(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(RSS MB, threads): the mean over the minute after the warm-up, and over the last minute."""
        early = self.window(WARM_UP, 2 * WARM_UP)
        late = self.window(self.seconds - WARM_UP, self.seconds + SAMPLE_EVERY)
        rss = (statistics.mean(r.rss_mb for r in early), statistics.mean(r.rss_mb for r in late))
        threads = (statistics.mean(r.threads for r in early), statistics.mean(r.threads for r in late))
        return rss, threads

    def flat(self) -> bool:
        """No upward trend after the first minute: RSS within 10% (at least 10 MB), threads within
        25% (at least 10) of what they were in the minute after it."""
        (rss_early, rss_late), (threads_early, threads_late) = self.growth()
        return (rss_late - rss_early <= max(10.0, 0.1 * rss_early)
                and threads_late - threads_early <= max(10.0, 0.25 * threads_early))


def proc_status(pid: int) -> tuple[float, int] | None:
    """(resident MB, threads) of a process, from /proc/PID/status."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss, threads = re.search(r"VmRSS:\s+(\d+) kB", status), re.search(r"Threads:\s+(\d+)", status)
    return (int(rss.group(1)) / 1024, int(threads.group(1))) if rss and threads else None


def soak(proxy: Proxy, sim_root: str, seconds: float, rate: float, question: Callable[[int], str]) -> Soak:
    """Send `rate` requests a second for `seconds`; read the proxy's memory and threads as it goes."""
    result = Soak(seconds, rate)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(proxy.process.pid, sim_root, result, stop), daemon=True)
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    with httpx.Client(trust_env=False, limits=limits) as http, ThreadPoolExecutor(max_workers=300) as pool:
        watcher.start()
        futures = [pool.submit(_one, http, proxy.url, index, question(index)) for index in _ticks(seconds, rate)]
        for future in futures:
            column, latency, example = future.result()
            result.tally.add(column, latency, example)
        result.sent = len(futures)
        stop.set()
        watcher.join()
    return result


def _ticks(seconds: float, rate: float) -> Iterator[int]:
    """0, 1, 2, ... each at its own time: `rate` a second for `seconds`."""
    start = time.monotonic()
    for index in range(int(seconds * rate)):
        pause = start + index / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        yield index


def _watch(pid: int, sim_root: str, result: Soak, stop: threading.Event) -> None:
    started = time.monotonic()
    next_clear = started + 30
    while not stop.is_set():
        status = proc_status(pid)
        if status is not None:
            result.readings.append(Reading(time.monotonic() - started, *status))
        if time.monotonic() >= next_clear:  # the simulator's call log is not needed here: keep it small
            httpx.delete(f"{sim_root}/sim/calls", timeout=30)
            next_clear += 30
        stop.wait(SAMPLE_EVERY)


def _one(http: httpx.Client, url: str, index: int, text: str) -> tuple[str, float, str]:
    """(column, latency, what was wrong) for one request of the soak."""
    model, streamed = SHAPES[index % len(SHAPES)]
    body = {"model": model, "messages": [{"role": "user", "content": text}],
            "moa": {"samples": 3, "timeout": DEADLINE, "trace": True}, "stream": streamed}
    request = Request(body=body, slug="self_moa", models=(model.removeprefix("self_moa-"),))
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    started = time.monotonic()
    try:
        with http.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers,
                         timeout=DEADLINE + 10) as response:
            response.read()
    except httpx.HTTPError as error:
        return "hung", time.monotonic() - started, f"no answer ({type(error).__name__})"
    latency = time.monotonic() - started
    if latency > DEADLINE + HUNG_AFTER:
        return "hung", latency, f"answered after {latency:.2f} s"
    if response.status_code != 200:
        problem = judge_error(response, request)
        return ("wrong" if problem else "clear"), latency, problem or message_of(response)
    content, trace, error = _streamed(response.text) if streamed else _whole(response)
    if error is not None:  # an error event after the first byte: judged like an error status
        status = 429 if error.get("type") == "rate_limit_error" else 502
        problem = judge_error(httpx.Response(status, json={"error": error}), request)
        return ("wrong" if problem else "clear"), latency, problem or str(error.get("message"))[:200]
    problem = judge_traced(content, trace)
    return ("wrong" if problem else "succeeded"), latency, problem or ""


def _whole(response: httpx.Response) -> tuple[str | None, dict[str, Any], dict[str, Any] | None]:
    body = response.json()
    return body["choices"][0]["message"].get("content"), body.get("selfmoa") or {}, None


def _streamed(text: str) -> tuple[str | None, dict[str, Any], dict[str, Any] | None]:
    """(the answer, the trace, an error event) from an SSE body."""
    content, trace, error = [], {}, None
    for line in text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line.removeprefix("data: "))
        if "error" in event:
            error = event["error"]
        for choice in event.get("choices") or []:
            content.append((choice.get("delta") or {}).get("content") or "")
        trace = event.get("selfmoa") or trace
    return "".join(content), trace, error


def raced_share(log: str) -> tuple[int, int]:
    """(calls, raced calls) in the proxy log's per-request lines."""
    calls = sum(int(found) for found in re.findall(r" calls=(\d+)", log))
    raced = sum(int(found) for found in re.findall(r" raced=(\d+)", log))
    return calls, raced


def plot(result: Soak, path: Path) -> None:
    """Resident memory and threads of the proxy over the soak, as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r.at / 60 for r in result.readings]
    figure, (memory, threads) = plt.subplots(2, 1, figsize=(6.4, 4.2), sharex=True)
    memory.plot(minutes, [r.rss_mb for r in result.readings], color="tab:blue")
    memory.set_ylabel("RSS (MB)")
    memory.set_ylim(bottom=0)
    threads.plot(minutes, [r.threads for r in result.readings], color="tab:orange")
    threads.set_ylabel("threads")
    threads.set_ylim(bottom=0)
    threads.set_xlabel("minutes")
    for axis in (memory, threads):
        axis.axvline(WARM_UP / 60, color="grey", linewidth=0.8, linestyle="--")
        axis.grid(alpha=0.3)
    memory.set_title(f"selfmoa serve at {result.rate:g} requests/s, 20% hung calls + 10% transient faults "
                     "(simulator)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
