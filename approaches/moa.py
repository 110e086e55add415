"""Mixture-of-Agents, as in the paper: proposal layers, then one aggregation (or Seq rounds).

Self-MoA and Mixed-MoA differ only in their `Recipe.proposers` (one model sampled k times, or
several models); the Seq variants set `Recipe.sequential`. A one-shot aggregation that would not
fit the aggregator's context budget, or that the backend rejects as too long, becomes Seq.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .aggregation import aggregate, fits
from .calls import Caller
from .errors import ContextTooLong, NotEnoughProposals
from .prompts import reference_messages
from .sampling import propose
from .seq import rechunk, rounds_needed, sequential, stream_windows
from .types import Batch, Message, Outcome, Recipe, Sample

log = logging.getLogger("selfmoa")

# Share of the time left that proposals may take, so that the aggregation still has time to run.
PROPOSAL_SHARE = 0.6


def proposer_params(recipe: Recipe) -> dict[str, Any]:
    """Proposers sample at the recipe's temperature; the request's own fields shape only the answer."""
    params: dict[str, Any] = {"temperature": recipe.temperature}
    if recipe.max_tokens is not None:
        params["max_tokens"] = recipe.max_tokens
    return params


def max_calls(recipe: Recipe) -> int:
    """The backend calls a recipe plans at most: every sample a call of its own, and two calls per
    aggregation round (the hedging race). Retries of transient failures and a repeated empty
    aggregation come on top; the deadline bounds those."""
    samples = recipe.total_samples
    rounds = rounds_needed(samples, recipe.window, recipe.synthesis_slots)
    return samples * recipe.layers + 2 * rounds


def run_moa(recipe: Recipe, messages: Sequence[Message], caller: Caller) -> Outcome:
    """Answer the conversation `messages` with the recipe's proposers and aggregator."""
    seen = Batch()
    last = Batch()
    for layer in range(1, recipe.layers + 1):
        prompt = messages if layer == 1 else reference_messages(messages, [s.text for s in last.samples])
        if layer == recipe.layers and recipe.sequential:
            return _finish_seq(caller, recipe, messages, prompt, seen)
        batch = propose(
            caller,
            recipe.proposers,
            prompt,
            proposer_params(recipe),
            caller.deadline.share(PROPOSAL_SHARE / (recipe.layers - layer + 1)),
            include_reasoning=recipe.include_reasoning,
            enough=recipe.min_samples,
            grace=recipe.grace,
        )
        seen.extend(batch)
        _require(recipe, batch)
        last = batch
    return _aggregate_once(caller, recipe, messages, last.samples, seen)


def _aggregate_once(
    caller: Caller, recipe: Recipe, messages: Sequence[Message], samples: list[Sample], seen: Batch
) -> Outcome:
    candidates = [s.text for s in samples]
    if fits(recipe, messages, candidates):
        try:
            return _outcome(caller, aggregate(caller, recipe, messages, candidates), 1, False, seen)
        except ContextTooLong as error:
            log.info("selfmoa: %s; switching to Seq aggregation", error)
            recipe = _with_window(recipe, max(2, min(recipe.window, len(candidates) // 2)))
    else:
        recipe = _with_window(recipe, fitting_window(recipe, messages, candidates))
        log.info(
            "selfmoa: %d candidates exceed %s's context budget of %s tokens; switching to Seq aggregation "
            "(window %d, synthesis slots %d)",
            len(candidates), recipe.aggregator, recipe.context_budget, recipe.window, recipe.synthesis_slots,
        )
    while True:
        try:
            batches = rechunk(samples, recipe.window, recipe.synthesis_slots)
            text, rounds, _ = sequential(caller, recipe, messages, batches)
        except ContextTooLong as error:
            if recipe.window <= 2:
                raise
            log.info("selfmoa: %s; narrowing the Seq window to %d", error, recipe.window - 1)
            recipe = _with_window(recipe, recipe.window - 1)
            continue
        assert text is not None
        return _outcome(caller, text, rounds, True, seen)


def fitting_window(recipe: Recipe, messages: Sequence[Message], candidates: Sequence[str]) -> int:
    """The widest window (at most `recipe.window`, at least 2) whose longest candidates fit the budget."""
    longest = sorted(candidates, key=len, reverse=True)
    for window in range(min(recipe.window, len(candidates)), 2, -1):
        if fits(recipe, messages, longest[:window]):
            return window
    return 2


def _finish_seq(
    caller: Caller, recipe: Recipe, messages: Sequence[Message], prompt: Sequence[Message], seen: Batch
) -> Outcome:
    batches = stream_windows(caller, recipe, prompt, proposer_params(recipe), caller.deadline.share(PROPOSAL_SHARE))
    text, rounds, last = sequential(caller, recipe, messages, batches)
    seen.extend(last)
    _require(recipe, last)
    assert text is not None
    return _outcome(caller, text, rounds, True, seen)


def _require(recipe: Recipe, batch: Batch) -> None:
    if len(batch.samples) < recipe.min_samples:
        raise NotEnoughProposals(len(batch.samples), recipe.min_samples, batch.failures)


def _with_window(recipe: Recipe, window: int) -> Recipe:
    # keep the paper's balance (half the window carries the synthesis) when the window shrinks
    return replace(recipe, window=window, synthesis_slots=min(recipe.synthesis_slots, max(1, window // 2)))


def _outcome(caller: Caller, text: str, rounds: int, seq: bool, seen: Batch) -> Outcome:
    return Outcome(
        text=text,
        completion_tokens=caller.completion_tokens,
        calls=caller.calls,
        rounds=rounds,
        sequential=seq,
        proposals=list(seen.samples),
        failures=list(seen.failures),
    )
