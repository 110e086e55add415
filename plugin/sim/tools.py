"""Tool calls (OpenAI function calling) as a simulated model makes them: pure functions of the request.

A simulated model has no real use for a tool, so it calls one when the request leaves it no choice
(`tool_choice` "required" or naming a function) or when the user names the tool ("use get_weather
for Paris"). Its arguments are filled in from the tool's JSON schema, so a client's handling of a
real call (ids, JSON arguments, the follow-up `tool` turn) is exercised. An aggregator sees proposed
calls as `[tool call] name(arguments)` lines (as reading.py reads them) and, when most candidates
propose one, answers with the most common call set itself.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .behaviour import last_user_text, majority
from .reading import TOOL_CALL_LINE, TOOL_CALL_PATTERN, Reading

ChoiceMode = Literal["auto", "none", "required", "named"]

_WORD = re.compile(r"[^\W\d_][\w'-]*")
_BY_TYPE: dict[str, Any] = {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}, "null": None}
_FALLBACK_STRING = "unknown"


@dataclass(frozen=True)
class ToolCall:
    """One function call; `arguments` is JSON text, exactly as it travels on the wire."""

    name: str
    arguments: str

    def line(self) -> str:
        """The call as the approaches describe it to an aggregator (and as the call log shows it)."""
        return TOOL_CALL_LINE.format(name=self.name, arguments=self.arguments)


@dataclass(frozen=True)
class ToolRequest:
    """What a request says about tools: the declared functions (name -> parameters schema) and the choice."""

    functions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    mode: ChoiceMode = "auto"
    named: str | None = None
    """The function `tool_choice` names (mode "named")."""
    parallel: bool = True

    @property
    def active(self) -> bool:
        """Whether the model may call a tool at all."""
        return bool(self.functions) and self.mode != "none"

    @property
    def forced(self) -> bool:
        """Whether the model must call a tool whatever the prompt says."""
        return self.active and self.mode in ("required", "named")


def _mention(text: str, name: str) -> re.Match[str] | None:
    """The first mention of a tool name in `text`: the whole name, in any case."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE)


def mentioned(text: str, names: Sequence[str]) -> list[str]:
    """The tool names `text` mentions, in order of first mention."""
    found = [(match.start(), name) for name in names if (match := _mention(text, name))]
    return [name for _, name in sorted(found)]


def _words(text: str, names: Sequence[str]) -> list[str]:
    """The words of `text` (letters first; apostrophes and hyphens inside), tool names left out."""
    skip = {n.lower() for n in names}
    return [str(w) for w in _WORD.findall(text) if str(w).lower() not in skip]


def string_value(text: str, name: str, names: Sequence[str]) -> str:
    """A string argument taken from the user's words: the first capitalised word after the tool's name
    (the "Paris" of "use get_weather for Paris"), else the first word longer than 3 letters."""
    mention = _mention(text, name)
    after = _words(text[mention.end():], names) if mention else []
    capitalised = [w for w in after if w[0].isupper()]
    if capitalised:
        return capitalised[0]
    return next((w for w in _words(text, names) if len(w) > 3), _FALLBACK_STRING)


def _value(spec: Any, word: str) -> Any:
    """A value fitting one property's schema: its first enum value, a fixed value by type, else `word`."""
    if not isinstance(spec, Mapping):
        return word
    enum = spec.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = spec.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first non-null type
        kind = next((k for k in kind if k != "null"), "null")
    return copy.deepcopy(_BY_TYPE[kind]) if isinstance(kind, str) and kind in _BY_TYPE else word


def arguments(schema: Mapping[str, Any], text: str, name: str, names: Sequence[str]) -> dict[str, Any]:
    """Every `required` property of a parameters schema, with a value of its type."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = schema.get("required")
    keys = [key for key in required if isinstance(key, str)] if isinstance(required, list) else []
    word = string_value(text, name, names)
    return {key: _value(properties.get(key), word) for key in keys}


def proposed_calls(text: str, request: ToolRequest) -> list[ToolCall]:
    """The calls a model makes in reply to `text` (the last user turn); [] means it writes text."""
    if not request.active:
        return []
    names = list(request.functions)
    if request.mode == "named" and request.named is not None:
        chosen = [request.named]
    else:
        chosen = mentioned(text, names)
        if not chosen and request.mode == "required":
            chosen = names[:1]
        chosen = chosen if request.parallel else chosen[:1]
    return [ToolCall(n, json.dumps(arguments(request.functions[n], text, n, names))) for n in chosen]


def candidate_calls(candidate: str) -> tuple[ToolCall, ...]:
    """The calls a candidate proposes, one per `[tool call] name(arguments)` line."""
    return tuple(ToolCall(name, args) for name, args in TOOL_CALL_PATTERN.findall(candidate))


def aggregated_calls(candidates: Sequence[str], text: str, request: ToolRequest) -> list[ToolCall]:
    """An aggregator's call: the most common call set when more than half the candidates propose a call.

    Otherwise it writes text, unless `tool_choice` forces a call: then it plans one from the user's
    words as a proposer would.
    """
    if not request.active:
        return []
    proposals = [calls for calls in map(candidate_calls, candidates) if calls]
    best = majority(proposals) if len(proposals) * 2 > len(candidates) else None
    if best is not None and (request.mode != "named" or all(c.name == request.named for c in best)):
        return list(best)
    return proposed_calls(text, request) if request.forced else []


def plan(messages: Sequence[Mapping[str, Any]], reading: Reading, request: ToolRequest) -> list[ToolCall]:
    """The calls the model makes instead of writing text: [] when it writes text.

    A proposal calls when the user's turn asks for a tool (or the choice forces one); after a tool's
    result comes back it writes text, unless forced again. Select and judge prompts never call.
    """
    text = last_user_text(messages)
    if reading.kind == "aggregate":
        return aggregated_calls(reading.candidates, text, request)
    if reading.kind != "propose":
        return []
    last_role = messages[-1].get("role") if messages else None
    if last_role != "user" and not request.forced:
        return []
    return proposed_calls(text, request)
