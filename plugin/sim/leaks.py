"""The echoing aggregator: a fault in which an aggregation reply leaks the prompt's machinery.

Small real models asked to combine fenced candidates sometimes echo the fences or parrot their
instructions back; a proxy's output hygiene is only testable if the simulator can do the same, on
demand (`leak_rate`, `leak_kinds` in the profile). Only replies to prompts that show candidates
(aggregations, selections, layer-k references) leak. The kinds:

- `trailing_fence`: the answer, then `\\n</candidate>`;
- `leading_fence`: `<candidate id="1">\\n`, then the answer;
- `only_fence`: nothing but `</candidate>`;
- `instructions`: a sentence of the instructions (>= 25 characters, from the text before the first
  candidate, the paragraph nearest to them first), a blank line, then the answer. Without such a
  sentence it leaks a trailing fence instead.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Literal, get_args

from .reading import CANDIDATE_CLOSING, CANDIDATE_OPENING

LeakKind = Literal["trailing_fence", "leading_fence", "only_fence", "instructions"]
LEAK_KINDS: tuple[LeakKind, ...] = get_args(LeakKind)
MIN_SENTENCE = 25

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def instruction_sentences(instructions: str) -> list[str]:
    """The sentences of at least MIN_SENTENCE characters of the last paragraph that has any.

    The last paragraph before the candidates is the instructions' own: with the `last_user`
    placement the user's turn comes first, and its sentences are not machinery.
    """
    for paragraph in reversed(re.split(r"\n\s*\n", instructions)):
        sentences = [s.strip() for s in _SENTENCE_END.split(" ".join(paragraph.split()))]
        long = [s for s in sentences if len(s) >= MIN_SENTENCE]
        if long:
            return long
    return []


def leaked(text: str, kind: LeakKind, instructions: str, rng: random.Random) -> tuple[str, LeakKind]:
    """The reply with the leak of `kind` (the kind that happened: `instructions` may fall back)."""
    if kind == "instructions":
        sentences = instruction_sentences(instructions)
        if sentences:
            return f"{rng.choice(sentences)}\n\n{text}", kind
        kind = "trailing_fence"
    if kind == "leading_fence":
        return f"{CANDIDATE_OPENING.format(number=1)}\n{text}", kind
    if kind == "only_fence":
        return CANDIDATE_CLOSING, kind
    return f"{text}\n{CANDIDATE_CLOSING}", kind


def draw_leak(rate: float, kinds: Sequence[LeakKind], rng: random.Random) -> LeakKind | None:
    """Whether this reply leaks (probability `rate`) and how (uniformly among `kinds`)."""
    if not kinds or rng.random() >= rate:
        return None
    return rng.choice(list(kinds))
