"""Whether a request's proposals already agree, so that the aggregation can be skipped (`moa.agree`).

Pure functions over texts: no I/O, no clock but the `re:` guard below. Two parts:

- an `AnswerReader` (`moa.answer`) reads a proposal's *final answer* out of its text: `numeric`,
  `choice`, `exact` or `re:PATTERN`. Reasoning (`<think>` blocks) is never read: a number or a
  letter in the scratchpad is not what the proposal answered. A text without such an answer reads
  as None: it cannot agree with anything, but it still counts as a proposal.
- `agreement` says whether at least a share of the usable proposals give the same answer, and
  which proposal to answer with: the first complete one with that answer (a cut-off proposal may
  vote, but it is never the answer returned).

A user's `re:` pattern runs on texts that models wrote, so a pattern with catastrophic backtracking
must not hold a request: each search is bounded by `PATTERN_TIMEOUT`, and a search that runs out
reads as no answer (the request then aggregates, as it would without `agree`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import regex

from .types import Candidate, Choice, Recipe, Sample

NAMED_READERS = ("numeric", "choice", "exact")
PATTERN_PREFIX = "re:"
DEFAULT_READER = "exact"
MAX_PATTERN_CHARS = 1000
PATTERN_TIMEOUT = 0.1
"""Seconds one `re:` search may take (a guard against runaway patterns; loose under heavy load)."""

Proposal = Sample | Candidate | str
"""What `agreement` reads: a usable proposal (its candidate form), or a bare text (never cut off)."""

# --- reasoning -------------------------------------------------------------------------------------------

_THINK_BLOCK = regex.compile(r"<(think(?:ing)?)>.*?</\1>", regex.DOTALL | regex.IGNORECASE)
_THINK_CLOSE = regex.compile(r"</think(?:ing)?>", regex.IGNORECASE)
_THINK_OPEN = regex.compile(r"<think(?:ing)?>", regex.IGNORECASE)


def without_reasoning(text: str) -> str:
    """The text with its reasoning taken out: whole `<think>` blocks, what precedes a stray closing
    tag (models that start mid-thought), and an unclosed block to the end (cut off while thinking)."""
    text = _THINK_BLOCK.sub(" ", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    opening = _THINK_OPEN.search(text)
    return text[: opening.start()] if opening else text


# --- numeric ---------------------------------------------------------------------------------------------

_SIGN = r"(?:(?<![\w.])[-+\u2212])?"
_PLAIN = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d{1,3})?|\.\d+"
_NUMBER = regex.compile(
    rf"\\[dt]?frac\{{\s*(?P<ln>{_SIGN}\d{{1,18}})\s*\}}\{{\s*(?P<ld>\d{{1,18}})\s*\}}"  # \frac{3}{4}
    rf"|(?<![\d/.])(?P<fn>{_SIGN}\d{{1,18}})\s*/\s*(?P<fd>\d{{1,18}})(?![\d/]|\.\d)"  # 3/4, not a date 3/4/2025
    rf"|(?<![\d.])(?P<num>{_SIGN}(?:{_PLAIN}))(?!\d)"
)


def _decimal(raw: str) -> Decimal | None:
    """A written number as an exact Decimal (its own precision: never rounded to the default 28 digits)."""
    cleaned = raw.replace(",", "").replace("\u2212", "-")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _render(value: Decimal) -> str:
    """The canonical text of a number, so 12, 12.0 and 12.00 (and -0 and 0) read the same."""
    digits = len(value.as_tuple().digits)
    rendered = format(value.normalize(Context(prec=max(28, digits))), "f")
    return "0" if rendered in ("-0", "+0") else rendered


def _render_fraction(value: Fraction) -> str:
    """3/4 as 0.75 (it agrees with a proposal writing 0.75); 1/3, which has no finite decimal, as 1/3."""
    twos = fives = 0
    rest = value.denominator
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = value.numerator * (10**places // value.denominator)
    return _render(Decimal(scaled).scaleb(-places))


def _number(match: Any) -> str | None:
    for top, bottom in (("ln", "ld"), ("fn", "fd")):
        if match.group(top) is not None:
            numerator, denominator = _decimal(match.group(top)), int(match.group(bottom))
            if numerator is None or denominator == 0:
                return None
            return _render_fraction(Fraction(int(numerator), denominator))
    value = _decimal(match.group("num"))
    return _render(value) if value is not None else None


def read_numeric(text: str) -> str | None:
    """The last number in the answer, canonical: integers, decimals, signs, 1,234 thousands, 1e5,
    fractions (3/4, \\frac{3}{4}) as their value. A trailing `%` is ignored: proposals that write 50%
    and 50 gave the same answer to the same question."""
    for match in reversed(list(_NUMBER.finditer(without_reasoning(text)))):
        value = _number(match)
        if value is not None:
            return value
    return None


# --- choice ----------------------------------------------------------------------------------------------

_STATED = regex.compile(
    r"(?i:\banswer)\s*[*_]*\s*(?:(?i:is)\b\s*[:：]?|[:：])\s*[*_]*\s*(?:\\boxed\{|\\text\{|[(\[])?\s*[*_]*"
    r"(?:(?P<letter>[A-Z])(?![A-Za-z0-9])|(?P<lower>[a-z])(?=[\s.)\]}*_]*$))",
    regex.MULTILINE,
)
_MARKED = regex.compile(
    r"^[\s>*_#]*[(\[]?(?P<lone>[A-Z])[)\]]?[.:]?[\s*_]*$"  # a lone letter line: "B", "(B)", "**B.**"
    r"|\*\*\s*\(?(?P<bold>[A-Z])\)?\s*\*\*"  # **B**, **(B)**
    r"|\((?P<paren>[A-Z])\)"  # (B)
    r"|(?i:\boption)\s+\(?(?P<named>[A-Z])\b",  # option B
    regex.MULTILINE,
)


def _last_letter(pattern: Any, text: str) -> str | None:
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    found = next(group for group in matches[-1].groups() if group)
    return str(found).upper()


def read_choice(text: str) -> str | None:
    """The chosen option letter. A stated answer ("Answer: B", "The answer is (B).") wins over any
    other mark, since an explanation written after it often names the options it rejected; without
    one, the last mark: a lone letter line, **B**, (B), "option B"."""
    answer = without_reasoning(text)
    return _last_letter(_STATED, answer) or _last_letter(_MARKED, answer)


# --- exact and re: ---------------------------------------------------------------------------------------

_EMPHASIS = regex.compile(r"(?<!\w)[*_`~]+|[*_`~]+(?!\w)")
_TRAILING = ".,;:!?\u3002\uff0e\uff01\uff1f \t\n"


def normalise(text: str) -> str | None:
    """Text as `exact` compares it: Unicode-normalised, markdown emphasis and code marks taken out,
    case-folded, whitespace collapsed, trailing punctuation stripped; None when nothing is left."""
    plain = _EMPHASIS.sub("", unicodedata.normalize("NFKC", text))
    folded = " ".join(plain.casefold().split()).rstrip(_TRAILING)
    return folded or None


def read_exact(text: str) -> str | None:
    return normalise(without_reasoning(text))


def _read_pattern(pattern: Any, text: str) -> str | None:
    """The last match's group, normalised like `exact` (matches whose group is empty are skipped)."""
    try:
        matches = list(pattern.finditer(without_reasoning(text), timeout=PATTERN_TIMEOUT))
    except TimeoutError:
        return None
    for match in reversed(matches):
        group = match.group(1)
        value = normalise(group) if group is not None else None
        if value is not None:
            return value
    return None


