"""Mixture-of-Agents, as in the paper: proposal layers, then one aggregation (or Seq rounds).

Self-MoA and Mixed-MoA differ only in their `Recipe.proposers` (one model sampled k times, or
several models); the Seq variants set `Recipe.sequential`. A one-shot aggregation that would not
fit the aggregator's context budget, or that the backend rejects as too long, becomes Seq.

A run is a coroutine (`run`) that reports what happens as events: proposals as they arrive,
rounds, and, when asked to stream, the answer piece by piece as the aggregator writes it.
`moa_events` is the same run as an async iterator; `run_moa` is the synchronous entry, for
scripts and for stock optillm, whose plugin contract is synchronous.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from .aggregation import MODES, Answered, aggregate, fall_back, fits
from .agreement import agreed
from .backend import deltas_of
from .calls import Caller
from .errors import ContextTooLong, DeadlineExceeded, NotEnoughProposals, SelfMoAError, StreamInterrupted
from .events import AnswerDelta, Done, Emit, Event, ProposalsArrived
from .hygiene import clean
from .prompts import reference_messages
from .sampling import propose
from .seq import drawn, rechunk, rounds, rounds_needed, sampled_rounds
from .tasks import cancel_and_wait
from .types import Batch, Candidate, Choice, Message, Outcome, Proposer, Recipe, Sample

log = logging.getLogger("selfmoa")

# Share of the time left that proposals may take, so that the aggregation still has time to run.
PROPOSAL_SHARE = 0.6
# Every call ends by the deadline on its own; this catches whatever would not, a little later.
_BACKSTOP = 1.0
T = TypeVar("T")


def proposer_params(recipe: Recipe) -> dict[str, Any]:
    """Proposers sample at the recipe's temperature; the request's own sampling fields shape only
    the answer, while the fields every call shares (tools, logprobs) reach them too."""
    params: dict[str, Any] = {**recipe.shared_params, "temperature": recipe.temperature}
    params.update({k: v for k, v in recipe.final_params.items() if k in MODES[recipe.mode].to_proposers})
    if recipe.max_tokens is not None:
        params["max_tokens"] = recipe.max_tokens
    return params


def max_calls(recipe: Recipe) -> int:
    """The backend calls a recipe plans at most: every sample a call of its own, and one call per
    aggregation round. Raced calls come on top, up to the request's hedging budget (which the
    server fits under its cap); retries of transient failures and a repeated empty aggregation
    too, and the deadline bounds those."""
    samples = recipe.total_samples
    return samples * recipe.layers + rounds_needed(samples, recipe.window, recipe.synthesis_slots)


async def run(recipe: Recipe, messages: Sequence[Message], caller: Caller, emit: Emit | None = None, *,
              stream: bool = False) -> Outcome:
    """Answer the conversation `messages`; every event goes to `emit`, ending with `Done`. With
    `stream`, `AnswerDelta`s carry the answer: live from the aggregator where it writes the answer
    itself, else in one piece at the end."""
    seen, streamed = Batch(), False

    def report(event: Event) -> None:
        nonlocal streamed
        if isinstance(event, ProposalsArrived):
            seen.extend(event.batch)
        streamed = streamed or isinstance(event, AnswerDelta)
        if emit is not None:
            emit(event)

    try:
        answered = await _within(_answer(caller, recipe, messages, report, stream),
                                 caller.deadline.remaining() + _BACKSTOP)
    except asyncio.TimeoutError:
        raise DeadlineExceeded(f"{recipe.aggregator}: no answer before the deadline") from None
    answer, cleaned = _without_markup(answered.choice)
    if stream and not streamed:
        for delta in deltas_of(answer):
            report(AnswerDelta(delta))
    outcome = _outcome(caller, replace(answered, choice=answer), seen, cleaned)
    report(Done(outcome))
    return outcome


async def _within(work: Coroutine[Any, Any, T], seconds: float) -> T:
    """`work`, cancelled after `seconds` (`asyncio.timeout` where there is one: no extra task)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await work
    return await asyncio.wait_for(work, seconds)


