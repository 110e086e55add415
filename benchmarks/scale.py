"""`make bench`, scale part: `selfmoa serve` under thousands of concurrent `self_moa` requests, as
ratios against the same backend calls made directly in the same run, on the SIMULATOR.

1. Concurrency at hosted-model latencies (`selfmoa sim --time-scale 20`: a `self_moa` request takes
   about 9 s). For each C of `--levels`, on a fresh proxy: C clients make the two calls of a request
   directly (the n=6 proposal call, then the aggregation of its 6 candidates), all released at the
   same moment; then C clients send one `self_moa-sim-strong` request each through the proxy, the
   same way. The proxy's process tree (a parent and its `--workers` children) is read from /proc
   every 100 ms: peak threads, peak resident memory over the idle reading just before the burst
   (per in-flight request), CPU time (per request).
2. Throughput at the simulator's own speed (`--time-scale 1`), `selfmoa serve --workers 2`: 64 clients
   sending requests one after the other for a fixed time, against 64 clients making the same two
   calls directly, on the same simulator.

Latency percentiles are nearest-rank over ALL requests, one without an answer (an error, a timeout,
an empty answer) counting as infinitely slow. Everything is driven through the CLI (`selfmoa sim`,
`selfmoa serve`), each in its own process group; the load comes from this process (aiohttp).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.procstat import Exited, Sampler, free_port, launch, read_tree  # noqa: E402

MODEL = "sim-strong"
QUESTION = [{"role": "user", "content": "A baker has 12 trays of 8 rolls and sells 30. How many rolls are left?"}]
SELF_MOA = {"model": f"self_moa-{MODEL}", "messages": QUESTION, "moa": {"samples": 6}}
PROPOSAL = {"model": MODEL, "messages": QUESTION, "n": 6, "temperature": 0.7}
KEY = "sk-simulator-needs-no-key"
BIN = Path(sys.executable).parent
REFERENCE = 16  # concurrent direct requests of the unloaded reference: the simulated latency itself
Request = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


try:  # imported now, not during a burst: importing selfmoa takes a second or two
    from selfmoa.approaches import Candidate, Choice
    from selfmoa.approaches.prompts import SYNTHESIZE_INSTRUCTIONS, aggregation_messages
    PROMPTS = True
except ImportError:  # the core being rewritten: a prompt of the same shape and size instead
    PROMPTS = False


def aggregation_body(texts: list[str]) -> dict[str, Any]:
    """The aggregation call of a `self_moa` request over these candidates, built as the proxy does."""
    if not PROMPTS:
        fenced = "\n\n".join(f'<candidate id="{i}">\n{t}\n</candidate>' for i, t in enumerate(texts, 1))
        instructions = f"You have been given {len(texts)} candidate responses. " * 16 + "\n\n" + fenced
        messages = [{"role": "user", "content": f"{QUESTION[0]['content']}\n\n{instructions}"}]
    else:
        candidates = [Candidate(text=t, choice=Choice(content=t)) for t in texts]
        messages = aggregation_messages(QUESTION, candidates, SYNTHESIZE_INSTRUCTIONS)
    return {"model": MODEL, "messages": messages}


# --- processes -------------------------------------------------------------------------------------

def selfmoa(args: list[str], root: str, log: Path) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """`selfmoa ARGS` in its own process group, healthy at `root`/health; the whole group killed after."""
    env = {**os.environ, "OPENAI_API_KEY": KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return launch([str(BIN / "selfmoa"), *args], env, f"{root}/health", log)


def sim_args(port: int, time_scale: float) -> list[str]:
    return ["sim", "--port", str(port), "--time-scale", str(time_scale)]


def serve_args(sim: str, port: int, workers: int | None = None) -> list[str]:
    extra = ["--workers", str(workers)] if workers else []
    return ["serve", "--base-url", f"{sim}/v1", "--port", str(port), "--log", "warning", *extra]


# --- requests --------------------------------------------------------------------------------------

class Failed(Exception):
    """A request without an answer; its message is the reason, tallied per burst."""


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}) as r:
        if r.status != 200:
            raise Failed(f"HTTP {r.status}")
        reply = await r.json(content_type=None)
    if not isinstance(reply, dict):
        raise Failed("not a JSON object")
    return reply


def texts_of(reply: dict[str, Any]) -> list[str]:
    return [str((c.get("message") or {}).get("content") or "") for c in reply.get("choices") or []]


def answer(reply: dict[str, Any]) -> None:
    if not any(texts_of(reply)[:1]):
        raise Failed("empty answer")


async def through_proxy(http: aiohttp.ClientSession, proxy: str) -> None:
    answer(await post(http, proxy, SELF_MOA))


async def direct(http: aiohttp.ClientSession, sim: str) -> None:
    proposals = texts_of(await post(http, sim, PROPOSAL))
    if len(proposals) != 6:
        raise Failed(f"{len(proposals)} proposals, not 6")
    answer(await post(http, sim, aggregation_body(proposals)))


def session(timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=timeout))


async def timed(request: Request, http: aiohttp.ClientSession, url: str) -> float | str:
    """Seconds to an answer, or why there is none."""
    started = time.perf_counter()
    try:
        await request(http, url)
    except Failed as failed:
        return str(failed)
    except asyncio.TimeoutError:
        return "client timeout"
    except (aiohttp.ClientError, ValueError) as error:
        return type(error).__name__
    return time.perf_counter() - started


async def burst(request: Request, url: str, clients: int, timeout: float) -> tuple[list[float | str], float]:
    """`clients` requests released together: (each one's latency, the burst's wall time)."""
    gate = asyncio.Event()
    async with session(timeout) as http:
        async def one() -> float | str:
            await gate.wait()
            return await timed(request, http, url)

        tasks = [asyncio.create_task(one()) for _ in range(clients)]
        await asyncio.sleep(0.1)  # every task is now waiting on the gate
        started = time.perf_counter()
        gate.set()
        latencies = await asyncio.gather(*tasks)
        return list(latencies), time.perf_counter() - started


async def closed_loop(request: Request, url: str, clients: int, seconds: float,
                      timeout: float) -> tuple[list[float | str], float]:
    """`clients` clients, each sending one request after the other until `seconds` have passed."""
    latencies: list[float | str] = []
    async with session(timeout) as http:
        started = time.perf_counter()

        async def client() -> None:
            while time.perf_counter() - started < seconds:
                latencies.append(await timed(request, http, url))

        await asyncio.gather(*(client() for _ in range(clients)))
        return latencies, time.perf_counter() - started


def percentile(latencies: list[float | str], q: float) -> float | None:
    """Nearest rank, a request without an answer ranked as infinitely slow (then None)."""
    ranked = sorted(math.inf if isinstance(s, str) else s for s in latencies)
    found = ranked[max(0, math.ceil(q * len(ranked)) - 1)] if ranked else math.inf
    return None if found == math.inf else found


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# --- the two parts ---------------------------------------------------------------------------------

def cpu_of(pid: int) -> float:
    return float(sum(read_tree(pid).cpu_s.values()))


Load = Callable[[], Coroutine[Any, Any, tuple[list[float | str], float]]]


def measure(run: Load, sim_pid: int,
            proxy_pid: int | None = None, inflight: int = 1) -> dict[str, Any]:
    """Runs the load `run`, with the simulator's and this process's CPU, and the proxy tree's readings."""
    sim_cpu, client_cpu = cpu_of(sim_pid), time.process_time()
    if proxy_pid is None:
        latencies, wall = asyncio.run(run())
        extra: dict[str, Any] = {}
    else:
        idle_kb = read_tree(proxy_pid).rss_kb
        with Sampler(proxy_pid) as sampler:
            latencies, wall = asyncio.run(run())
        extra = {"peak_threads": sampler.peak_threads, "idle_rss_kb": idle_kb, "peak_rss_kb": sampler.peak_rss_kb,
                 "rss_kb_per_inflight": max(0, sampler.peak_rss_kb - idle_kb) / inflight,
                 "cpu_ms_per_request": sampler.cpu_s * 1000 / max(1, len(latencies)), "samples": sampler.samples}
    answered = sum(not isinstance(s, str) for s in latencies)
    failures = Counter(s for s in latencies if isinstance(s, str))
    return {"sent": len(latencies), "answered": answered, "failures": dict(failures),
            "p50_s": percentile(latencies, 0.5), "p99_s": percentile(latencies, 0.99),
            "requests_s": answered / wall, "wall_s": wall,
            "sim_cpu_s": cpu_of(sim_pid) - sim_cpu, "client_cpu_s": time.process_time() - client_cpu, **extra}


