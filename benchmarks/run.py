"""`make bench`: latency and backend calls of each approach relative to a single call, on the SIMULATOR.

A real `selfmoa serve` process sits in front of the bundled simulator (realistic simulated latencies at
--time-scale 1). Every approach gets the same N questions, once one request at a time and once with
--concurrency requests in flight. The table gives median and p90 latency, backend calls per request
and the ratio of each median to the single-call median of the same run and mode: only ratios are
meaningful here, and even they describe the simulator, not any real model.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from selfmoa.demo import DISCLAIMER, PROPOSERS, Stack, running_stack
from selfmoa.sim import Task, load_tasks


@dataclass(frozen=True)
class Approach:
    name: str
    model: str
    moa: dict[str, Any] = field(default_factory=dict)


APPROACHES: tuple[Approach, ...] = (
    Approach("single", "sim-strong"),
    Approach("moa", "moa-sim-strong"),
    Approach("self_moa", "self_moa-sim-strong"),
    Approach("mixed_moa", "mixed_moa-sim-strong", {"proposers": PROPOSERS}),
    Approach("self_moa_seq", "self_moa_seq-sim-strong", {"samples": 12}),
    Approach("mixed_moa_seq", "mixed_moa_seq-sim-strong",
             {"proposers": [{"model": m, "samples": 4} for m in PROPOSERS]}),
)


@dataclass
class Result:
    approach: str
    latency: float
    error: str | None = None


def pick_tasks(count: int) -> list[Task]:
    """`count` bundled tasks, alternating between the arithmetic and the multiple-choice set."""
    sets = [load_tasks("arithmetic"), load_tasks("choice")]
    return [sets[i % 2][(i // 2) % len(sets[i % 2])] for i in range(count)]


def ask(client: openai.OpenAI, approach: Approach, task: Task) -> Result:
    """One timed request through the proxy; a failure is recorded in the result, not raised."""
    started = time.perf_counter()
    try:
        client.chat.completions.create(model=approach.model, extra_body={"moa": approach.moa} if approach.moa
                                       else None, messages=[{"role": "user", "content": task.question}])
    except openai.OpenAIError as error:
        return Result(approach.name, time.perf_counter() - started, str(error)[:300])
    return Result(approach.name, time.perf_counter() - started)


@dataclass
class Row:
    approach: str
    mode: str
    latencies: list[float]
    calls_per_request: float
    failed: int
    ratio: float = math.nan

    @property
    def median(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p90(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]

    def as_dict(self) -> dict[str, object]:
        return {"approach": self.approach, "mode": self.mode, "requests": len(self.latencies), "failed": self.failed,
                "median_s": self.median, "p90_s": self.p90, "calls_per_request": self.calls_per_request,
                "ratio_to_single": self.ratio}


def measure(stack: Stack, approach: Approach, tasks: list[Task], concurrency: int) -> Row:
    """All `tasks` through one approach with `concurrency` requests in flight; calls from the simulator's log."""
    stack.clear_calls()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda task: ask(stack.client, approach, task), tasks))
    for result in results:
        if result.error:
            print(f"FAILED {approach.name}: {result.error}", file=sys.stderr)
    mode = "sequential" if concurrency == 1 else f"concurrency {concurrency}"
    return Row(approach.name, mode, [r.latency for r in results], stack.count_calls() / len(tasks),
               sum(r.error is not None for r in results))


def with_ratios(rows: list[Row]) -> list[Row]:
    baseline = rows[0].median  # APPROACHES starts with the single call
    for row in rows:
        row.ratio = row.median / baseline if baseline > 0 else math.nan
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| approach | mode | ok | median s | p90 s | calls/req | ratio to single (median) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = f"{len(r.latencies) - r.failed}/{len(r.latencies)}"
        lines.append(f"| {r.approach} | {r.mode} | {ok} | {r.median:.3f} | {r.p90:.3f} | "
                     f"{r.calls_per_request:.1f} | {r.ratio:.2f}x |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10, help="requests per approach and mode (default 10)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="requests in flight in the concurrent pass (default 8)")
    parser.add_argument("--time-scale", type=float, default=1.0, help="simulated latency multiplier (default 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.time_scale < 0:
        parser.error("--requests and --concurrency must be >= 1, --time-scale >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tasks = pick_tasks(args.requests)
    modes = sorted({1, args.concurrency})
    print(DISCLAIMER)
    print(f"{args.requests} requests per approach and mode, simulated latencies x{args.time_scale}, "
          f"through a real `selfmoa serve`.\n", flush=True)
    rows: list[Row] = []
    try:
        with running_stack(args.time_scale) as stack:
            for concurrency in modes:
                rows += with_ratios([measure(stack, a, tasks, concurrency) for a in APPROACHES])
    except KeyboardInterrupt:
        print("\ninterrupted; the simulator and the proxy are stopped", file=sys.stderr)
        return 130
    print(markdown(rows))
    print(f"\n{DISCLAIMER}")
    if args.json:
        settings = {"requests": args.requests, "concurrency": args.concurrency, "time_scale": args.time_scale}
        args.json.write_text(json.dumps({"simulator": True, "note": DISCLAIMER, **settings,
                                         "rows": [r.as_dict() for r in rows]}, indent=2) + "\n")
    failed = sum(r.failed for r in rows)
    if failed:
        print(f"{failed} request(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