def run_moa(recipe: Recipe, messages: Sequence[Message], caller: Caller) -> Outcome:
    """`run` for synchronous callers: a loop of its own, for the length of the run."""
    return asyncio.run(run(recipe, messages, caller))


async def moa_events(recipe: Recipe, messages: Sequence[Message], caller: Caller, *, stream: bool = False
                     ) -> AsyncIterator[Event]:
    """The run as events, ending with `Done`; a run given up by its reader (closed early, or
    cancelled) is cancelled at once, its calls with it."""
    inbox: asyncio.Queue[Event | None] = asyncio.Queue()
    task = asyncio.ensure_future(run(recipe, messages, caller, inbox.put_nowait, stream=stream))
    task.add_done_callback(lambda _: inbox.put_nowait(None))
    try:
        while (event := await inbox.get()) is not None:
            yield event
        task.result()  # the run's error, if it failed
    finally:
        await cancel_and_wait([task])


def _without_markup(choice: Choice) -> tuple[Choice, int]:
    """The answer as the user reads it: our fences and instructions never in it (`hygiene.py`;
    a streamed answer was relayed through the same filter)."""
    text, removed = clean(choice.content)
    if removed:
        log.info("selfmoa: removed %d piece(s) of ensemble markup from the answer", removed)
    return replace(choice, content=text), removed


async def _answer(caller: Caller, recipe: Recipe, messages: Sequence[Message], report: Emit,
                  stream: bool) -> Answered:
    last = Batch()
    for layer in range(1, recipe.layers + 1):
        prompt = messages if layer == 1 else reference_messages(messages, [s.candidate for s in last.samples],
                                                                recipe.placement)
        final = layer == recipe.layers
        if final and recipe.sequential and recipe.first is None:  # agreement is checked before each round
            deadline = caller.deadline.share(PROPOSAL_SHARE)
            return await sampled_rounds(caller, recipe, messages, prompt, proposer_params(recipe), deadline, report,
                                        layer=layer, stream=stream)
        if final and recipe.first is not None:
            last, early = await _first_then_rest(caller, recipe, prompt, report, layer)
            if early is not None:
                return early
        else:
            last = await _propose(caller, recipe, recipe.proposers, prompt, report, layer)
        _require(recipe, last)
    if recipe.sequential:  # `first` drew the samples: the rounds read them, agreement checked before each
        return await rounds(caller, recipe, messages, drawn(rechunk(last.samples, recipe.window,
                                                                    recipe.synthesis_slots)), report, stream=stream)
    return _agreeing(recipe, last.samples) or await _aggregate_once(caller, recipe, messages, last.samples, report,
                                                                     stream)


async def _propose(caller: Caller, recipe: Recipe, proposers: Sequence[Proposer], prompt: Sequence[Message],
                   report: Emit, layer: int) -> Batch:
    """One proposal phase of `layer`, within its share of the time left."""
    deadline = caller.deadline.share(PROPOSAL_SHARE / (recipe.layers - layer + 1))
    batch = await propose(caller, proposers, prompt, proposer_params(recipe), deadline,
                          include_reasoning=recipe.include_reasoning, enough=recipe.min_samples,
                          grace=recipe.grace, layer=layer)
    report(ProposalsArrived(layer, batch))
    return batch


async def _first_then_rest(caller: Caller, recipe: Recipe, prompt: Sequence[Message], report: Emit,
                           layer: int) -> tuple[Batch, Answered | None]:
    """`moa.first` samples first (Mixed: the first proposer's share first); the rest only if those
    do not agree."""
    head, rest = split_samples(recipe.proposers, recipe.first or 0)
    batch = await _propose(caller, recipe, head, prompt, report, layer)
    early = _agreeing(recipe, batch.samples) if len(batch.samples) >= recipe.min_samples else None
    if early is not None or not rest:
        return batch, early
    batch.extend(await _propose(caller, recipe, rest, prompt, report, layer))
    return batch, None


