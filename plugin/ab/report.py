"""Writing the run's results for people and programs: summary.json, summary.csv, report.md, the table.

The report states what every column means, the run's settings, how many tasks and errors, which
differences are not significant, where a cost is incomplete, and (on the simulator) that the
numbers demonstrate the tool, not any model's quality.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plots import COST_PLOT, QD_PLOT
from .stats import equation

SIMULATOR_NOTE = ("**These numbers come from `selfmoa sim`, the offline simulator:** its models' accuracies are "
                  "set in a profile file. They demonstrate the tool, not the quality of any model.")
CSV_FIELDS = ["approach", "n", "correct", "accuracy", "ci_low", "ci_high", "ci_method", "p_vs_baseline", "p_holm",
              "wins", "losses", "latency_p50", "latency_p95", "prompt_tokens", "completion_tokens", "tokens_complete",
              "cost", "cost_complete", "cost_lower_bound", "errors", "quality", "diversity", "judge_unparsed",
              "early_exits"]

COLUMNS = """\
- **n**: tasks answered (rows); **acc [95% CI]**: mean score (errors count as wrong), with a Wilson 95% interval \
(a seeded percentile bootstrap over tasks where scores are judge verdicts 1 / 0.5 / 0).
- **p vs baseline**: exact McNemar test against the baseline: the two-sided binomial test of wins vs losses at 1/2 \
(1 when there are none); with several approaches, the verdicts below use Holm's adjustment of these p-values \
(`p_holm` in summary.json), so that 0.05 bounds the chance of any false "better" among them. **wins / losses**: \
tasks scored above / below the baseline.
- **p50 / p95 s**: latency percentiles of the requests that succeeded, in seconds.
- **prompt / completion tok per task**: the endpoint's reported usage per answered task; `n/a` where replies \
did not report it (optillm's own approaches report completion tokens only).
- **cost per task**: dollars at the `--prices` rates, per model when the reply's trace says which model made each \
call; `>=` marks a lower bound (some usage or price unknown): not comparable with complete costs.
- **errors**: requests that failed (their rows keep the message).
- **quality / diversity** (our approaches, from `moa.trace`): mean score of the individual proposals, and their \
Vendi score (effective number of distinct proposals: exp of the entropy of the eigenvalues of K/n, K the cosine \
similarity of character-trigram counts). Vendi grows with the number of proposals: compare diversity between \
approaches with as many proposals (the `proposals` column of results.jsonl)."""
EARLY_EXIT_COLUMN = """\
- **early exits** (our approaches, from `moa.trace`; shown when some answer exited early): answers whose \
proposals agreed (`moa.agree`), so that the aggregation was skipped and a proposal was the answer, of n; \
`n/a` where no answer has a trace."""


@dataclass(frozen=True)
class RunInfo:
    """The run's settings as the report shows them."""

    command: str
    endpoint: str
    model: str
    tasks: str
    approaches: list[str]
    baseline: str
    seed: int | None
    date: str
    simulator: bool
    judge: str | None = None
    moa: dict[str, Any] = field(default_factory=dict)
    untraced: list[str] = field(default_factory=list)
    dropped_torn_line: bool = False
    prices: str | None = None


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _per_task(line: Mapping[str, Any], key: str) -> str:
    return "n/a" if line.get(key) is None or not line["n"] else f"{line[key] / line['n']:.0f}"


def _cost_cell(line: Mapping[str, Any]) -> str:
    if line.get("cost_lower_bound") is None:
        return "n/a"
    per_task = line["cost_lower_bound"] / max(1, line["n"])
    return f"{'' if line['cost_complete'] else '>= '}${per_task:.5f}"


