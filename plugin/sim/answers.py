"""Reading the final answer out of a response.

The simulator, its tests and the benchmarks all score a response by its final `Answer: X` line, so
they must agree on one parser: this one. Numbers are normalised ("42.0", "1,000", "$42") so that
equal values compare equal as strings, and option letters ("(B)", "B.") collapse to one capital.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

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
