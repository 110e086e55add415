"""The leak check: does an answer show the ensemble's machinery (our fences, our instructions)?

One definition, shared by `tests/test_real_model.py` (every answer of a real small model, every
approach and placement) and `benchmarks/quality.py` (leaks counted per placement). It is built from
the fixed text of our prompts (`selfmoa.approaches.prompts`), so a rewording of the prompts moves
the check with it, and it is written independently of the hygiene code it checks: a check that
reused the filter's own patterns would pass whatever the filter missed.

What counts as a leak:

- a fence tag in any form: `<candidate id="2">`, `</candidate>`, the escaped forms that `fence()`
  writes inside candidates (`<\\/candidate>`, `<\\candidate`), HTML-escaped ones (`&lt;/candidate&gt;`),
  with or without attributes, and a tag cut off at the very end of the answer (`</candid`, `<cand`);
- the other markup of our prompts: a `cut_off="true"` attribute, a `<best>` tag;
- a clause of our instruction texts (split at sentence and clause punctuation) of at least
  `SHORTEST_CLAUSE` characters, compared case-insensitively with punctuation and whitespace
  normalised: "do not mention the candidates or this process";
- any `RUN_WORDS` consecutive words of an instruction text, normalised the same way: catches a
  partial echo ("keep what is correct, fix what is wrong") that no whole clause matches.

Short clauses ("its end is missing", "Answer the user directly") are left out: ordinary answers say
such things. A plain model never reads our prompts, so its answers are the check's control: any
leak found in them is a false positive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from selfmoa.approaches.prompts import (
    CANDIDATE_CLOSE,
    CANDIDATE_OPEN,
    CANDIDATE_RULES,
    CUT_OFF_OPEN,
    REFERENCES_INSTRUCTIONS,
    SELECT_INSTRUCTIONS,
    SYNTHESIZE_INSTRUCTIONS,
)

__all__ = ["RUN_WORDS", "SHORTEST_CLAUSE", "instruction_clauses", "instruction_runs", "leaks"]

SHORTEST_CLAUSE = 25  # characters of a normalised clause
RUN_WORDS = 6  # consecutive words of an instruction text

INSTRUCTION_TEXTS = (SYNTHESIZE_INSTRUCTIONS, SELECT_INSTRUCTIONS, REFERENCES_INSTRUCTIONS, CANDIDATE_RULES)


def _tag_name() -> str:
    """The fence's tag name, as `CANDIDATE_CLOSE` spells it (`CANDIDATE_OPEN` agrees)."""
    match = re.fullmatch(r"</(\w+)>", CANDIDATE_CLOSE)
    if match is None or not all(t.startswith(f"<{match.group(1)} ") for t in (CANDIDATE_OPEN, CUT_OFF_OPEN)):
        raise RuntimeError(f"the fence is no longer a tag pair: {CANDIDATE_OPEN!r} ... {CANDIDATE_CLOSE!r}")
    return match.group(1)


def _prefixes(name: str, shortest: int) -> str:
    """An alternation of `name`'s prefixes, longest first, down to `shortest` characters."""
    return "(?:" + "|".join(re.escape(name[:k]) for k in range(len(name), shortest - 1, -1)) + ")"


_TAG_NAME = _tag_name()
# `<` or `&lt;`, then `\` and `/` in the orders `fence()` and models write them, then the name.
_TAG = re.compile(r"(?:<|&lt;)\s*\\?/?\\?\s*" + _TAG_NAME, re.IGNORECASE)
# Cut off at the very end: a closing tag with at least its first letter, an opening one with four.
_CUT_TAG = re.compile(
    r"(?:<|&lt;)\\?(?:/\\?" + _prefixes(_TAG_NAME, 1) + r"|\\?" + _prefixes(_TAG_NAME, 4) + r")\s*\Z",
    re.IGNORECASE)
_OTHER_MARKUP = {
    "cut_off attribute": re.compile(r"cut_off\s*=\s*\\?[\"']?true", re.IGNORECASE),
    "<best> tag": re.compile(r"(?:<|&lt;)\s*/?\s*best\s*(?:>|&gt;)", re.IGNORECASE),
}
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
_CLAUSE_END = re.compile(r"[.:;!?](?=\s)|\n+")


def _words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped ("well-structured" and "well structured" agree), every
    number written as 0 (so "given 4 candidate responses" matches the template's "{count}")."""
    words = re.findall(r"[a-z0-9']+", text.casefold().replace("\u2019", "'"))
    return ["0" if word.isdigit() else word for word in words]


def _pieces(template: str) -> list[str]:
    """A template's text between its text placeholders (a run of words never spans the candidates
    themselves); the candidate count stands for any number."""
    return [piece for piece in _PLACEHOLDER.split(template.replace("{count}", "0")) if piece.strip()]


@lru_cache(maxsize=1)
def instruction_clauses() -> tuple[str, ...]:
    """Every clause of our instructions long enough to count, normalised (words joined by spaces)."""
    found: set[str] = set()
    for template in INSTRUCTION_TEXTS:
        for piece in _pieces(template):
            for clause in _CLAUSE_END.split(piece):
                words = _words(clause)
                if len(" ".join(words)) >= SHORTEST_CLAUSE:
                    found.add(" ".join(words))
    return tuple(sorted(found, key=len, reverse=True))


@lru_cache(maxsize=1)
def instruction_runs() -> frozenset[tuple[str, ...]]:
    """Every run of `RUN_WORDS` consecutive words of an instruction text."""
    runs: set[tuple[str, ...]] = set()
    for template in INSTRUCTION_TEXTS:
        for piece in _pieces(template):
            words = _words(piece)
            runs.update(tuple(words[i:i + RUN_WORDS]) for i in range(len(words) - RUN_WORDS + 1))
    return frozenset(runs)


def _echoed_clauses(words: list[str]) -> Iterable[str]:
    """The instruction clauses found in the answer's words (as whole words)."""
    padded = f" {' '.join(words)} "
    for clause in instruction_clauses():
        if f" {clause} " in padded:
            yield clause


def _echoed_spans(words: list[str]) -> list[str]:
    """The stretches of the answer made of instruction word runs (overlapping runs merged)."""
    runs = instruction_runs()
    covered = [False] * len(words)
    for i in range(len(words) - RUN_WORDS + 1):
        if tuple(words[i:i + RUN_WORDS]) in runs:
            covered[i:i + RUN_WORDS] = [True] * RUN_WORDS
    spans: list[str] = []
    start: int | None = None
    for i, hit in enumerate([*covered, False]):
        if hit and start is None:
            start = i
        elif not hit and start is not None:
            spans.append(" ".join(words[start:i]))
            start = None
    return spans


def leaks(text: str) -> list[str]:
    """What of our machinery `text` shows, one description per finding; empty when clean."""
    found = [f"fence tag: {m.group(0)!r}" for m in _TAG.finditer(text)]
    if not found and (cut := _CUT_TAG.search(text)):
        found.append(f"fence tag cut off at the end: {cut.group(0).strip()!r}")
    found += [f"{name}: {m.group(0)!r}" for name, pattern in _OTHER_MARKUP.items() for m in pattern.finditer(text)]
    words = _words(text)
    spans = _echoed_spans(words)
    found += [f"instruction words: {span!r}" for span in spans]
    found += [f"instruction clause: {clause!r}" for clause in _echoed_clauses(words)
              if not any(clause in span for span in spans)]
    return found
