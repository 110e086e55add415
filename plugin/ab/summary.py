"""From rows to the summary table: one line per approach, compared with the baseline task by task.

Errors count as wrong (score 0) for accuracy and comparisons, and are counted apart (`errors`).
Latency percentiles are over the requests that succeeded. Token totals are over answered rows and
are null when some reply did not report them (`tokens_complete: false`); likewise `cost` is null
when it is incomplete (`cost_complete: false`), its known part in `cost_lower_bound`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .cost import Price, row_cost
from .endpoint import is_ours
from .stats import (
    Fit,
    bootstrap_interval,
    fit_quality_diversity,
    holm_adjusted,
    mcnemar_exact,
    percentile,
    wilson_interval,
)

ALPHA = 0.05
Row = Mapping[str, Any]


def _score(row: Row) -> float:
    return float(row["score"]) if row.get("score") is not None else 0.0


def _interval(scores: list[float], seed: int, judged: bool) -> tuple[float, float, str]:
    """Wilson for right/wrong scores; the bootstrap for judged win rates (1 / 0.5 / 0), chosen by the
    scorer, not by the values a run happened to get (four judged wins are still a win rate)."""
    if not judged and all(s in (0.0, 1.0) for s in scores):
        low, high = wilson_interval(int(sum(scores)), len(scores))
        return low, high, "wilson"
    low, high = bootstrap_interval(scores, seed)
    return low, high, "bootstrap"


def _tokens(answered: Sequence[Row], key: str) -> int | None:
    values = [row.get(key) for row in answered]
    return int(sum(v for v in values if v is not None)) if values and None not in values else None


def _versus(rows: dict[str, Row], baseline: dict[str, Row]) -> tuple[int, int]:
    """Tasks the approach scored above the baseline (wins) and below it (losses)."""
    shared = [task for task in rows if task in baseline]
    wins = sum(_score(rows[t]) > _score(baseline[t]) for t in shared)
    losses = sum(_score(rows[t]) < _score(baseline[t]) for t in shared)
    return wins, losses


def _cost(answered: Sequence[Row], model: str, prices: Mapping[str, Price] | None) -> dict[str, Any]:
    if not prices:
        return {"cost": None, "cost_complete": None, "cost_lower_bound": None}
    costs = [row_cost(row, model, prices) for row in answered]
    total, complete = sum(c.dollars for c in costs), all(c.complete for c in costs)
    return {"cost": total if complete else None, "cost_complete": complete, "cost_lower_bound": total}


def _mean(values: Sequence[Any]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return sum(known) / len(known) if known else None


def early_exits(answered: Sequence[Row]) -> int | None:
    """How many answers skipped the aggregation because their proposals agreed (`moa.agree`), read
    from the traces; None when no answer has a trace (other approaches, or `moa.trace` refused)."""
    traced = [row for row in answered if row.get("proposals") is not None]
    return sum(row.get("early_exit") is not None for row in traced) if traced else None


def approach_row(approach: str, rows: dict[str, Row], baseline: dict[str, Row] | None, model: str,
                 prices: Mapping[str, Price] | None, seed: int) -> dict[str, Any]:
    """The summary line of one approach; `rows` maps task id to that approach's row."""
    scores = [_score(row) for row in rows.values()]
    answered = [row for row in rows.values() if row.get("error") is None]
    judged = any("judge" in row for row in rows.values())
    low, high, method = _interval(scores, seed, judged) if scores else (None, None, None)
    wins, losses = _versus(rows, baseline) if baseline is not None else (0, 0)
    latencies = [float(row["latency_s"]) for row in answered]
    tokens = {key: _tokens(answered, key) for key in ("prompt_tokens", "completion_tokens")}
    return {
        "approach": approach, "n": len(rows), "correct": sum(scores),
        "accuracy": sum(scores) / len(rows) if rows else None,
        "ci_low": low, "ci_high": high, "ci_method": method,
        "p_vs_baseline": mcnemar_exact(wins, losses) if baseline is not None else None, "p_holm": None,
        "wins": wins, "losses": losses,
        "latency_p50": percentile(latencies, 50), "latency_p95": percentile(latencies, 95),
        **tokens, "tokens_complete": None not in tokens.values(),
        **_cost(answered, model, prices),
        "errors": len(rows) - len(answered), "early_exits": early_exits(answered),
        "quality": _mean([row.get("quality") for row in answered]),
        "diversity": _mean([row.get("diversity") for row in answered]),
        "judge_unparsed": sum((row.get("judge") or {}).get("unparsed", 0) for row in rows.values()),
    }


def _standardised(values: Sequence[float]) -> list[float]:
    array = np.asarray(values, float)
    spread = array.std() if array.size else 0.0
    return list((array - array.mean()) / spread) if spread > 0 else [0.0] * len(values)


def quality_diversity_fit(rows: Sequence[Row]) -> dict[str, Any]:
    """The paper's fit over our approaches' rows, raw and on standardised quality and diversity."""
    points = [r for r in rows if is_ours(str(r.get("approach"))) and r.get("error") is None
              and r.get("quality") is not None and r.get("diversity") is not None]
    quality = [float(r["quality"]) for r in points]
    diversity = [float(r["diversity"]) for r in points]
    score = [_score(r) for r in points]
    raw: Fit | None = fit_quality_diversity(quality, diversity, score)
    z: Fit | None = fit_quality_diversity(_standardised(quality), _standardised(diversity), score)
    return {"points": len(points), "raw": asdict(raw) if raw else None, "standardised": asdict(z) if z else None}


@dataclass(frozen=True)
class Scope:
    """Which rows a summary covers: these task ids and approaches, with this baseline."""

    task_ids: list[str]
    approaches: list[str]
    baseline: str
    model: str


def summarise(done: Mapping[tuple[str, str], Row], scope: Scope, prices: Mapping[str, Price] | None,
              seed: int) -> dict[str, Any]:
    by_approach = {a: {t: done[(t, a)] for t in scope.task_ids if (t, a) in done} for a in scope.approaches}
    baseline = by_approach[scope.baseline]
    lines = [approach_row(a, by_approach[a], None if a == scope.baseline else baseline, scope.model, prices, seed)
             for a in scope.approaches]
    compared = [line for line in lines if line["p_vs_baseline"] is not None]
    for line, adjusted in zip(compared, holm_adjusted([line["p_vs_baseline"] for line in compared])):
        line["p_holm"] = adjusted
    rows = [row for mine in by_approach.values() for row in mine.values()]
    return {"baseline": scope.baseline, "model": scope.model, "tasks": len(scope.task_ids), "alpha": ALPHA,
            "approaches": lines, "quality_diversity_fit": quality_diversity_fit(rows)}
