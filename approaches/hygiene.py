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
# escaped forms `fence()` puts inside candidates (`<\/candidate>`, `<\candidate`), HTML entities,
# the plural a model makes of it; and the other markup of our prompts: `<best>` tags, the
# `cut_off="true"` attribute. A small model repeats attributes (`cut_off="false" cut_off="false" ...`),
# so a tag may be long: up to `_ATTRIBUTES` characters of them.
_ATTRIBUTES = 400
_TAG = (r"(?:(?:<|&lt;)\s*\\?/?\\?\s*candidates?\b[^<>\n]{0," + str(_ATTRIBUTES) + r"}(?:>|&gt;)"
        r"|(?:<|&lt;)\s*/?\s*best\s*(?:>|&gt;)|cut_off\s*=\s*(?:\\?\"true\\?\"|'true'|true\b))")
# A tag cut off at the very end of an answer (its token limit came first): `</cand`, `<candidate id="2"`.
_CUT_TAG = r"(?:<|&lt;)\\?(?:/\\?c|\\?cand)[a-z]{0,7}(?:\s[^<>\n]{0," + str(_ATTRIBUTES) + "})?"
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
    return "<" in text or "&lt;" in lowered or "cut_off" in lowered or any(w in lowered for w in _CLAUSE_WORDS)


CUT = "\x00"  # where a piece was taken out (invisible; decides the whitespace around it in the end)


class MarkupFilter:
    """Removes fence tags and instruction clauses from text fed to it piece by piece, leaving a
    `CUT` where each was."""

    def __init__(self) -> None:
        self._held = ""
        self.removed = 0  # pieces of markup taken out so far

    def feed(self, text: str) -> str:
        """The part of everything fed so far that can be shown now."""
        self._held += text.replace(CUT, "")
        return self._scan(_MARKUP, partial=True)

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
            shown.append(CUT)
            position = match.end()
            self.removed += 1
        return "".join(shown)

    def end(self) -> str:
        """What is left once the text is complete (a tag cut off at the end is dropped)."""
        held = self._scan(_MARKUP_AT_END, partial=False)
        cut = _CUT_AT_END.sub(CUT, held)
        if cut != held:
            self.removed += 1
        return cut


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


# An echo that no whole clause matches ("It's a simple, accurate, well-structured response to the
# user"): this many consecutive words of our instructions, numbers counting as their `{count}`.
ECHO_WORDS = 6
_TOKEN = re.compile(r"[a-z0-9']+|\{[a-z_]+\}")
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


def _normal(word: str) -> str:
    return "0" if word.isdigit() or word.startswith("{") else word.strip("'")


def _runs(*templates: str) -> list[set[tuple[str, ...]]]:
    """Every run of 1 to `ECHO_WORDS` consecutive words of the templates, by length."""
    found: list[set[tuple[str, ...]]] = [set() for _ in range(ECHO_WORDS + 1)]
    for template in templates:
        words = [_normal(w) for w in _TOKEN.findall(template.replace("{candidates}", " ").lower())]
        for length in range(1, ECHO_WORDS + 1):
            found[length].update(tuple(words[i:i + length]) for i in range(len(words) - length + 1))
    return found


_RUNS = _runs(SYNTHESIZE_INSTRUCTIONS, SELECT_INSTRUCTIONS, REFERENCES_INSTRUCTIONS, CANDIDATE_RULES)
_RUN_KEYS = {max(run, key=len) for run in _RUNS[ECHO_WORDS]}  # every echo has one of these words in it


