"""`make bench`, agreement part: what `moa.first` / `moa.agree` / `moa.answer` save, and what they cost.

The real `selfmoa ab` command line A/Bs fixed Self-MoA (`self_moa`, 6 samples) against the same with
an early exit (`self_moa@agree`: `{"samples": 6, "first": 3, "agree": 1, "answer": "numeric"}`: draw
3, answer at once when all 3 give one number, else draw 3 more and aggregate all 6), with
`--baseline self_moa`, so McNemar compares the two arms task by task.

On the SIMULATOR (bundled `arithmetic` set, 43 tasks per simulator seed, `--seeds` seeds pooled):
samples of one question agree as often as the model's `consistency` makes them (a sample repeats
the model's settled answer to that question with that probability, right with P accuracy; see
`plugin/sim/profile.py`). Real models' samples are strongly correlated: ESC (Li et al., ICLR 2024,
arXiv 2401.10480) stopped self-consistency sampling on GSM8K once a window of 5 samples agreed and
cut the samples drawn by 80% at comparable accuracy, so most questions' first samples agree. The
default `--consistency 0.8` models that; the `consistency 0` row (independent samples, the worst
case for an early exit) is printed beside it, without a goal.

Goals (sim-strong at `--consistency`): tokens <= 0.5x and median latency <= 0.75x fixed self_moa's;
accuracy not significantly lower (exact McNemar p >= 0.05) and within 2 points. sim-weak: reported
(how often it exited, the accuracy either way), no goal beyond the run working. Exits 1 when a goal
is missed (said on stderr).

Then the same two arms against a REAL server, llama.cpp serving SmolLM2-135M-Instruct (the tests'
model), on the numeric questions of `benchmarks/data/short-answers.jsonl`: tokens and calls only
(how often a real model's samples agree decides what is saved; `--no-llamacpp` skips it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from scipy.stats import binomtest

from selfmoa.demo import running_stack
from selfmoa.testing.live import CLIENT_KEY

ROOT = Path(__file__).resolve().parents[1]

FIXED, EARLY = "self_moa", "self_moa@agree"
SHORT_ANSWERS = ROOT / "benchmarks" / "data" / "short-answers.jsonl"


@dataclass
class Arm:
    """One approach of one run, read back from its rows."""

    name: str
    scores: dict[str, float] = field(default_factory=dict)  # task id -> score
    tokens: list[int] = field(default_factory=list)  # prompt + completion, per answered task
    latencies: list[float] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)  # backend calls per answered task
    exits: int = 0
    errors: int = 0

    @property
    def correct(self) -> float:
        return sum(self.scores.values())

    @property
    def accuracy(self) -> float:
        return self.correct / len(self.scores) if self.scores else 0.0


@dataclass
class Comparison:
    """One configuration (a model, its consistency) measured: the two arms and how they compare."""

    where: str  # "sim" or "llama.cpp"
    model: str
    consistency: float | None
    fixed: Arm
    early: Arm
    p: float = 1.0  # exact McNemar, the two arms task by task
    tokens_ratio: float | None = None
    latency_ratio: float | None = None
    calls_ratio: float | None = None
    goal: str | None = None  # "PASS ..." / "FAIL ..." where this row has a goal


def moa_options(samples: int, first: int, max_tokens: int | None = None) -> dict[str, dict[str, Any]]:
    """The two arms' `moa` objects: both traced, so the rows say which tasks exited early."""
    fixed: dict[str, Any] = {"samples": samples, "trace": True}
    if max_tokens:
        fixed["max_tokens"] = max_tokens
    return {FIXED: fixed, EARLY: {**fixed, "first": first, "agree": 1, "answer": "numeric"}}


def ab_command(url: str, model: str, tasks: str, out: Path, moa: Mapping[str, Mapping[str, Any]],
               args: argparse.Namespace, limit: int | None) -> list[str]:
    """The real `selfmoa ab` command line for the two arms, McNemar against each other."""
    command = [str(Path(sys.executable).parent / "selfmoa"), "ab", "--tasks", tasks,
               "--approaches", f"{FIXED},{EARLY}", "--baseline", FIXED, "--model", model, "--url", url,
               "--out", str(out), "--concurrency", str(args.concurrency), "--timeout", "600", "--no-progress"]
    for name, options in moa.items():
        command += ["--moa", f"{name}={json.dumps(options)}"]
    return command + (["--limit", str(limit)] if limit else [])


