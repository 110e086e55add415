"""The summary, CSV, report and plots of a run, from rows (no HTTP): what they say and what they show."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from selfmoa.ab.plots import COST_PLOT, QD_PLOT, plot_accuracy_cost, plot_quality_diversity
from selfmoa.ab.report import SIMULATOR_NOTE, RunInfo, write_report, write_summary
from selfmoa.ab.stats import fit_quality_diversity, mcnemar_exact, wilson_interval
from selfmoa.ab.summary import Scope, summarise

TASKS = [f"t{i}" for i in range(12)]


def row(task: str, approach: str, score: float | None, **extra: Any) -> dict[str, Any]:
    return {"id": task, "approach": approach, "output": "x", "score": score, "latency_s": 1.0 + TASKS.index(task),
            "prompt_tokens": 10, "completion_tokens": 5, "error": None if score is not None else "HTTP 500: boom",
            **extra}


def rows() -> dict[tuple[str, str], dict[str, Any]]:
    done = {}
    for i, task in enumerate(TASKS):
        done[(task, "none")] = row(task, "none", float(i % 2))                         # 6 of 12
        quality, diversity = (i % 4) / 3, 1.0 + (i % 3)
        done[(task, "self_moa")] = row(task, "self_moa", 1.0 if i != 11 else 0.0,      # 11 of 12
                                       quality=quality, diversity=diversity, proposals=6)
        done[(task, "moa")] = row(task, "moa", float(i % 2) if i != 0 else None)       # one error
    return done


@pytest.fixture
def summary() -> dict[str, Any]:
    return summarise(rows(), Scope(TASKS, ["none", "self_moa", "moa"], "none", "m"), None, seed=0)


def test_the_summary_lines(summary: dict[str, Any]) -> None:
    base, ours, moa = summary["approaches"]
    assert (base["n"], base["correct"], base["accuracy"]) == (12, 6, 0.5)
    assert (ours["ci_low"], ours["ci_high"]) == pytest.approx(wilson_interval(11, 12))
    assert (ours["wins"], ours["losses"]) == (6, 1)                     # 11 of 12 vs the baseline's odd tasks
    assert ours["p_vs_baseline"] == pytest.approx(mcnemar_exact(6, 1))
    assert (moa["errors"], moa["wins"], moa["losses"], moa["p_vs_baseline"]) == (1, 0, 0, 1.0)
    assert base["latency_p50"] == pytest.approx(6.5) and moa["latency_p50"] == pytest.approx(7.0)  # errors excluded
    assert (base["prompt_tokens"], base["completion_tokens"], base["tokens_complete"]) == (120, 60, True)
    assert base["cost"] is None and base["cost_complete"] is None       # no price table
    points = [r for r in rows().values() if r["approach"] == "self_moa"]
    fit = fit_quality_diversity([p["quality"] for p in points], [p["diversity"] for p in points],
                                [p["score"] for p in points])
    assert fit is not None and summary["quality_diversity_fit"]["raw"]["alpha"] == pytest.approx(fit.alpha)


def test_summary_json_and_csv_hold_the_same_lines(summary: dict[str, Any], tmp_path: Path) -> None:
    write_summary(tmp_path, summary)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["baseline"] == "none" and written["approaches"] == summary["approaches"]
    with open(tmp_path / "summary.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["approach"] for r in table] == ["none", "self_moa", "moa"]
    for key in ("n", "correct", "accuracy", "ci_low", "ci_high", "p_vs_baseline", "wins", "losses", "latency_p50",
                "latency_p95", "prompt_tokens", "completion_tokens", "cost", "errors"):
        assert key in table[0]
    assert float(table[1]["accuracy"]) == pytest.approx(11 / 12)


def info(simulator: bool) -> RunInfo:
    return RunInfo("selfmoa ab --tasks t.jsonl", "http://127.0.0.1:1/v1", "m", "t.jsonl (12 tasks)",
                   ["none", "self_moa", "moa"], "none", 4, "2026-01-01T00:00:00+00:00", simulator)


def test_the_report_explains_and_qualifies_the_table(summary: dict[str, Any], tmp_path: Path) -> None:
    write_report(tmp_path, summary, info(simulator=True))
    report = (tmp_path / "report.md").read_text()
    assert SIMULATOR_NOTE in report
    assert "12 tasks x 3 approaches: 36 answers, 1 errors." in report
    assert "| self_moa | 12 | 0.917 [" in report and "| none (baseline) | 12 | 0.500 [" in report
    holm = "after Holm's correction for 2 comparisons"
    assert f"`moa` vs `none`: 0 wins, 0 losses, p = 1, 1 {holm}: **not significant**" in report
    assert f"`self_moa` vs `none`: 6 wins, 1 losses, p = 0.125, 0.25 {holm}: **not significant**" in report
    for needle in ("**p vs baseline**", "exact McNemar", "Wilson", "Vendi", "command: `selfmoa ab --tasks t.jsonl`",
                   "endpoint: http://127.0.0.1:1/v1", "model: `m`", "seed: 4", "date: 2026-01-01",
                   f"]({COST_PLOT})", f"]({QD_PLOT})"):
        assert needle in report, needle
    raw = summary["quality_diversity_fit"]["raw"]
    assert f"score = {raw['alpha']:.4f} quality - {abs(raw['beta']):.4f} diversity + {raw['c']:.4f}" in report
    write_report(tmp_path, summary, info(simulator=False))
    assert SIMULATOR_NOTE not in (tmp_path / "report.md").read_text()


def test_too_few_points_to_fit_is_said(tmp_path: Path) -> None:
    few = {k: v for k, v in rows().items() if k[0] in TASKS[:3]}
    summary = summarise(few, Scope(TASKS[:3], ["none", "self_moa"], "none", "m"), None, seed=0)
    write_report(tmp_path, summary, info(simulator=False))
    assert "Too few points to fit (3 traced answers" in (tmp_path / "report.md").read_text()


def test_the_plots_are_written(summary: dict[str, Any], tmp_path: Path) -> None:
    plot_accuracy_cost(summary["approaches"], tmp_path / COST_PLOT, "accuracy")
    plot_quality_diversity(list(rows().values()), summary["quality_diversity_fit"], tmp_path / QD_PLOT)
    for name in (COST_PLOT, QD_PLOT):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000