# --- the reader ------------------------------------------------------------------------------------------

_NAMED: dict[str, Callable[[str], str | None]] = {"numeric": read_numeric, "choice": read_choice,
                                                  "exact": read_exact}


@dataclass(frozen=True)
class AnswerReader:
    """How proposals' final answers are read (`moa.answer`): `AnswerReader("numeric")`, or
    `parse_reader(option)`. A bad option raises ValueError saying what is allowed (the config layer
    turns it into a 400 naming `moa.answer`)."""

    option: str
    """The option as given: `numeric`, `choice`, `exact` or `re:PATTERN`."""
    _pattern: Any = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.option, str):
            raise ValueError(f"expected a string: one of {', '.join(NAMED_READERS)} or re:PATTERN")
        if self.option in _NAMED:
            return
        if self.option.startswith(PATTERN_PREFIX):
            object.__setattr__(self, "_pattern", _compile(self.option[len(PATTERN_PREFIX):]))
            return
        raise ValueError(f"unknown answer reader {self.option[:60]!r}: expected one of {', '.join(NAMED_READERS)} "
                         "or re:PATTERN (a regular expression with one capturing group)")

    def read(self, text: str) -> str | None:
        """The text's answer in canonical form (equal answers compare equal), or None."""
        if self._pattern is not None:
            return _read_pattern(self._pattern, text)
        return _NAMED[self.option](text)

    def __str__(self) -> str:
        return self.option