def concurrency_level(c: int, sim: str, sim_pid: int, folder: Path, timeout: float, workers: int = 1
                      ) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with selfmoa(serve_args(sim, port, workers if workers > 1 else None), url, folder / f"proxy-{c}.log") as proxy:
        for _ in range(2 * workers - 1):  # every worker's first request (a warm-up each)
            asyncio.run(one_request(through_proxy, url, timeout))
        warm = asyncio.run(one_request(through_proxy, url, timeout))  # the proxy's warm-up
        direct_row = measure(lambda: burst(direct, sim, c, timeout), sim_pid)
        row = measure(lambda: burst(through_proxy, url, c, timeout), sim_pid, proxy.pid, c)
    return {"clients": c, "proxy": row, "direct": direct_row, "p99_ratio": ratio(row["p99_s"], direct_row["p99_s"]),
            "unloaded_proxy_s": warm}


async def one_request(request: Request, url: str, timeout: float) -> float | None:
    async with session(timeout) as http:
        took = await timed(request, http, url)
    return None if isinstance(took, str) else took


async def cheap_call(http: aiohttp.ClientSession, sim: str) -> None:
    await post(http, sim, {"model": MODEL, "messages": QUESTION, "max_tokens": 1})


def throughput(folder: Path, clients: int, seconds: float, workers: int, timeout: float) -> dict[str, Any]:
    sim_port, port = free_port(), free_port()
    sim, url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
    supported, note = True, ""
    with selfmoa(sim_args(sim_port, 1.0), sim, folder / "sim-x1.log") as sim_process, ExitStack() as servers:
        try:
            proxy = servers.enter_context(selfmoa(serve_args(sim, port, workers), url, folder / "proxy-workers.log"))
        except Exited as exited:  # today's server: "unrecognized arguments: --workers 2"
            supported, note = False, str(exited)
            proxy = servers.enter_context(selfmoa(serve_args(sim, port), url, folder / "proxy-1.log"))
        asyncio.run(closed_loop(through_proxy, url, clients, 1.0, timeout))  # warm-up, of every worker
        direct_row = measure(lambda: closed_loop(direct, sim, clients, seconds, timeout), sim_process.pid)
        row = measure(lambda: closed_loop(through_proxy, url, clients, seconds, timeout), sim_process.pid,
                      proxy.pid, clients)
    return {"clients": clients, "seconds": seconds, "workers": workers if supported else 1,
            "workers_supported": supported, "note": note, "proxy": row, "direct": direct_row,
            "p99_ratio": ratio(row["p99_s"], direct_row["p99_s"]),
            "rps_ratio": ratio(row["requests_s"], direct_row["requests_s"])}


