"""Pairwise judging: a simulated model asked which of two responses is better.

The A/B harness (`selfmoa ab --judge MODEL`) asks in this format, and the simulator recognises it:

    <question>the user's question</question>
    <response id="A">one response</response>
    <response id="B">the other response</response>

and the reply ends with `<winner>A</winner>`, `<winner>B</winner>` or `<winner>tie</winner>`, after a
one-line reason. A judge is only useful to simulate if its verdicts track quality, so on a bundled
task it prefers the correct response with the model's `judge_skill`; elsewhere it has nothing to go
on but length, which stands in for "more complete".
"""

from __future__ import annotations

import random
import re
from typing import Literal

from .answers import extract_answer
from .tasks import find_task

JUDGE_QUESTION_PATTERN = re.compile(r"<question>(.*?)</question>", re.DOTALL)
JUDGE_RESPONSE_PATTERN = re.compile(r'<response id="([AB])">(.*?)</response>', re.DOTALL)
WINNER_FORMAT = "<winner>{verdict}</winner>"
"""The verdict's form in the judge's reply: `{verdict}` is `A`, `B` or `tie`."""
WINNER_PATTERN = re.compile(r"<winner>\s*(A|B|tie)\s*</winner>")

Verdict = Literal["A", "B", "tie"]


def judge_parts(text: str) -> tuple[str, str, str] | None:
    """(question, response A, response B) when `text` is a judge prompt, else None."""
    question = JUDGE_QUESTION_PATTERN.search(text)
    responses = dict(JUDGE_RESPONSE_PATTERN.findall(text))
    if question is None or not {"A", "B"} <= responses.keys():
        return None
    return question.group(1), responses["A"], responses["B"]


def _other(side: Verdict) -> Verdict:
    return "B" if side == "A" else "A"


def _coin(rng: random.Random) -> Verdict:
    return "A" if rng.random() < 0.5 else "B"


def _by_correctness(answer: str, a: str, b: str, skill: float, rng: random.Random) -> tuple[Verdict, str]:
    """The correct response wins; between equals, a tie. A miss (1 - skill) is a coin flip or the wrong side."""
    right_a, right_b = extract_answer(a) == answer, extract_answer(b) == answer
    if right_a != right_b:
        better: Verdict = "A" if right_a else "B"
        if rng.random() < skill:
            return better, f"Response {better} states the correct final answer."
        return _other(better), f"Response {_other(better)} explains its reasoning more clearly."
    if rng.random() < skill:
        both = "Both responses reach the correct final answer." if right_a else "Neither response is correct."
        return "tie", both
    side = _coin(rng)
    return side, f"Response {side} is slightly better presented."


def _by_length(a: str, b: str, skill: float, rng: random.Random) -> tuple[Verdict, str]:
    """With no known answer, the longer response wins (equal lengths tie); a miss is a coin flip."""
    if rng.random() < skill:
        if len(a) == len(b):
            return "tie", "The two responses are equally complete."
        longer: Verdict = "A" if len(a) > len(b) else "B"
        return longer, f"Response {longer} is more complete."
    side = _coin(rng)
    return side, f"Response {side} reads more naturally."


def verdict(text: str, skill: float, rng: random.Random) -> str:
    """The judge's reply to a judge prompt: a one-line reason, then the `<winner>` line."""
    parts = judge_parts(text)
    if parts is None:
        return "I cannot find two responses to compare.\n" + WINNER_FORMAT.format(verdict="tie")
    question, a, b = parts
    task = find_task(question)
    if task is not None:
        winner, reason = _by_correctness(task.answer, a, b, skill, rng)
    else:
        winner, reason = _by_length(a, b, skill, rng)
    return f"{reason}\n{WINNER_FORMAT.format(verdict=winner)}"