def split_samples(proposers: Sequence[Proposer], first: int) -> tuple[list[Proposer], list[Proposer]]:
    """The proposers' first `first` samples, in order, and the rest."""
    head, rest, left = [], [], first
    for proposer in proposers:
        taken = min(left, proposer.samples)
        left -= taken
        if taken:
            head.append(replace(proposer, samples=taken))
        if proposer.samples > taken:
            rest.append(replace(proposer, samples=proposer.samples - taken))
    return head, rest


def _agreeing(recipe: Recipe, samples: Sequence[Sample]) -> Answered | None:
    """The answer without an aggregation, when the recipe asks for agreement and the samples agree."""
    early = agreed(recipe, samples)
    if early is None:
        return None
    log.info("selfmoa: %s of the proposals agree; no aggregation", early[1]["share"])
    return Answered(early[0], 0, recipe.sequential, early_exit=early[1])


async def _aggregate_once(caller: Caller, recipe: Recipe, messages: Sequence[Message], samples: list[Sample],
                          report: Emit, stream: bool) -> Answered:
    candidates = [s.candidate for s in samples]
    if fits(recipe, messages, candidates):
        try:
            choice = await aggregate(caller, recipe, messages, candidates, emit=report if stream else None)
            return Answered(choice, 1, False)
        except ContextTooLong as error:
            log.info("selfmoa: %s; switching to Seq aggregation", error)
            recipe = _with_window(recipe, max(2, min(recipe.window, len(candidates) // 2)))
        except StreamInterrupted:
            raise
        except SelfMoAError as error:
            return fall_back(candidates, None, error, 0, False)
    else:
        recipe = _with_window(recipe, fitting_window(recipe, messages, candidates))
        log.info(
            "selfmoa: %d candidates exceed %s's context budget of %s tokens; switching to Seq aggregation "
            "(window %d, synthesis slots %d)",
            len(candidates), recipe.aggregator, recipe.context_budget, recipe.window, recipe.synthesis_slots,
        )
    while True:
        batches = drawn(rechunk(samples, recipe.window, recipe.synthesis_slots))
        try:
            return await rounds(caller, recipe, messages, batches, report, stream=stream,
                                narrowable=recipe.window > 2)
        except ContextTooLong as error:
            log.info("selfmoa: %s; narrowing the Seq window to %d", error, recipe.window - 1)
            recipe = _with_window(recipe, recipe.window - 1)


def fitting_window(recipe: Recipe, messages: Sequence[Message], candidates: Sequence[Candidate]) -> int:
    """The widest window (at most `recipe.window`, at least 2) whose longest candidates fit the budget."""
    longest = sorted(candidates, key=lambda c: len(c.text), reverse=True)
    for window in range(min(recipe.window, len(candidates)), 2, -1):
        if fits(recipe, messages, longest[:window]):
            return window
    return 2


def _require(recipe: Recipe, batch: Batch) -> None:
    if len(batch.samples) < recipe.min_samples:
        raise NotEnoughProposals(len(batch.samples), recipe.min_samples, batch.failures)


def _with_window(recipe: Recipe, window: int) -> Recipe:
    # keep the paper's balance (half the window carries the synthesis) when the window shrinks
    return replace(recipe, window=window, synthesis_slots=min(recipe.synthesis_slots, max(1, window // 2)))


def _outcome(caller: Caller, answered: Answered, seen: Batch, cleaned: int) -> Outcome:
    usage, by_model = caller.spent()
    return Outcome(answer=answered.choice, usage=usage, usage_by_model=by_model, rounds=answered.rounds,
                   sequential=answered.sequential, proposals=list(seen.samples), failures=list(seen.failures),
                   fallback=answered.fallback, cleaned=cleaned, early_exit=answered.early_exit)