# --- report ----------------------------------------------------------------------------------------

def seconds(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"


def table_row(load: str, r: dict[str, Any]) -> str:
    p, d = r["proxy"], r["direct"]
    cells = [load, f"{p['answered']}/{p['sent']}", f"{seconds(p['p50_s'])} / {seconds(d['p50_s'])}",
             f"{seconds(p['p99_s'])} / {seconds(d['p99_s'])}",
             "none" if r["p99_ratio"] is None else f"{r['p99_ratio']:.2f}x",
             f"{p['requests_s']:.1f} / {d['requests_s']:.1f}", str(p["peak_threads"]),
             f"{p['rss_kb_per_inflight']:.1f}", f"{p['cpu_ms_per_request']:.1f}"]
    return "| " + " | ".join(cells) + " |"


def goals(levels: list[dict[str, Any]], load: dict[str, Any]) -> list[tuple[bool, str]]:
    checks: list[tuple[bool, str]] = []
    for r in levels:
        c, p = r["clients"], r["proxy"]
        share, need = p["answered"] / c, 1.0 if c <= 1024 else 0.999
        checks.append((share >= need, f"C={c}: answered >= {need:.1%}: {share:.2%}"))
        limit = 1.15 if c <= 1024 else 1.3
        checks.append((r["p99_ratio"] is not None and r["p99_ratio"] <= limit,
                       f"C={c}: p99 <= {limit}x direct: " + ("none" if r["p99_ratio"] is None
                                                             else f"{r['p99_ratio']:.2f}x")))
        checks.append((p["peak_threads"] <= 64, f"C={c}: proxy peak threads <= 64: {p['peak_threads']}"))
        checks.append((p["rss_kb_per_inflight"] <= 100,
                       f"C={c}: resident memory per in-flight request <= 100 KB: {p['rss_kb_per_inflight']:.1f} KB"))
        if c <= 1024:
            checks.append((p["cpu_ms_per_request"] <= 5,
                           f"C={c}: proxy CPU per self_moa request <= 5 ms: {p['cpu_ms_per_request']:.1f} ms"))
    if not load["workers_supported"]:
        checks.append((False, f"throughput with --workers 2: not supported ({load['note']})"))
    else:
        checks.append((load["rps_ratio"] is not None and load["rps_ratio"] >= 0.85,
                       f"throughput with --workers 2 >= 0.85x direct: {load['rps_ratio'] or 0:.2f}x"))
    checks.append((load["proxy"]["peak_threads"] <= 64,
                   f"throughput: proxy peak threads <= 64: {load['proxy']['peak_threads']}"))
    return checks


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=lambda s: [int(c) for c in s.split(",")], default=[256, 1024, 4096],
                        help="concurrent clients per burst, comma-separated (default 256,1024,4096)")
    parser.add_argument("--time-scale", type=float, default=20.0,
                        help="simulated latency multiplier of the bursts (default 20: ~9 s per self_moa)")
    parser.add_argument("--throughput-clients", type=int, default=64)
    parser.add_argument("--throughput-seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=2, help="`selfmoa serve --workers` of the throughput run")
    parser.add_argument("--burst-workers", type=int, default=1, help="`selfmoa serve --workers` of the bursts")
    parser.add_argument("--timeout", type=float, default=300.0, help="client timeout per request, s (default 300)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="keep the servers' logs there (default: discarded)")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a goal is missed")
    return parser.parse_args(argv)


def print_report(args: argparse.Namespace, reference: dict[str, Any], levels: list[dict[str, Any]],
                 load: dict[str, Any]) -> None:
    print("| load | answered | p50 s proxy / direct | p99 s proxy / direct | p99 ratio | requests/s proxy / direct "
          "| proxy peak threads | proxy RSS KB per in-flight | proxy CPU ms per request |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in levels:
        print(table_row(f"C={r['clients']}, latencies x{args.time_scale:g}", r))
    workers = f"--workers {args.workers}" if load["workers_supported"] else f"--workers {args.workers} NOT SUPPORTED, 1"
    print(table_row(f"throughput, {args.throughput_clients} clients x {args.throughput_seconds:g} s, x1, "
                    f"{workers} process(es): ratio {load['rps_ratio'] or 0:.2f}", load))
    print(f"\nUnloaded reference, {REFERENCE} direct requests at once: p50 {seconds(reference['p50_s'])} s, "
          f"p99 {seconds(reference['p99_s'])} s (the simulated latency)")
    for name, r in [*((f"C={r['clients']}", r) for r in levels), ("throughput", load)]:
        p, d = r["proxy"], r["direct"]
        keeps_up = "" if r is load else f", p99 / unloaded p99 = {ratio(d['p99_s'], reference['p99_s']) or 0:.2f}"
        print(f"{name}: direct answered {d['answered']}/{d['sent']}{keeps_up}; load generator CPU "
              f"{d['client_cpu_s']:.1f} s direct, {p['client_cpu_s']:.1f} s proxied; simulator CPU "
              f"{d['sim_cpu_s']:.1f} s direct, {p['sim_cpu_s']:.1f} s proxied" +
              "".join(f"; {who} failures {r[who]['failures']}" for who in ("proxy", "direct") if r[who]["failures"]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM unwinds like Ctrl-C: groups killed
    started = time.monotonic()
    machine = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "cpus": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version()}
    print("SIMULATOR figures: `selfmoa serve` under concurrent self_moa requests vs the same calls made directly.")
    print(f"{machine['date_utc']}, {machine['cpus']} CPUs, {machine['arch']}, Python {machine['python']}\n",
          flush=True)
    levels = []
    with tempfile.TemporaryDirectory(prefix="selfmoa-scale-") as tmp:
        folder, sim_port = args.logs or Path(tmp), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        sim = f"http://127.0.0.1:{sim_port}"
        with selfmoa(sim_args(sim_port, args.time_scale), sim, folder / "sim.log") as sim_process:
            asyncio.run(one_request(cheap_call, sim, args.timeout))  # the simulator's first call is slower
            print(f"unloaded reference: {REFERENCE} direct requests ...", file=sys.stderr, flush=True)
            reference = measure(lambda: burst(direct, sim, REFERENCE, args.timeout), sim_process.pid)
            for c in args.levels:
                print(f"burst of {c} ...", file=sys.stderr, flush=True)
                levels.append(concurrency_level(c, sim, sim_process.pid, folder, args.timeout, args.burst_workers))
        print("throughput ...", file=sys.stderr, flush=True)
        load = throughput(folder, args.throughput_clients, args.throughput_seconds, args.workers, args.timeout)
    print_report(args, reference, levels, load)
    checks = goals(levels, load)
    print("\nGoals:")
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    took = time.monotonic() - started
    print(f"\n(run time {took:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"simulator": True, "machine": machine, "time_scale": args.time_scale,
                                         "reference": reference, "levels": levels, "throughput": load, "run_s": took,
                                         "goals": [{"ok": ok, "goal": text} for ok, text in checks]}, indent=2) + "\n")
    missed = not all(ok for ok, _ in checks)
    if missed:
        print("\na goal was missed", file=sys.stderr)
    return 1 if missed and not args.no_fail else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the servers' process groups are already gone
        print("interrupted", file=sys.stderr)
        sys.exit(130)
