"""`selfmoa ab` scorers: numeric, choice, exact, math, and which one a task gets by default."""

from __future__ import annotations

from typing import Any

import pytest

from selfmoa.ab.scorers import chosen_letter, last_number, score
from selfmoa.ab.tasks import Task


def task(**fields: Any) -> Task:
    return Task.model_validate({"id": "t", "prompt": "Q?", **fields})


@pytest.mark.parametrize(("output", "expected"), [
    ("12 x 8 = 96, minus 30 leaves 66.\nAnswer: 66", 1.0),
    ("The total is 1,000.", 0.0),           # the last number is 1000, not 66
    ("Answer: 66.0", 1.0),                  # numbers compare as numbers
    ("I get $66", 1.0),
    ("66 at first, but on reflection 67", 0.0),
    ("no number at all", 0.0),
])
def test_numeric_scores_the_last_number(output: str, expected: float) -> None:
    assert score(task(answer=66), output) == expected


def test_numeric_normalises_the_answer_too() -> None:
    assert score(task(answer="1,000.50"), "Answer: 1000.5") == 1.0
    assert last_number("from -3 to -2.50,") == "-2.5"


CAPITAL = {"prompt": "Capital of France?", "choices": ["Berlin", "Paris", "Rome"], "answer": "B"}


@pytest.mark.parametrize(("output", "letter"), [
    ("Answer: B", "B"), ("Answer: (b)", "B"), ("Answer: Paris", "B"),      # the Answer line: letter or text
    ("I would pick (C) here.", "C"), ("Option A is wrong; option B is right", "B"),
    ("It has to be Rome.", "C"),                                            # the last option text mentioned
    ("I do not know.", None),
])
def test_choice_reads_the_chosen_letter_or_option_text(output: str, letter: str | None) -> None:
    assert chosen_letter(task(**CAPITAL), output) == letter


def test_choice_scores_against_a_letter_or_an_option_text_answer() -> None:
    assert score(task(**CAPITAL), "Answer: Paris") == 1.0
    assert score(task(**{**CAPITAL, "answer": "paris"}), "Answer: B") == 1.0
    assert score(task(**CAPITAL), "Answer: A") == 0.0


@pytest.mark.parametrize(("output", "expected"), [
    ("Answer: Paris", 1.0), ("answer:  paris.", 1.0), ('"PARIS"', 1.0),
    ("Answer: Paris, France", 0.0), ("The answer is Paris", 0.0),
])
def test_exact_compares_the_final_answer_as_normalised_text(output: str, expected: float) -> None:
    assert score(task(answer="Paris", scorer="exact"), output) == expected


@pytest.mark.parametrize(("output", "expected"), [
    (r"So $x = \frac{1}{2}$, i.e. \boxed{\frac{1}{2}}", 1.0),
    ("The probability is 0.5", 1.0),
    (r"\boxed{\frac{2}{4}}", 1.0),
    (r"\boxed{\frac{1}{3}}", 0.0),
])
def test_math_verifies_symbolically(output: str, expected: float) -> None:
    assert score(task(answer=r"\frac{1}{2}", scorer="math"), output) == expected


def test_math_accepts_a_plain_answer() -> None:
    assert score(task(answer="sqrt(2)", scorer="math"), r"The side is \boxed{\sqrt{2}}") == 1.0


@pytest.mark.parametrize(("fields", "kind"), [
    ({"answer": 42}, "numeric"), ({"answer": "42"}, "numeric"), ({"answer": "-3.5"}, "numeric"),
    ({"answer": "Paris"}, "exact"), (CAPITAL, "choice"), ({"answer": "42", "scorer": "exact"}, "exact"),
    ({"scorer": "judge"}, "judge"),
])
def test_the_default_scorer_follows_the_task(fields: dict[str, Any], kind: str) -> None:
    assert task(**fields).kind == kind
