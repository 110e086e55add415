"""Aggregation: the aggregator reads fenced candidates and writes one answer (`synthesize`, the
paper's) or names the best candidate, which is returned verbatim (`select`: nothing invented)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .calls import Caller, Deadline, Reply
from .errors import BackendError, DeadlineExceeded
from .prompts import aggregation_messages, parse_selection
from .types import Message, Recipe

log = logging.getLogger("selfmoa")

# An aggregation still unanswered after this share of the time left is raced by an identical call.
HEDGE_SHARE = 0.5
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


def aggregate(caller: Caller, recipe: Recipe, messages: Sequence[Message], candidates: Sequence[str]) -> str:
    """One aggregation call over `candidates`; an empty reply is asked for once more."""
    prompt = aggregation_messages(messages, candidates, recipe.mode)
    params = aggregation_params(recipe)
    for _ in range(2):
        reply = hedged_chat(caller, recipe.aggregator_endpoint, recipe.aggregator, prompt, params)
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


def hedged_chat(
    caller: Caller, endpoint: str, model: str, prompt: Sequence[Message], params: Mapping[str, Any]
) -> Reply:
    """One chat call, raced by an identical second one if it has not answered by half the time left.

    By the time the aggregation runs every proposal has been paid for: one hung aggregation call
    must not lose them all. A call that fails outright is not raced; its error stands.
    """
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="selfmoa-aggregate")
    call = functools.partial(caller.chat, endpoint, model, prompt, params)
    try:
        futures = [pool.submit(call)]
        if not wait(futures, timeout=caller.deadline.remaining() * HEDGE_SHARE).done:
            log.info("selfmoa: %s has not answered the aggregation yet; racing a second call", model)
            futures.append(pool.submit(call))
        return _first_success(futures, caller.deadline, model)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _first_success(futures: list[Future[Reply]], deadline: Deadline, model: str) -> Reply:
    pending, error = set(futures), None
    while pending:
        done, pending = wait(pending, timeout=deadline.remaining() + 1.0, return_when=FIRST_COMPLETED)
        if not done:
            break
        for future in done:
            if future.exception() is None:
                return future.result()
            error = error or future.exception()
    raise error or DeadlineExceeded(f"{model}: no answer before the deadline")