def run_ab(command: Sequence[str]) -> int:
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "OPENAI_API_KEY": CLIENT_KEY})
    if done.returncode != 0:
        print(f"selfmoa ab exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr)
    return done.returncode


def read_rows(out: Path, arms: Mapping[str, Arm], prefix: str = "") -> None:
    """Add a run's rows to `arms` (task ids prefixed, so runs of several seeds pool)."""
    results = out / "results.jsonl"
    for line in results.read_text().splitlines() if results.exists() else []:
        if not line.strip():
            continue
        row = json.loads(line)
        arm = arms[row["approach"]]
        arm.scores[prefix + row["id"]] = float(row["score"] or 0.0)
        if row.get("error") is not None:
            arm.errors += 1
            continue
        arm.tokens.append(int(row["prompt_tokens"] or 0) + int(row["completion_tokens"] or 0))
        arm.latencies.append(float(row["latency_s"]))
        arm.calls.append(sum(int(u.get("calls") or 0) for u in (row.get("usage_by_model") or {}).values()))
        arm.exits += row.get("early_exit") is not None


def mcnemar(a: Arm, b: Arm) -> float:
    ids = set(a.scores) & set(b.scores)
    only_a = sum(1 for i in ids if a.scores[i] >= 1.0 > b.scores[i])
    only_b = sum(1 for i in ids if b.scores[i] >= 1.0 > a.scores[i])
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0


def ratio(new: Sequence[float], old: Sequence[float], summary: Any = sum) -> float | None:
    return summary(new) / summary(old) if new and old and summary(old) else None


def compare(where: str, model: str, consistency: float | None, arms: Mapping[str, Arm]) -> Comparison:
    fixed, early = arms[FIXED], arms[EARLY]
    return Comparison(where, model, consistency, fixed, early, mcnemar(fixed, early),
                      ratio(early.tokens, fixed.tokens), ratio(early.latencies, fixed.latencies, statistics.median),
                      ratio(early.calls, fixed.calls))


def strong_goal(row: Comparison) -> str:
    """The strong model's goal line: tokens, median latency and accuracy against fixed self_moa."""
    checks = {
        "tokens <= 0.5x": row.tokens_ratio is not None and row.tokens_ratio <= 0.5,
        "p50 latency <= 0.75x": row.latency_ratio is not None and row.latency_ratio <= 0.75,
        "McNemar p >= 0.05": row.p >= 0.05 or row.early.accuracy >= row.fixed.accuracy,
        "accuracy within 2 points": row.early.accuracy >= row.fixed.accuracy - 0.02,
        "no errors": row.fixed.errors == row.early.errors == 0 and bool(row.early.scores),
    }
    missed = [name for name, ok in checks.items() if not ok]
    return ("PASS" if not missed else "FAIL") + f" ({', '.join(checks)})" + (f": missed {', '.join(missed)}"
                                                                             if missed else "")


def sim_comparison(model: str, consistency: float, args: argparse.Namespace, folder: Path) -> Comparison:
    """Both arms on the bundled arithmetic set, one simulator per seed, pooled."""
    arms = {FIXED: Arm(FIXED), EARLY: Arm(EARLY)}
    for seed in range(args.seeds):
        out = folder / f"{model}-c{consistency}-s{seed}"
        with running_stack(args.time_scale, seed=seed) as stack:
            httpx.post(f"{stack.sim_url}/sim/profile", json={"models": {model: {"consistency": consistency}}},
                       timeout=10).raise_for_status()
            run_ab(ab_command(f"{stack.proxy_url}/v1", model, "arithmetic", out, moa_options(6, 3), args, args.limit))
        read_rows(out, arms, prefix=f"s{seed}:")
    return compare("sim", model, consistency, arms)


def llamacpp_comparison(args: argparse.Namespace, folder: Path) -> Comparison:
    """Both arms against llama.cpp serving SmolLM2, on the numeric short-answer questions."""
    from selfmoa.testing.smollm import ALIAS, smollm_proxy, smollm_server

    numeric = [line for line in SHORT_ANSWERS.read_text().splitlines() if '"scorer": "numeric"' in line]
    tasks = folder / "numeric.jsonl"
    tasks.write_text("\n".join(numeric[:args.llamacpp_tasks]) + "\n")
    arms = {FIXED: Arm(FIXED), EARLY: Arm(EARLY)}
    out = folder / "llamacpp"
    with smollm_server(log_dir=folder) as server, smollm_proxy(server, folder / "smollm-proxy") as proxy:
        run_ab(ab_command(f"{proxy.url}/v1", ALIAS, str(tasks), out, moa_options(6, 3, 48), args, None))
    read_rows(out, arms)
    return compare("llama.cpp", "SmolLM2-135M", None, arms)


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def table(rows: Sequence[Comparison]) -> list[str]:
    lines = ["| backend | model | consistency | fixed `self_moa` right | `self_moa@agree` right | McNemar p "
             "| tokens | p50 latency | calls per task | early exits |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        fixed, early = row.fixed, row.early
        consistency = "n/a" if row.consistency is None else f"{row.consistency:g}"
        calls = (f"{statistics.mean(early.calls):.1f} vs {statistics.mean(fixed.calls):.1f}"
                 if early.calls and fixed.calls else "n/a")
        lines.append(f"| {row.where} | {row.model} | {consistency} | {fixed.correct:g}/{len(fixed.scores)} "
                     f"| {early.correct:g}/{len(early.scores)} | {row.p:.3f} | {_x(row.tokens_ratio)} "
                     f"| {_x(row.latency_ratio)} | {calls} | {early.exits}/{len(early.scores)} |")
    return lines


def header(args: argparse.Namespace) -> list[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "# Early exit on agreement: `self_moa@agree` (first 3 of 6, agree 1, answer numeric) vs fixed `self_moa` (6)",
        "",
        f"- date: {now}; machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()}; "
        f"Python {platform.python_version()}",
        f"- SIMULATOR rows: bundled `arithmetic` set, {args.seeds} simulator seed(s) pooled, time scale "
        f"{args.time_scale}; the numbers describe the simulator, not any real model",
        "- ratios are `self_moa@agree` over fixed `self_moa` in the same run; calls per task: agree vs fixed",
        "",
    ]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--consistency", type=float, default=0.8, help="the simulated models' sample consistency")
    ap.add_argument("--seeds", type=int, default=2, help="simulator seeds to pool (43 tasks each)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N simulator tasks per seed")
    ap.add_argument("--time-scale", type=float, default=0.2, help="simulated latency scale")
    ap.add_argument("--concurrency", type=int, default=4, help="selfmoa ab's concurrent requests")
    ap.add_argument("--no-worst-case", action="store_true", help="skip the consistency-0 row")
    ap.add_argument("--no-llamacpp", action="store_true", help="skip the llama.cpp (SmolLM2) part")
    ap.add_argument("--llamacpp-tasks", type=int, default=10, help="numeric questions asked of SmolLM2")
    ap.add_argument("--json", type=Path, default=None, help="write the measurements here too")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agree-bench-") as scratch:
        folder = Path(scratch)
        strong = sim_comparison("sim-strong", args.consistency, args, folder)
        strong.goal = strong_goal(strong)
        rows = [strong, sim_comparison("sim-weak", args.consistency, args, folder)]
        weak = rows[1]
        weak.goal = ("PASS" if weak.early.scores and weak.early.errors == 0 else "FAIL") + " (the run worked)"
        if not args.no_worst_case:
            rows.append(sim_comparison("sim-strong", 0.0, args, folder))
        if not args.no_llamacpp:
            rows.append(llamacpp_comparison(args, folder))
    report = header(args) + table(rows) + [""]
    report.append(f"Goal (sim-strong, consistency {args.consistency:g}): {strong.goal}")
    report.append(f"sim-weak (consistency {args.consistency:g}): exited early on {weak.early.exits} of "
                  f"{len(weak.early.scores)} tasks; accuracy {weak.early.accuracy:.0%} vs {weak.fixed.accuracy:.0%} "
                  f"fixed, McNemar p={weak.p:.3f} -- {weak.goal}")
    if not args.no_worst_case:
        worst = rows[2]
        report.append(f"Worst case (independent samples, consistency 0, no goal): tokens {_x(worst.tokens_ratio)}, "
                      f"p50 latency {_x(worst.latency_ratio)}; a task whose first 3 disagree pays a third round trip")
    report.append(f"Wall time: {time.monotonic() - started:.0f} s")
    print("\n".join(report))
    ok = strong.goal.startswith("PASS") and weak.goal.startswith("PASS")
    if args.json:
        args.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "goal_met": ok}, indent=2))
    if not ok:
        print("agreement benchmark: a goal was missed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
