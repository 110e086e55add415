"""Reading the final answer out of a response.

The simulator, its tests and the benchmarks all score a response by its final `Answer: X` line, so
they must agree on one parser: this one. Numbers are normalised ("42.0", "1,000", "$42") so that
equal values compare equal as strings, and option letters ("(B)", "B.") collapse to one capital.
A reply in JSON (structured output) carries its answer in a property instead: `answer_of` reads both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

_ANSWER = re.compile(r"answer\s*[:：]\s*([^\n]*)", re.IGNORECASE)
_NUMBER = re.compile(r"^[-+]?\$?\s*(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_LETTER = re.compile(r"^\(?([A-Za-z])\)?(?:[.):]\s*.*)?$")
_DECORATION = "*_`$ \t"


def normalise_number(text: str) -> str | None:
    """A number in canonical form ("42.0" -> "42", "-0.50" -> "-0.5"), or None if not a number."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    rendered = format(value.normalize(), "f")
    return "0" if rendered in ("-0", "+0") else rendered


def normalise_answer(raw: str) -> str | None:
    """Canonical form of an answer value: a number, an upper-case option letter, or the bare text."""
    value = raw.strip().strip(_DECORATION)
    boxed = re.fullmatch(r"\\boxed\{(.*)\}", value)
    if boxed:
        value = boxed.group(1).strip()
    value = value.rstrip(".,;!").strip().strip(_DECORATION)
    if not value:
        return None
    number = _NUMBER.match(value)
    if number:
        normalised = normalise_number(number.group(0))
        if normalised is not None:
            return normalised
    letter = _LETTER.match(value)
    if letter and (len(value) == 1 or value[0] == "(" or value[1] in ".):"):
        return letter.group(1).upper()
    return value


def extract_answer(text: str) -> str | None:
    """The final answer of a response: the value of its last `Answer: X`, normalised; None if absent."""
    if not text:
        return None
    matches = _ANSWER.findall(text)
    for raw in reversed(matches):
        answer = normalise_answer(raw)
        if answer is not None:
            return answer
    return None


_ANSWER_KEYS = ("answer", "final_answer", "result", "value", "choice")


def _json_object(text: str) -> Any:
    """The JSON value `text` holds (a ```json fence around it allowed), or None when it holds none."""
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, re.DOTALL | re.IGNORECASE)
    body = fenced.group(1) if fenced else body
    if not body.startswith(("{", "[")):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _scalars(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str | int | float]]:
    """Every string or number in a JSON value, depth first, with the keys leading to it."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _scalars(item, (*path, str(key).lower()))
    elif isinstance(value, list):
        for item in value:
            yield from _scalars(item, path)
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
        yield path, value


def json_answer(text: str) -> str | None:
    """The answer a JSON reply carries: its `answer`-like property (at any depth; `answer`,
    `final_answer`, `result`, `value`, `choice`, then any key containing "answer"), else its first
    string or number; normalised as `extract_answer` normalises. None when `text` is not JSON."""
    found = list(_scalars(_json_object(text)))
    named = [v for key in _ANSWER_KEYS for path, v in found if path and path[-1] == key]
    named += [v for path, v in found if path and "answer" in path[-1]]
    for value in named + [v for _, v in found]:
        answer = extract_answer(value) if isinstance(value, str) else None
        answer = answer or normalise_answer(str(value))
        if answer is not None:
            return answer
    return None


def answer_of(text: str) -> str | None:
    """The final answer of a reply in whichever form it came: a JSON object (structured output), or
    text ending with `Answer: X`. An aggregator reads its candidates with this."""
    return json_answer(text) or extract_answer(text)