def _compile(source: str) -> Any:
    if not source:
        raise ValueError("re:PATTERN needs a pattern after `re:`, with one capturing group")
    if len(source) > MAX_PATTERN_CHARS:
        raise ValueError(f"re:PATTERN: the pattern is {len(source)} characters; at most {MAX_PATTERN_CHARS}")
    try:
        compiled = regex.compile(source)
    except (regex.error, ValueError, OverflowError, RecursionError) as error:
        raise ValueError(f"re:PATTERN: the pattern does not compile ({error})") from None
    if compiled.groups != 1:
        raise ValueError(f"re:PATTERN: the pattern must have exactly one capturing group, the answer "
                         f"(it has {compiled.groups}); use (?:...) for other groups")
    return compiled


def parse_reader(option: object) -> AnswerReader:
    """The reader an option string names (`moa.answer`); ValueError when there is none."""
    return AnswerReader(option)  # type: ignore[arg-type]  # checked in __post_init__


# --- agreement -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """The answer that at least the asked share of the usable proposals gave.

    `index` is the position, among the proposals given, of the first complete one with that answer:
    the proposal to answer with. `share` is `count / total` (`total`: every usable proposal,
    those whose answer could not be read included).
    """

    answer: str
    count: int
    total: int
    index: int

    @property
    def share(self) -> float:
        return self.count / self.total

    def trace_entry(self) -> dict[str, Any]:
        """The trace's `early_exit` value for an exit on this agreement (what `selfmoa ab` reads)."""
        return {"reason": "agree", "share": round(self.share, 3)}


def check_share(share: object) -> float:
    """`share` as a float in (0, 1]; a ValueError otherwise (for the config layer's 400 on `moa.agree`)."""
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ValueError(f"expected a share in (0, 1], got {share!r}")
    return float(share)


def votes_needed(share: float, total: int) -> int:
    """The fewest equal answers among `total` proposals that reach `share` (at least 1).

    Counted as `k / total >= share` in floats, not as `ceil(share * total)`: a division is rounded
    once, and a share written (0.7) or computed (5/6) is the same rounding of the same ratio, so
    7 of 10 reach 0.7 (0.7 * 10 is 7.000000000000001) and 5 of 6 reach 5/6.
    """
    wanted = check_share(share)
    return next((k for k in range(1, total + 1) if k / total >= wanted), max(1, total))


def _text_and_cut_off(proposal: Proposal) -> tuple[str, bool]:
    if isinstance(proposal, str):
        return proposal, False
    candidate = proposal.candidate if isinstance(proposal, Sample) else proposal
    return candidate.text, candidate.cut_off


def answers(proposals: Sequence[Proposal], reader: AnswerReader) -> list[str | None]:
    """Each proposal's answer as `reader` reads it, in order (for traces and logs as well)."""
    return [reader.read(_text_and_cut_off(p)[0]) for p in proposals]


def _leader(read: Sequence[str | None]) -> tuple[str, int] | None:
    """The answer given most often, and how often; between answers given equally often, the one
    that reached that count first in arrival order."""
    counts: dict[str, int] = {}
    best: tuple[str, int] | None = None
    for answer in read:
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        if best is None or counts[answer] > best[1]:
            best = (answer, counts[answer])
    return best


def agreement(proposals: Sequence[Proposal], reader: AnswerReader, share: float) -> Agreement | None:
    """The agreement of the usable `proposals` (in arrival order) at `share`, or None.

    The leading answer (`_leader`) agrees when its count reaches `share` of all the proposals. Its
    proposals that were cut off count as votes, but the answer returned is a complete one: when
    every proposal with the leading answer was cut off there is no agreement (another answer is
    not taken instead: the proposals leaned the other way). One proposal agrees with itself at any
    share: whether a single sample may end a request (`moa.first: 1`) is the caller's decision.
    """
    needed_share = check_share(share)
    read = answers(proposals, reader)
    leader = _leader(read)
    if leader is None or leader[1] < votes_needed(needed_share, len(proposals)):
        return None
    answer, count = leader
    for index, (proposal, given) in enumerate(zip(proposals, read)):
        if given == answer and not _text_and_cut_off(proposal)[1]:
            return Agreement(answer, count, len(proposals), index)
    return None


def agreed(recipe: Recipe, proposals: Sequence[Proposal]) -> tuple[Choice, dict[str, Any]] | None:
    """The proposal to answer with, without an aggregation, when the recipe asks for agreement and
    the usable `proposals` reach it; with what the trace says of it (`early_exit`)."""
    if recipe.agree is None or not proposals:
        return None
    found = agreement(proposals, parse_reader(recipe.answer), recipe.agree)
    if found is None:
        return None
    chosen = proposals[found.index]
    choice = chosen.candidate.choice if isinstance(chosen, Sample) else \
        chosen.choice if isinstance(chosen, Candidate) else Choice(content=chosen)
    return choice, found.trace_entry()
