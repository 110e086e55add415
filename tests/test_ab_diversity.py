"""Vendi diversity of proposals: 1 for identical texts, n for unrelated ones, a hand-worked pair between."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from selfmoa.ab.diversity import vendi_score


def trigrams(text: str) -> Counter[str]:
    return Counter(text[i:i + 3] for i in range(len(text) - 2))


def test_identical_proposals_count_once() -> None:
    assert vendi_score(["Answer: 42"] * 6) == pytest.approx(1.0)


def test_proposals_sharing_nothing_count_fully() -> None:
    assert vendi_score(["aaaa", "bbbb", "cccc", "dddd"]) == pytest.approx(4.0)


def test_a_pair_worked_by_hand() -> None:
    # K = [[1, s], [s, 1]]; the eigenvalues of K/2 are (1 +- s)/2; Vendi = exp(entropy of those)
    a, b = "the answer is 42", "the answer is 43"
    ta, tb = trigrams(a), trigrams(b)
    s = sum(ta[g] * tb[g] for g in ta) / math.sqrt(sum(v * v for v in ta.values()) * sum(v * v for v in tb.values()))
    eigen = [(1 + s) / 2, (1 - s) / 2]
    expected = math.exp(-sum(x * math.log(x) for x in eigen))
    assert vendi_score([a, b]) == pytest.approx(expected)
    assert 1.0 < expected < 2.0


def test_case_and_spacing_do_not_count_as_diversity() -> None:
    assert vendi_score(["The  Answer is 42", "the answer is 42"]) == pytest.approx(1.0)
    assert vendi_score([]) is None
    assert vendi_score(["", "x"]) == pytest.approx(2.0)
