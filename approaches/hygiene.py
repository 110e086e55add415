"""Output hygiene: the answer a user reads never shows the ensemble's machinery.

A small aggregator reads our instructions and fenced candidates as part of what it should answer,
and sometimes writes them back: a closing `</candidate>` after its answer, an opening fence before
it, a clause of the instructions ("do not mention the candidates or this process"). Those pieces
are removed from the answer, whole or streamed; an answer with nothing else in it is unusable,
like an empty one.

`MarkupFilter` does the removal on text that arrives in pieces: it holds back only a tail that
may still become markup (a `<cand` not yet closed, the first words of a clause), so a streamed
answer keeps flowing, and the whole text cleaned at once gives the same result (`clean`).
"""

from __future__ import annotations

import re

import regex

from .prompts import CANDIDATE_RULES, REFERENCES_INSTRUCTIONS, SELECT_INSTRUCTIONS, SYNTHESIZE_INSTRUCTIONS

# A fence tag in every form a model writes it back: opening (with any attributes), closing, the
# escaped forms `fence()` puts inside candidates (`<\/candidate>`, `<\candidate`) and HTML entities.
_TAG = r"(?:<|&lt;)\\?/?\\?candidate\b[^<>\n]{0,80}(?:>|&gt;)"
# A tag cut off at the very end of an answer (its token limit came first): `</cand`, `<candidate id="2"`.
_CUT_TAG = r"(?:<|&lt;)\\?(?:/\\?c|\\?cand)[a-z]{0,6}(?:\s[^<>\n]{0,80})?"
# Clauses of our instructions shorter than this are ordinary phrases ("Reply with its number").
_SHORTEST_CLAUSE = 24


def _clauses(*templates: str) -> list[str]:
    """The instruction clauses worth catching: split at sentence and clause ends, longest first
    (so a clause wins over its own start); a placeholder (`{count}`) stays a placeholder."""
    found: set[str] = set()
    for template in templates:
        text = template.replace("{candidates}", "\n")
        for clause in re.split(r"[.:;!?]\s+|\n+", text):
            clause = " ".join(clause.split()).strip(" .,:;")
            if len(clause) >= _SHORTEST_CLAUSE:
                found.add(clause)
    return sorted(found, key=len, reverse=True)


def _clause_pattern(clause: str) -> str:
    words = [r"\S+" if re.fullmatch(r"\{[a-z_]+\}", word) else regex.escape(word) for word in clause.split()]
    return r"\s+".join(words)


CLAUSES = _clauses(SYNTHESIZE_INSTRUCTIONS, SELECT_INSTRUCTIONS, REFERENCES_INSTRUCTIONS, CANDIDATE_RULES)
# A piece takes the whitespace before it, so `12\n</candidate>` becomes `12`.
_PIECES = "|".join([_TAG, *(_clause_pattern(c) for c in CLAUSES)])
# A clause ends at its punctuation or before whitespace: one that reaches the end of the text so far
# may go on (held back), unless the text is complete (`_MARKUP_AT_END`).
_MARKUP = regex.compile(rf"\s*(?:{_TAG}|(?:{_PIECES})(?:[.:;,!]|(?=\s)))", regex.IGNORECASE)
_MARKUP_AT_END = regex.compile(rf"\s*(?:{_TAG}|(?:{_PIECES})(?:[.:;,!]|(?=\s)|\Z))", regex.IGNORECASE)
_CUT_AT_END = re.compile(rf"\s*{_CUT_TAG}\Z", re.IGNORECASE)
_WORD = re.compile(r"\w")
_CLAUSE_WORDS = {max(re.findall(r"[a-z_]+", clause.lower()), key=len) for clause in CLAUSES}
_INSTRUCTION_TEXT = " ".join(" ".join(t.split()) for t in (SYNTHESIZE_INSTRUCTIONS, SELECT_INSTRUCTIONS,
                                                           REFERENCES_INSTRUCTIONS)).lower()
