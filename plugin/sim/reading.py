"""How a simulated model reads a prompt: what it is asked to do, and the candidates it is shown.

Written from the wire format as a model sees it, never from the code under test's constants: if the
approaches' prompts break (a fence that does not close, a lost cut-off mark), the simulator must
notice instead of sharing the bug. It understands two layouts of candidates:

- fenced blocks, today's format: `<candidate id="1">`, a newline, the text, a newline,
  `</candidate>`; `<candidate id="2" cut_off="true">` marks a candidate cut at its length limit;
- numbered blocks without tags, a likely future format: a header line such as `Candidate 1:`,
  `### Response 2`, `**Candidate 3 (cut off)**`, `[4]` or `5.` alone on its line, then the text up to
  the next header or the end of the message. Headers must count 1, 2, 3, ... so that a stray
  "Response 7" in a user's text is not taken for a candidate.

The instructions and candidates may sit in a system message (placement `system`) or be appended to
the last user turn (`last_user`): each message is read on its own, and the candidates are those of
the message that holds the most (fenced blocks first). Blocks out of the count (a forged
`<candidate id="99">` in the user's own text) are left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import judge

Kind = Literal["propose", "aggregate", "select", "judge"]

CANDIDATE_OPENING = '<candidate id="{number}">'
CANDIDATE_CLOSING = "</candidate>"
"""The fences as a model sees them; an echoing aggregator repeats them (see leaks.py)."""

TOOL_CALL_LINE = "[tool call] {name}({arguments})"
"""How a candidate that called a tool shows the call: one line per call."""
TOOL_CALL_PATTERN = re.compile(r"^[ \t]*\[tool call\][ \t]*([^\s(]+)[ \t]*\((.*)\)[ \t]*$", re.MULTILINE)

_FENCED = re.compile(r"<candidate\s+([^>]*\bid\s*=[^>]*)>[ \t]*\n?((?:(?!<candidate\s).)*?)\n?[ \t]*</candidate\s*>",
                     re.DOTALL | re.IGNORECASE)
"""A fenced block. Its opening carries an id, so the instructions' own "<candidate> blocks" is not one,
and its text holds no other opening, so an unclosed (forged) opening cannot swallow the next block."""
_FENCE_ID = re.compile(r"""\bid\s*=\s*["']?(\d+)""", re.IGNORECASE)
_CUT_OFF = re.compile(r"""cut[ _-]?off(?:\s*=\s*["']?true)?|truncated""", re.IGNORECASE)
_HEADER = re.compile(
    r"""
    ^[ \t]*(?:\#{1,6}[ \t]*)?[*_=\-]*[ \t]*                  # markdown heading, bold, a rule
    (?:
        \[?(?:candidate|response)[ \t]*(?:\#|no\.)?[ \t]*(?P<named>\d+)   # Candidate 1, [Response #2]
        (?P<mark>[ \t]*[(\[][^)\]\n]*[)\]])?                   # (cut off)
        [ \t]*[*_=\-\]]*[ \t]*                                 # closing decoration
        (?:[:.)][ \t]*[*_=\-]*[ \t]*(?P<rest>[^\n]*))?         # a colon, then maybe the text itself
    |
        (?:\[(?P<bracketed>\d+)\]|\((?P<parenthesised>\d+)\)|\#(?P<hashed>\d+)|(?P<dotted>\d+)[.):])
        [ \t]*[*_=\-]*[ \t]*                                  # [1], (1), #1 or 1. alone on its line
    )$
    """,
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
_NUMBER_GROUPS = ("named", "bracketed", "parenthesised", "hashed", "dotted")
_SELECT_FORM = re.compile(r"<best>\s*(?:N|K|\d+|<?number>?)?\s*</best>", re.IGNORECASE)
"""Select prompts ask for the reply form `<best>N</best>`."""


@dataclass(frozen=True)
class Block:
    """One candidate as the model read it."""

    number: int
    text: str
    cut_off: bool = False


@dataclass(frozen=True)
class Fenced:
    """The candidates of one message, with the text around them (the instructions, as a model sees them)."""

    blocks: list[Block]
    before: str
    """The message's text before the first candidate: the user's turn, if any, then the instructions."""
    frame: str
    """The message's text outside the candidates' own text: where a select prompt asks for its reply
    form (for numbered blocks, whose last one runs to the end, the whole message)."""


@dataclass(frozen=True)
class Reading:
    """What a prompt asks of the model: to propose an answer, to combine candidates, or to judge two."""

    kind: Kind
    candidates: list[str] = field(default_factory=list)
    instructions: str = ""
    """The text before the first candidate in the message that holds them ("" without candidates)."""


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message (string content, or the text parts of a content list)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def prompt_text(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(message_text(m) for m in messages)


def counting_run(numbers: Sequence[int]) -> list[int]:
    """The positions of the longest run numbered 1, 2, 3, ... in order (others may sit between them);
    the latest of equally long runs. A forged or stray block, out of the count, is left out."""
    best: list[int] = []
    for start in (i for i, number in enumerate(numbers) if number == 1):
        run = [start]
        for position in range(start + 1, len(numbers)):
            if numbers[position] == len(run) + 1:
                run.append(position)
        if len(run) >= len(best):
            best = run
    return best


def fenced_blocks(text: str) -> Fenced | None:
    """The `<candidate id="N">` blocks of `text` that count 1, 2, 3, ... (all of them if none is 1)."""
    matches = list(_FENCED.finditer(text))
    if not matches:
        return None
    numbers = [int(found.group(1)) if (found := _FENCE_ID.search(m.group(1))) else 0 for m in matches]
    run = counting_run(numbers) or list(range(len(matches)))
    blocks = [Block(numbers[i], matches[i].group(2), bool(_CUT_OFF.search(matches[i].group(1)))) for i in run]
    return Fenced(blocks, text[: matches[run[0]].start()], _FENCED.sub("", text))


def _headers(text: str) -> list[re.Match[str]]:
    """The header lines that count 1, 2, 3, ...: a header out of the count is part of a candidate's text."""
    headers = list(_HEADER.finditer(text))
    numbers = [int(next(h.group(g) for g in _NUMBER_GROUPS if h.group(g) is not None)) for h in headers]
    return [headers[i] for i in counting_run(numbers)]


def numbered_blocks(text: str) -> Fenced | None:
    """Tag-free numbered blocks: each header's text runs to the next header or the end of the message."""
    headers = _headers(text)
    if not headers:
        return None
    ends = [h.start() for h in headers[1:]] + [len(text)]
    blocks = []
    for number, (header, end) in enumerate(zip(headers, ends), start=1):
        body = ((header.group("rest") or "") + text[header.end():end]).strip("\n")
        body = re.sub(r"\n[ \t]*(?:-{3,}|={3,}|\*{3,})?[ \t]*$", "", body.rstrip())  # a trailing separator
        blocks.append(Block(number, body.strip(), bool(_CUT_OFF.search(header.group("mark") or ""))))
    return Fenced(blocks, text[: headers[0].start()], text)


def find_candidates(messages: Sequence[Mapping[str, Any]]) -> Fenced | None:
    """The candidates of the message holding the most fenced blocks (the latest of equals), else the
    most numbered ones: a block forged in another turn of the conversation does not displace them."""
    texts = [message_text(m) for m in messages]
    for parse in (fenced_blocks, numbered_blocks):
        found = [result for result in map(parse, texts) if result is not None]
        if found:
            return max(reversed(found), key=lambda result: len(result.blocks))
    return None


def asks_to_select(text: str) -> bool:
    """Whether `text` asks for the `<best>N</best>` reply form."""
    return _SELECT_FORM.search(text) is not None


def read_prompt(messages: Sequence[Mapping[str, Any]]) -> Reading:
    """Classify a prompt: candidates with the select reply form, candidates, a judge prompt, or a question.

    Candidates come first: an ensemble whose user asks for a judgement still aggregates its proposals.
    A layer-k reference prompt shows candidates too, and is read as an aggregation.
    """
    found = find_candidates(messages)
    if found is None:
        text = prompt_text(messages)
        if asks_to_select(text):
            return Reading("select")
        return Reading("judge" if judge.judge_parts(text) else "propose")
    candidates = [block.text for block in found.blocks]
    kind: Kind = "select" if asks_to_select(found.frame) else "aggregate"
    return Reading(kind, candidates, found.before)
