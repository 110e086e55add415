"""`make bench`, serving part: what `selfmoa serve` itself adds, as ratios against the same backend
calls made directly in the same run, on the SIMULATOR.

- Streaming: time to the first answer token of a streamed `self_moa` request, over (the proposal
  call's round trip + the aggregator's own time to first token), both measured directly. Goal <= 1.10.
- CPU: the proxy process's own CPU time per `self_moa` request, and per plain (`none`) request.
- Throughput: `self_moa` requests per second with 64 concurrent clients, over the same calls
  (one n=6 proposal call, one aggregation) made directly by 64 concurrent clients. Goal >= 0.85.

The simulator and the proxy run as separate processes (`selfmoa sim`, `selfmoa serve`) on 127.0.0.1;
the clients run here. Simulated latencies are the bundled profile's times `--time-scale`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from selfmoa.approaches import Candidate, Choice
from selfmoa.approaches.prompts import SYNTHESIZE_INSTRUCTIONS, aggregation_messages

MODEL = "sim-strong"
QUESTION = [{"role": "user", "content": "A baker has 12 trays of 8 rolls and sells 30. How many rolls are left?"}]
BIN = Path(sys.executable).parent
KEY = {"Authorization": "Bearer sk-simulator-needs-no-key"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def process(command: list[str], url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "OPENAI_API_KEY": "sk-simulator-needs-no-key", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with open(log, "wb") as out:
        running = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"{command[1]} did not start:\n{log.read_text(errors='replace')[-2000:]}")
            yield running
        finally:
            running.terminate()
            running.wait(10)


@dataclass
class Stack:
    sim: str  # the simulator's /v1
    proxy: str  # the proxy's /v1
    proxy_pid: int
    http: httpx.Client


@contextmanager
def stack(time_scale: float) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="selfmoa-bench-") as folder:
        sim_port, proxy_port = free_port(), free_port()
        sim_root = f"http://127.0.0.1:{sim_port}"
        with process([str(BIN / "selfmoa"), "sim", "--port", str(sim_port), "--time-scale", str(time_scale)],
                     sim_root, Path(folder) / "sim.log"), \
                process([str(BIN / "selfmoa"), "serve", "--base-url", f"{sim_root}/v1", "--port", str(proxy_port),
                         "--log", "warning"], f"http://127.0.0.1:{proxy_port}", Path(folder) / "proxy.log") as proxy, \
                httpx.Client(timeout=300, limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
                             trust_env=False) as http:
            yield Stack(f"{sim_root}/v1", f"http://127.0.0.1:{proxy_port}/v1", proxy.pid, http)


def post(http: httpx.Client, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(f"{url}/chat/completions", json=body, headers=KEY)
    response.raise_for_status()
    return dict(response.json())


def first_token(http: httpx.Client, url: str, body: dict[str, Any]) -> float:
    """Seconds until the first chunk carrying answer text."""
    started, took = time.perf_counter(), None
    with http.stream("POST", f"{url}/chat/completions", json={**body, "stream": True}, headers=KEY) as response:
        response.raise_for_status()
        for line in response.iter_lines():  # read to the end, so the connection is reused
            if took is None and line.startswith("data: {") and _has_text(json.loads(line[6:])):
                took = time.perf_counter() - started
    if took is None:
        raise RuntimeError("the stream carried no answer text")
    return took


def _has_text(chunk: dict[str, Any]) -> bool:
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or [])


def direct_calls(s: Stack) -> tuple[float, dict[str, Any]]:
    """The proposal call of a `self_moa` request, made directly: (round trip, its aggregation body)."""
    started = time.perf_counter()
    proposals = post(s.http, s.sim, {"model": MODEL, "messages": QUESTION, "n": 6, "temperature": 0.7})
    took = time.perf_counter() - started
    texts = [c["message"]["content"] for c in proposals["choices"]]
    candidates = [Candidate(text=t, choice=Choice(content=t)) for t in texts]
    body = {"model": MODEL, "messages": aggregation_messages(QUESTION, candidates, SYNTHESIZE_INSTRUCTIONS)}
    return took, body


def streaming_ratio(s: Stack, rounds: int) -> dict[str, float]:
    proposals, aggregator, ours = [], [], []
    for _ in range(rounds):
        took, aggregation = direct_calls(s)
        proposals.append(took)
        aggregator.append(first_token(s.http, s.sim, aggregation))
        ours.append(first_token(s.http, s.proxy, {"model": f"self_moa-{MODEL}", "messages": QUESTION}))
    baseline = statistics.median(proposals) + statistics.median(aggregator)
    return {"ttft_self_moa_s": statistics.median(ours), "proposal_round_trip_s": statistics.median(proposals),
            "aggregator_ttft_s": statistics.median(aggregator), "ratio": statistics.median(ours) / baseline}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(s: Stack, requests: int) -> dict[str, float]:
    def measure(model: str) -> float:
        before = cpu_seconds(s.proxy_pid)
        for _ in range(requests):
            post(s.http, s.proxy, {"model": model, "messages": QUESTION})
        return (cpu_seconds(s.proxy_pid) - before) / requests * 1000

    plain, ours = measure(MODEL), measure(f"self_moa-{MODEL}")
    return {"cpu_ms_none": plain, "cpu_ms_self_moa": ours}


def throughput(s: Stack, clients: int, per_client: int) -> dict[str, float]:
    def through_proxy() -> None:
        post(s.http, s.proxy, {"model": f"self_moa-{MODEL}", "messages": QUESTION})

    def directly() -> None:
        _, aggregation = direct_calls(s)
        post(s.http, s.sim, aggregation)

    def rate(request: Callable[[], None]) -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(lambda _: [request() for _ in range(per_client)], range(clients)))
        return clients * per_client / (time.perf_counter() - started)

    direct, ours = rate(directly), rate(through_proxy)
    return {"direct_rps": direct, "self_moa_rps": ours, "ratio": ours / direct}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="streamed requests for the TTFT ratio (default 15)")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients for throughput (default 64)")
    parser.add_argument("--per-client", type=int, default=3, help="requests per client (default 3)")
    parser.add_argument("--time-scale", type=float, default=4.0,
                        help="simulated latency multiplier (default 4: ~0.5 s to first token, ~60 tokens/s)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print("SIMULATOR figures: what `selfmoa serve` adds to the same backend calls, as ratios measured in one run.")
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"latencies x{args.time_scale}\n", flush=True)
    with stack(args.time_scale) as s:
        for _ in range(3):  # warm-up: connections, the proxy's client, the simulator
            post(s.http, s.proxy, {"model": f"self_moa-{MODEL}", "messages": QUESTION})
        ttft = streaming_ratio(s, args.rounds)
        cpu = cpu_per_request(s, 20)
        load = throughput(s, args.clients, args.per_client)
    rows = [
        ("streamed time to first token / (proposal round trip + aggregator TTFT)", f"{ttft['ratio']:.2f}", "<= 1.10",
         f"{ttft['ttft_self_moa_s'] * 1000:.0f} ms / ({ttft['proposal_round_trip_s'] * 1000:.0f} + "
         f"{ttft['aggregator_ttft_s'] * 1000:.0f} ms)"),
        ("proxy CPU per self_moa request", f"{cpu['cpu_ms_self_moa']:.1f} ms", "",
         f"plain pass-through (`none`): {cpu['cpu_ms_none']:.1f} ms"),
        (f"throughput, {args.clients} concurrent clients / the same calls made directly", f"{load['ratio']:.2f}",
         ">= 0.85", f"{load['self_moa_rps']:.1f} / {load['direct_rps']:.1f} requests/s"),
    ]
    print("| measure | result | goal | detail |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.write_text(json.dumps({"simulator": True, "time_scale": args.time_scale, "streaming": ttft,
                                         "cpu": cpu, "throughput": load}, indent=2) + "\n")
    missed = ttft["ratio"] > 1.10 or load["ratio"] < 0.85
    if missed:
        print("\na goal was missed", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