def shows_early_exits(lines: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the table has an `early exits` column: only when some answer exited early, so a run
    without `moa.agree` keeps the table it always had."""
    return any(line.get("early_exits") for line in lines)


def _early_cell(line: Mapping[str, Any]) -> str:
    return "n/a" if line.get("early_exits") is None else f"{line['early_exits']}/{line['n']}"


def table(lines: Sequence[Mapping[str, Any]], baseline: str) -> list[list[str]]:
    """The summary as rows of cells (header first), shared by the report and the console."""
    early = shows_early_exits(lines)
    rows = [["approach", "n", "acc [95% CI]", "p vs baseline", "wins/losses", "p50/p95 s",
             "prompt/completion tok per task", "cost per task", "errors", "quality", "diversity",
             *(["early exits"] if early else [])]]
    for line in lines:
        mine = line["approach"] == baseline
        rows.append([line["approach"] + (" (baseline)" if mine else ""), str(line["n"]),
                     f"{_f(line['accuracy'])} [{_f(line['ci_low'])}, {_f(line['ci_high'])}]",
                     "-" if mine else _f(line["p_vs_baseline"]), "-" if mine else f"{line['wins']}/{line['losses']}",
                     f"{_f(line['latency_p50'], 2)}/{_f(line['latency_p95'], 2)}",
                     f"{_per_task(line, 'prompt_tokens')}/{_per_task(line, 'completion_tokens')}",
                     _cost_cell(line), str(line["errors"]), _f(line["quality"]), _f(line["diversity"], 2),
                     *([_early_cell(line)] if early else [])])
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows[1:]])


def console_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([text[0], "  ".join("-" * w for w in widths), *text[1:]])


def write_summary(folder: Path, summary: Mapping[str, Any]) -> None:
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    with open(folder / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(summary["approaches"])


def _significance(summary: Mapping[str, Any]) -> list[str]:
    alpha, baseline = summary["alpha"], summary["baseline"]
    compared = [line for line in summary["approaches"]
                if line["approach"] != baseline and line["p_vs_baseline"] is not None]
    notes = []
    for line in compared:
        p, adjusted = line["p_vs_baseline"], line.get("p_holm", line["p_vs_baseline"])
        verdict = "significant" if adjusted < alpha else "**not significant**"
        holm = f", {adjusted:.3g} after Holm's correction for {len(compared)} comparisons" if len(compared) > 1 else ""
        notes.append(f"- `{line['approach']}` vs `{baseline}`: {line['wins']} wins, {line['losses']} losses, "
                     f"p = {p:.3g}{holm}: {verdict} at {alpha}.")
    return notes


def _early_exit_notes(lines: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per traced approach, once some answer exited early: how many tasks skipped aggregating."""
    if not shows_early_exits(lines):
        return []
    return [f"- `{line['approach']}`: {line['early_exits']} of {line['n']} tasks exited early (their proposals "
            "agreed: no aggregation)." for line in lines if line.get("early_exits") is not None]


def _notes(summary: Mapping[str, Any], info: RunInfo) -> list[str]:
    notes = _early_exit_notes(summary["approaches"])
    for line in summary["approaches"]:
        if line["tokens_complete"] is False:
            notes.append(f"- `{line['approach']}`: its replies did not report every token count (optillm's own "
                         "approaches, and selfmoa before native serving, report completion tokens only): its "
                         "tokens and cost are lower bounds, not comparable with complete ones.")
        elif line["cost_complete"] is False:
            notes.append(f"- `{line['approach']}`: some model it called has no price: its cost is a lower bound.")
        if line["judge_unparsed"]:
            notes.append(f"- `{line['approach']}`: {line['judge_unparsed']} judge verdict(s) had no readable "
                         "`<winner>` tag and counted as ties.")
    notes += [f"- `{a}`: the endpoint refused `moa.trace`, so its quality and diversity are unknown." for a in
              info.untraced]
    if info.dropped_torn_line:
        notes.append("- A torn last line (from a killed run) was dropped from results.jsonl and its task redone.")
    return notes


def _fit_text(fit: Mapping[str, Any]) -> str:
    raw, z = fit.get("raw"), fit.get("standardised")
    if raw is None or z is None:
        return (f"Too few points to fit ({fit['points']} traced answers; at least 5 with varying quality and "
                "diversity are needed).")
    r2 = "n/a" if raw["r2"] is None else f"{raw['r2']:.3f}"
    return (f"Least squares over {raw['points']} traced answers: {equation(raw['alpha'], raw['beta'], raw['c'], 4)} "
            f"(R^2 = {r2}). On standardised quality and diversity "
            f"(comparable scales): alpha = {z['alpha']:.4f}, beta = {z['beta']:.4f}. The paper finds alpha well above "
            "beta: quality matters more than diversity.")


def _settings(info: RunInfo) -> list[str]:
    return [f"- command: `{info.command}`", f"- endpoint: {info.endpoint}", f"- model: `{info.model}`",
            f"- tasks: {info.tasks}", f"- approaches: {', '.join(info.approaches)} (baseline `{info.baseline}`)",
            f"- moa settings: `{json.dumps(info.moa)}`" if info.moa else "- moa settings: none",
            f"- judge: `{info.judge}`" if info.judge else "- judge: none",
            f"- prices: {info.prices}" if info.prices else "- prices: none (tokens instead of cost)",
            f"- seed: {info.seed if info.seed is not None else 'none (not sent; bootstrap seeded with 0)'}",
            f"- date: {info.date}"]


def write_report(folder: Path, summary: Mapping[str, Any], info: RunInfo) -> None:
    errors = sum(line["errors"] for line in summary["approaches"])
    answers = sum(line["n"] for line in summary["approaches"])
    parts = ["# selfmoa ab report", "", *([SIMULATOR_NOTE, ""] if info.simulator else []),
             f"{summary['tasks']} tasks x {len(summary['approaches'])} approaches: {answers} answers, {errors} errors.",
             "", markdown_table(table(summary["approaches"], summary["baseline"])), "",
             "## Significance", "", *(_significance(summary) or ["- Only the baseline was run."]), "",
             "## Notes", "", *(_notes(summary, info) or ["- None."]), "",
             "## Columns", "", COLUMNS, *([EARLY_EXIT_COLUMN] if shows_early_exits(summary["approaches"]) else []),
             "", "## Settings", "", *_settings(info), "",
             "## Plots", "", f"![accuracy vs cost]({COST_PLOT})", "", f"![quality vs diversity]({QD_PLOT})", "",
             "## Quality and diversity", "", _fit_text(summary["quality_diversity_fit"]), ""]
    (folder / "report.md").write_text("\n".join(parts), encoding="utf-8")
