"""Scoring one output against a task's answer: 1.0 right, 0.0 wrong.

The `judge` scorer is not here: it compares two outputs and needs a model (see `judge.py`).
`math` uses math-verify, whose time limit relies on SIGALRM: call `score` from the main thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..sim.answers import extract_answer, normalise_number
from .tasks import LETTERS, Task

_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
_ANSWER_LINE = re.compile(r"answer\s*[:：]\s*([^\n]*)", re.IGNORECASE)
_LETTER_MARK = re.compile(r"\(([A-Z])\)|\b([A-Z])\)|\boption\s+([A-Z])\b|^\s*([A-Z])[.:]?\s*$", re.MULTILINE)
_PUNCTUATION = " \t\n\"'`*_.,;:!?()[]{}"


def last_number(text: str) -> str | None:
    """The last number written in `text`, normalised ("1,000.0" -> "1000"), or None."""
    for raw in reversed(_NUMBER.findall(text)):
        value = normalise_number(raw.rstrip(","))
        if value is not None:
            return value
    return None


def numeric(task: Task, output: str) -> bool:
    """The last number in the output equals the answer (as numbers: 42, 42.0 and 42.00 agree)."""
    return last_number(output) == task.numeric_answer


def normalise_text(text: str) -> str:
    """Case-folded, whitespace collapsed, surrounding punctuation and quotes stripped."""
    return " ".join(text.casefold().split()).strip(_PUNCTUATION)


def final_answer_text(output: str) -> str:
    """The value of the last `Answer:` line if there is one, else the whole output."""
    values = _ANSWER_LINE.findall(output)
    return values[-1] if values else output


def exact(task: Task, output: str) -> bool:
    """The final answer (the `Answer:` line, else the whole output) equals the answer as normalised text."""
    return normalise_text(final_answer_text(output)) == normalise_text(str(task.answer))


def chosen_letter(task: Task, output: str) -> str | None:
    """The option the output chose: its `Answer:` value as a letter or an option's text, else the last
    option marker ("(B)", "B)", "option B") or option text in the output."""
    letters = LETTERS[: len(task.choices or [])]
    options = {normalise_text(text): letters[i] for i, text in enumerate(task.choices or [])}
    answer = extract_answer(output)
    if answer is not None:
        if answer in letters:
            return answer
        if normalise_text(answer) in options:
            return options[normalise_text(answer)]
    return _last_mention(output, letters, options)


def _last_mention(output: str, letters: str, options: dict[str, str]) -> str | None:
    found: list[tuple[int, str]] = []
    for match in _LETTER_MARK.finditer(output):
        letter = next(group for group in match.groups() if group)
        if letter in letters:
            found.append((match.start(), letter))
    folded = output.casefold()
    for text, letter in options.items():
        if text and (position := folded.rfind(text)) >= 0:
            found.append((position, letter))
    return max(found)[1] if found else None


def choice(task: Task, output: str) -> bool:
    return chosen_letter(task, output) == task.answer_letter


def math(task: Task, output: str) -> bool:
    """math-verify: the gold answer and the output parsed as LaTeX/expressions, then compared symbolically."""
    from math_verify import parse, verify

    gold_text = str(task.answer)
    gold = parse(gold_text if "$" in gold_text or "\\" in gold_text else f"${gold_text}$")
    return bool(gold) and bool(verify(gold, parse(output)))


SCORERS: dict[str, Callable[[Task, str], bool]] = {"numeric": numeric, "choice": choice, "exact": exact,
                                                   "math": math}


def score(task: Task, output: str) -> float:
    """1.0 if `output` answers `task` correctly by the task's scorer, else 0.0 (not for `judge`)."""
    return 1.0 if SCORERS[task.kind](task, output) else 0.0
