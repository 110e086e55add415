"""The statistics of an A/B run, all from scipy: nothing here is hand-rolled beyond the bookkeeping.

- Accuracy intervals: Wilson 95% (good coverage at small n and near 0 or 1, unlike the normal
  approximation).
- Approach vs baseline: the exact McNemar test. Only the discordant tasks carry information (one
  right, the other wrong); under "no difference" each is a coin flip, so p is the two-sided binomial
  test of wins against losses at 1/2.
- Several approaches against one baseline: Holm's step-down adjustment of those p-values, so "significant
  at 0.05" holds for the family of comparisons, not each one alone (the more approaches, the likelier
  one of them looks better by chance).
- Judged win rates (scores 1 / 0.5 / 0, each already a comparison with the baseline on the same
  task): a percentile bootstrap over tasks, so each task's pair of answers stays together. Seeded.
- Quality and diversity: the paper's least-squares fit score = alpha*quality + beta*diversity + c.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.linalg import lstsq
from scipy.stats import binomtest, bootstrap

CONFIDENCE = 0.95
MIN_FIT_POINTS = 5
"""A three-parameter fit on fewer points says nothing (four points leave one degree of freedom)."""


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of successes/n; (0, 1) when there is no data."""
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(successes, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts; 1.0 when there are none."""
    if wins + losses == 0:
        return 1.0
    return float(binomtest(wins, wins + losses, 0.5, alternative="two-sided").pvalue)


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the given order: the k-th smallest of m is multiplied by
    m - k + 1, then made non-decreasing in that order and capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def bootstrap_interval(scores: Sequence[float], seed: int, resamples: int = 9999) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean score, resampling tasks; seeded."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return 0.0, 1.0
    if np.all(values == values[0]):  # every resample has the same mean: the interval is that point
        return float(values[0]), float(values[0])
    result = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=CONFIDENCE,
                       method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation, numpy's default); None without values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else None


@dataclass(frozen=True)
class Fit:
    """score = alpha*quality + beta*diversity + c, fitted on `points` points; r2 its explained variance."""

    alpha: float
    beta: float
    c: float
    points: int
    r2: float | None


def equation(alpha: float, beta: float, c: float, digits: int = 3) -> str:
    """The fit as text, signs folded in: "score = 0.800 quality - 0.100 diversity + 0.200"."""
    def term(value: float) -> str:
        return f"{'-' if value < 0 else '+'} {abs(value):.{digits}f}"

    return f"score = {alpha:.{digits}f} quality {term(beta)} diversity {term(c)}"


def fit_quality_diversity(quality: Sequence[float], diversity: Sequence[float],
                          score: Sequence[float]) -> Fit | None:
    """The least-squares fit, or None when there are too few points or quality/diversity do not vary."""
    if len(score) < MIN_FIT_POINTS:
        return None
    design = np.column_stack([np.asarray(quality, float), np.asarray(diversity, float), np.ones(len(score))])
    target = np.asarray(score, float)
    coefficients, _, rank, _ = lstsq(design, target)
    if rank < 3:
        return None
    residual = target - design @ coefficients
    spread = float(np.sum((target - target.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / spread if spread > 0 else None
    return Fit(float(coefficients[0]), float(coefficients[1]), float(coefficients[2]), len(score), r2)