_SHORTEST_ECHO = 12  # a shorter fragment ("one", "the user") may well be an answer of its own


def _may_hold_markup(text: str) -> bool:
    """A quick look before the patterns: every piece of markup has a `<` (or `&lt;`) or one of
    the clauses' own longest words in it."""
    lowered = text.lower()
    return "<" in text or "&lt;" in lowered or any(word in lowered for word in _CLAUSE_WORDS)


class MarkupFilter:
    """Removes fence tags and instruction clauses from text fed to it piece by piece.

    Until something is shown, leading whitespace is held too: an answer that opened with a fence
    starts at its first word, not at the newline after the fence.
    """

    def __init__(self) -> None:
        self._held = ""
        self._started = False  # something was shown
        self.removed = 0  # pieces of markup taken out so far

    def feed(self, text: str) -> str:
        """The part of everything fed so far that can be shown now."""
        self._held += text
        return self._show(self._scan(_MARKUP, partial=True))

    def _scan(self, markup: regex.Pattern[str], *, partial: bool) -> str:
        shown: list[str] = []
        position = 0
        while True:
            match = _leftmost(markup, self._held, position) if partial else markup.search(self._held, position)
            if match is None:
                shown.append(self._held[position:])
                self._held = ""
                break
            shown.append(self._held[position:match.start()])
            if match.partial:  # may still grow into markup: wait for more text
                self._held = self._held[match.start():]
                break
            position = match.end()
            self.removed += 1
        return "".join(shown)

    def end(self) -> str:
        """What is left once the text is complete (a tag cut off at the end is dropped)."""
        held = self._scan(_MARKUP_AT_END, partial=False)
        cut = _CUT_AT_END.sub("", held)
        if cut != held:
            self.removed += 1
        tail = self._show(cut, final=True)
        return tail.rstrip() if self.removed else tail

    def _show(self, text: str, final: bool = False) -> str:
        if self._started:
            return text
        if not text.strip() and not final:
            self._held = text + self._held  # only whitespace so far: what follows decides
            return ""
        if self.removed:
            text = text.lstrip()
        self._started = bool(text)
        return text


def _leftmost(markup: regex.Pattern[str], text: str, start: int) -> regex.Match[str] | None:
    """The first place from `start` where markup is, or may be once more text comes. (`regex`'s
    own partial search prefers a full match anywhere to a partial one before it, which would let
    the start of a clause out just before a tag inside it.)"""
    full = markup.search(text, start)
    end = full.start() if full else len(text)
    position = start
    while position < end:
        maybe = markup.search(text, position, end, partial=True)
        if maybe is None or maybe.start() >= end:
            break
        real = markup.match(text, maybe.start(), partial=True)
        if real is not None:
            return real
        position = maybe.start() + 1
    return full


def clean(text: str) -> tuple[str, int]:
    """`text` without ensemble markup, and how many pieces were removed: what `MarkupFilter`
    shows of it fed in any pieces, found in one pass (the text is complete: nothing to hold back)."""
    if not _may_hold_markup(text):
        return text, 0
    markup = MarkupFilter()
    markup._held = text
    return markup.end(), markup.removed


def has_words(text: str) -> bool:
    """Whether a piece of an answer has any words in it (a fence or punctuation has none)."""
    return bool(_WORD.search(text))


def says_something(text: str, *, complete: bool = True) -> bool:
    """Whether a cleaned answer says anything of its own: not when every part of it with words is a
    fragment of our instructions (what is left of an echo once its long clauses are taken out).
    Of an answer still being written, the last part may yet grow into such a fragment."""
    parts = re.split(r"[.:;!?,\n]+", text)
    return any(has_words(part) and not _echoed(part, growing=not complete and index == len(parts) - 1)
               for index, part in enumerate(parts))


def _echoed(part: str, growing: bool) -> bool:
    words = " ".join(part.lower().split())
    return (growing or len(words) >= _SHORTEST_ECHO) and words in _INSTRUCTION_TEXT