class EchoFilter:
    """Removes an echo of our instructions: from the first of `ECHO_WORDS` consecutive words of
    them to the end of its sentence. Fed in pieces, it holds back only words that may still grow
    into such a run (and an unfinished last word)."""

    def __init__(self) -> None:
        self._held = ""
        self._dropping = False  # inside an echo's sentence: dropped up to its end
        self.removed = 0

    def feed(self, text: str) -> str:
        self._held += text
        return self._scan(final=False)

    def end(self) -> str:
        return self._scan(final=True)

    def _scan(self, *, final: bool) -> str:
        shown: list[str] = []
        while True:
            if self._dropping and not self._skip_sentence(final):
                return "".join(shown)
            start, echo = self._find(final)
            if start is None:
                shown.append(self._held)
                self._held = ""
                return "".join(shown)
            if not echo:  # may still become one: wait for what follows
                shown.append(self._held[:start])
                self._held = self._held[start:]
                return "".join(shown)
            shown.append(self._held[:start] + CUT)
            self._held, self._dropping, self.removed = self._held[start:], True, self.removed + 1

    def _skip_sentence(self, final: bool) -> bool:
        """Drop up to the end of the echo's sentence; False while that end has not come yet."""
        end = _SENTENCE_END.search(self._held)
        if end is not None:
            self._held, self._dropping = self._held[end.end():], False
            return True
        # a sentence mark at the very end may yet be "1.5": keep it until the next piece says
        self._held = "" if final or not self._held.endswith((".", "!", "?")) else self._held[-1]
        return False

    def _find(self, final: bool) -> tuple[int | None, bool]:
        """(start, True): an echo starts there; (start, False): hold from there, a run that may
        still grow into one, or an unfinished last word; (None, False): nothing to hold."""
        words = list(_TOKEN.finditer(self._held.lower()))
        unfinished = words.pop() if words and not final and words[-1].end() == len(self._held) else None
        normal = [_normal(w.group()) for w in words]
        for first in range(len(normal)):
            length = 0
            while length < ECHO_WORDS and first + length < len(normal) and \
                    tuple(normal[first:first + length + 1]) in _RUNS[length + 1]:
                length += 1
            if length == ECHO_WORDS:
                return self._with_separator(words[first].start()), True
            if length and not final and first + length == len(normal):
                return self._with_separator(words[first].start()), False
        if unfinished is not None:
            return self._with_separator(unfinished.start()), False
        trailing = self._with_separator(len(self._held))  # may come before an echo: held with it
        return (trailing, False) if not final and trailing < len(self._held) else (None, False)

    def _with_separator(self, start: int) -> int:
        """A run's start with the separator before it (", " is an echo's too, or held with it)."""
        while start and self._held[start - 1] in " ,;:":
            start -= 1
        return start


def _may_echo(text: str) -> bool:
    lowered = text.lower()
    return any(key in lowered for key in _RUN_KEYS)


class AnswerFilter:
    """Our markup, then echoes of our instructions, out of an answer fed in pieces. Where a piece
    at the very start was cut, the whitespace after it goes too (`<candidate id="1">\nParis` shows
    `Paris`); where anything was cut, so does the whitespace at the end (`12\n</candidate>` shows
    `12`). Text with nothing cut is shown as it was, to the byte."""

    def __init__(self) -> None:
        self.markup, self.echo = MarkupFilter(), EchoFilter()
        self._lead = ""  # the start of the answer, while it is only whitespace and cuts
        self._started = False

    @property
    def removed(self) -> int:
        return self.markup.removed + self.echo.removed

    def feed(self, text: str) -> str:
        return self._show(self.echo.feed(self.markup.feed(text)))

    def end(self) -> str:
        tail = self._show(self.echo.feed(self.markup.end()) + self.echo.end(), final=True)
        return tail.rstrip() if self.removed else tail

    def _show(self, text: str, final: bool = False) -> str:
        if not self._started:
            text, self._lead = self._lead + text, ""
            if not text.replace(CUT, "").strip() and not final:
                self._lead = text  # only whitespace (and cuts) so far: what follows decides
                return ""
            lead = len(text) - len(text.lstrip(" \t\n\r" + CUT))
            if CUT in text[:lead]:
                text = text[lead:]
            self._started = bool(text.replace(CUT, ""))
        return text.replace(CUT, "")


def clean(text: str) -> tuple[str, int]:
    """`text` without ensemble markup, and how many pieces were removed: what `AnswerFilter`
    shows of it fed in any pieces, found in one pass (the text is complete: nothing to hold back)."""
    removed = 0
    for _ in range(_MOST_PASSES):  # taking a piece out can join what was around it into a new one
        if not _may_hold_markup(text) and not _may_echo(text):
            break
        answer = AnswerFilter()
        answer.markup._held = text.replace(CUT, "")
        text = answer.end()
        if not answer.removed:
            break
        removed += answer.removed
    return text, removed


_MOST_PASSES = 4


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
