"""Aggregation: the aggregator reads fenced candidates and writes one answer (`synthesize`, the
paper's) or names the best candidate, which is returned verbatim (`select`: nothing invented)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .calls import Caller, Deadline
from .errors import BackendError
from .prompts import aggregation_messages, parse_selection
from .types import Message, Recipe

log = logging.getLogger("selfmoa")

# Sampling fields that would break a `<best>N</best>` reply; the selected text is returned as is.
_NOT_FOR_SELECTION = ("response_format", "stop")


def estimate_tokens(messages: Sequence[Message]) -> int:
    """A cheap, backend-independent token estimate (about four characters a token)."""
    return sum(len(str(m.get("content") or "")) // 4 + 4 for m in messages)


def fits(recipe: Recipe, messages: Sequence[Message], candidates: Sequence[str]) -> bool:
    """Whether a one-shot aggregation prompt stays within the aggregator's context budget."""
    if recipe.context_budget is None:
        return True
    return estimate_tokens(aggregation_messages(messages, candidates, recipe.mode)) <= recipe.context_budget


def aggregation_params(recipe: Recipe) -> Mapping[str, Any]:
    if recipe.mode == "select":
        return {k: v for k, v in recipe.final_params.items() if k not in _NOT_FOR_SELECTION}
    return recipe.final_params


def aggregate(
    caller: Caller,
    recipe: Recipe,
    messages: Sequence[Message],
    candidates: Sequence[str],
    deadline: Deadline | None = None,
) -> str:
    """One aggregation call over `candidates`; an empty reply is asked for once more."""
    prompt = aggregation_messages(messages, candidates, recipe.mode)
    params = aggregation_params(recipe)
    for _ in range(2):
        reply = caller.chat(recipe.aggregator_endpoint, recipe.aggregator, prompt, params, deadline=deadline)
        content = reply.choices[0].content if reply.choices else ""
        if content.strip():
            break
    else:
        raise BackendError(recipe.aggregator, "returned an empty aggregation twice")
    if recipe.mode == "synthesize":
        return content
    chosen = parse_selection(content, len(candidates))
    if chosen is None:
        log.warning("selfmoa: %s named no valid candidate (%r); returning candidate 1", recipe.aggregator, content[:80])
        chosen = 0
    return candidates[chosen]
