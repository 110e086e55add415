"""`selfmoa ab` statistics against values computed independently (by hand or from first principles)."""

from __future__ import annotations

import itertools
import math

import pytest

from selfmoa.ab.report import _significance
from selfmoa.ab.stats import (
    bootstrap_interval,
    equation,
    fit_quality_diversity,
    holm_adjusted,
    mcnemar_exact,
    percentile,
    wilson_interval,
)

Z = 1.959963984540054  # the 97.5% normal quantile


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


@pytest.mark.parametrize(("k", "n"), [(7, 10), (15, 20), (1, 3), (43, 43)])
def test_wilson_matches_the_textbook_formula(k: int, n: int) -> None:
    assert wilson_interval(k, n) == pytest.approx(wilson_by_hand(k, n), abs=1e-9)


def test_wilson_at_the_edges_worked_by_hand() -> None:
    # 0/10: low 0, high z^2/(n+z^2); 10/10: low n/(n+z^2), high 1
    assert wilson_interval(0, 10) == pytest.approx((0.0, 3.841458820694124 / 13.841458820694124))
    assert wilson_interval(10, 10) == pytest.approx((10 / 13.841458820694124, 1.0))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def binomial_two_sided(wins: int, losses: int) -> float:
    """Exact McNemar: twice the smaller tail of Binomial(wins+losses, 1/2), capped at 1."""
    n, k = wins + losses, min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize(("wins", "losses"), [(1, 6), (6, 1), (5, 0), (11, 2), (8, 10), (3, 3), (0, 1)])
def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_pairs(wins: int, losses: int) -> None:
    assert mcnemar_exact(wins, losses) == pytest.approx(binomial_two_sided(wins, losses), rel=1e-9)


def test_mcnemar_worked_by_hand() -> None:
    assert mcnemar_exact(1, 6) == pytest.approx(2 * (1 + 7) / 128)   # 0.125
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)               # 0.0625
    assert mcnemar_exact(0, 0) == 1.0                                  # no discordant pair: no evidence


def exact_bootstrap_quantiles(values: list[float], q_low: float, q_high: float) -> tuple[float, float]:
    """The quantiles of the exact bootstrap distribution of the mean: every resample, equally likely."""
    means = sorted(sum(sample) / len(values) for sample in itertools.product(values, repeat=len(values)))
    return means[math.floor(q_low * len(means))], means[math.ceil(q_high * len(means)) - 1]


def test_bootstrap_on_a_tiny_case_matches_the_exact_bootstrap_distribution() -> None:
    # [0, 1, 1, 1]: the resampled mean is Binomial(4, 3/4)/4; P(mean <= 0) = 1/256 < 2.5% < P(mean <= 1/4)
    # = 13/256, and P(mean < 1) = 175/256 < 97.5%: the exact 95% percentile interval is [0.25, 1.0].
    values = [0.0, 1.0, 1.0, 1.0]
    assert exact_bootstrap_quantiles(values, 0.025, 0.975) == (0.25, 1.0)
    assert bootstrap_interval(values, seed=0) == (0.25, 1.0)
    assert bootstrap_interval(values, seed=12345) == (0.25, 1.0)


def test_bootstrap_of_judge_scores_is_seeded_and_close_to_the_exact_distribution() -> None:
    values = [1.0, 0.5, 0.0, 1.0, 0.5]
    low, high = bootstrap_interval(values, seed=7)
    assert (low, high) == bootstrap_interval(values, seed=7)
    exact_low, exact_high = exact_bootstrap_quantiles(values, 0.025, 0.975)
    assert low == pytest.approx(exact_low, abs=0.1) and high == pytest.approx(exact_high, abs=0.1)
    assert bootstrap_interval([0.5, 0.5, 0.5], seed=0) == (0.5, 0.5)


def test_percentiles_interpolate_linearly() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([], 50) is None


def test_the_quality_diversity_fit_recovers_a_known_plane() -> None:
    quality = [0.0, 1.0, 0.5, 0.25, 0.75, 1.0]
    diversity = [1.0, 2.0, 4.0, 3.0, 1.5, 5.0]
    score = [0.8 * q + 0.1 * d - 0.2 for q, d in zip(quality, diversity)]
    fit = fit_quality_diversity(quality, diversity, score)
    assert fit is not None
    assert (fit.alpha, fit.beta, fit.c) == pytest.approx((0.8, 0.1, -0.2))
    assert fit.r2 == pytest.approx(1.0) and fit.points == 6


def test_the_fit_refuses_too_few_or_degenerate_points() -> None:
    assert fit_quality_diversity([0.1, 0.2, 0.3, 0.4], [1, 2, 3, 1], [0, 1, 0, 1]) is None   # 4 < 5 points
    assert fit_quality_diversity([0.1, 0.2, 0.3, 0.4, 0.5], [2] * 5, [0, 1, 0, 1, 1]) is None  # diversity constant


def test_the_fit_reads_with_its_signs() -> None:
    assert equation(0.8, -0.1, 0.2) == "score = 0.800 quality - 0.100 diversity + 0.200"


def test_holm_worked_by_hand() -> None:
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> kept non-decreasing: 0.06
    assert holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjusted([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm_adjusted([0.02]) == [0.02] and holm_adjusted([]) == []


def test_the_report_judges_significance_after_holms_correction() -> None:
    lines = [{"approach": "none", "p_vs_baseline": None, "wins": 0, "losses": 0},
             {"approach": "a", "p_vs_baseline": 0.03, "p_holm": 0.06, "wins": 9, "losses": 1},
             {"approach": "b", "p_vs_baseline": 0.01, "p_holm": 0.02, "wins": 11, "losses": 1}]
    notes = _significance({"alpha": 0.05, "baseline": "none", "approaches": lines})
    assert "p = 0.03, 0.06 after Holm's correction for 2 comparisons: **not significant**" in notes[0]
    assert "p = 0.01, 0.02 after Holm's correction for 2 comparisons: significant" in notes[1]
