"""Aggregation: the aggregator reads fenced candidates and writes one answer (`synthesize`, the
paper's) or names the best candidate, which is returned verbatim (`select`: nothing invented).

An aggregation that has not answered when it should have is raced by an identical call
(`hedging.py`): by then every proposal has been paid for, and one hung call must not lose them all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .backend import Accumulator, Completion, Delta
from .calls import Caller
from .errors import BackendError, ContextTooLong, SelfMoAError, StreamInterrupted, TransientError
from .events import AnswerDelta, Emit
from .hedging import hedged_complete, hedged_stream
from .hygiene import AnswerFilter, clean, says_something
from .prompts import (
    SELECT_INSTRUCTIONS,
    SYNTHESIZE_INSTRUCTIONS,
    aggregation_messages,
    estimate_tokens,
    parse_selection,
)
from .types import Candidate, Choice, Message, Recipe

log = logging.getLogger("selfmoa")

# Fields a `<best>N</best>` reply cannot honour; the chosen candidate is returned as it was written.
_ANSWER_SHAPING = ("response_format", "stop", "tools", "tool_choice", "parallel_tool_calls", "logprobs",
                   "top_logprobs")


def _synthesized(reply: Choice, candidates: Sequence[Candidate], model: str) -> Choice:
    return reply


def _selected(reply: Choice, candidates: Sequence[Candidate], model: str) -> Choice:
    chosen = parse_selection(reply.content, len(candidates))
    if chosen is None:
        log.warning("selfmoa: %s named no valid candidate (%r); returning candidate 1", model, reply.content[:80])
        chosen = 0
    return candidates[chosen].choice


@dataclass(frozen=True)
class AggregationMode:
    """How an aggregation is asked for, and how the aggregator's reply becomes the answer."""

    instructions: str
    drops: tuple[str, ...]  # request fields the aggregation call does not get
    answer: Callable[[Choice, Sequence[Candidate], str], Choice]
    streams: bool  # the reply is the answer itself, so it can be relayed as it is generated
    to_proposers: tuple[str, ...] = ()  # answer-shaping fields the proposers get instead


MODES: dict[str, AggregationMode] = {
    "synthesize": AggregationMode(SYNTHESIZE_INSTRUCTIONS, (), _synthesized, streams=True),
    # the answer is a proposal as written: it must already have the format the request asks for
    "select": AggregationMode(SELECT_INSTRUCTIONS, _ANSWER_SHAPING, _selected, streams=False,
                              to_proposers=("response_format",)),
}


def fits(recipe: Recipe, messages: Sequence[Message], candidates: Sequence[Candidate]) -> bool:
    """Whether a one-shot aggregation prompt stays within the aggregator's context budget."""
    if recipe.context_budget is None:
        return True
    prompt = aggregation_messages(messages, candidates, MODES[recipe.mode].instructions, recipe.placement)
    return estimate_tokens(prompt) <= recipe.context_budget


def aggregation_params(recipe: Recipe) -> dict[str, Any]:
    params = {**recipe.shared_params, **recipe.final_params}
    return {k: v for k, v in params.items() if k not in MODES[recipe.mode].drops}


async def aggregate(caller: Caller, recipe: Recipe, messages: Sequence[Message], candidates: Sequence[Candidate],
                    *, emit: Emit | None = None, round: int = 1) -> Choice:
    """One aggregation over `candidates`; returns the answer. With `emit`, a mode whose reply is the
    answer hands it over piece by piece as the aggregator writes it. A reply that is empty (or only
    our own markup), or a stream that broke before its first words, is asked for once more."""
    mode = MODES[recipe.mode]
    prompt = aggregation_messages(messages, candidates, mode.instructions, recipe.placement)
    params = aggregation_params(recipe)
    endpoint, model = recipe.aggregator_endpoint, recipe.aggregator
    streaming = emit is not None and mode.streams
    for attempt in range(2):
        try:
            if streaming:
                reply = await _streamed(caller, endpoint, model, prompt, params, emit, round)  # type: ignore[arg-type]
            else:
                reply = await _whole(caller, endpoint, model, prompt, params, round)
        except TransientError as broken:  # a stream cut short before anything was relayed
            if not streaming or attempt == 1:
                raise
            log.info("selfmoa: %s; asking once more", broken)
            continue
        if usable_reply(reply):
            return mode.answer(reply, candidates, model)
    raise BackendError(model, "returned an empty aggregation twice (nothing but our own markup)")


def usable_reply(reply: Choice) -> bool:
    """A reply says something once our markup is taken out of it (`hygiene.py`), or calls a tool."""
    return bool(reply.tool_calls) or says_something(clean(reply.content)[0])


async def _whole(caller: Caller, endpoint: str, model: str, prompt: Sequence[Message],
                 params: Mapping[str, Any], round: int) -> Choice:
    """One whole call, raced while it has not answered; an empty reply does not win the race.
    A call that fails outright (a 4xx) is not raced; its error stands."""
    completion = await hedged_complete(caller, endpoint, model, prompt, params, kind="aggregation",
                                       usable=_has_output, step=round)
    return completion.choices[0] if completion.choices else Choice(content="")


def _has_output(completion: Completion) -> bool:
    """Whether a reply may win its race: it has text or a tool call (whether that text says
    anything beyond our markup is the aggregation's to judge, once)."""
    choice = completion.choices[0] if completion.choices else None
    return choice is not None and bool(choice.content.strip() or choice.tool_calls)


async def _streamed(caller: Caller, endpoint: str, model: str, prompt: Sequence[Message],
                    params: Mapping[str, Any], emit: Emit, round: int) -> Choice:
    """One streamed call (raced until a first chunk arrives), relayed from its first words on,
    with our markup filtered out as it comes (`hygiene.py`); returns the whole reply as written.
    Nothing is relayed of a reply that says nothing yet, so it can still be asked for again."""
    relay = _Relay(emit)
    reply = Accumulator()
    async with hedged_stream(caller, endpoint, model, prompt, params, step=round) as chunks:
        try:
            async for chunk in chunks:
                for delta in chunk.deltas:
                    if delta.index == 0:
                        reply.add(delta)
                        relay.add(delta)
        except SelfMoAError as error:
            if not relay.shown:
                raise
            relay.end()
            raise StreamInterrupted(f"{model}: the answer's stream broke off ({error})") from None
    relay.end()
    return reply.choice()


class _Relay:
    """Deltas on their way to the client: our markup filtered out, and held back while what is
    left says nothing yet (an echo of our instructions must not reach the client before it is
    known to be one)."""

    def __init__(self, emit: Emit) -> None:
        self.emit, self.markup = emit, AnswerFilter()
        self.held: list[Delta] = []
        self.visible, self.shown = "", False

    def add(self, delta: Delta) -> None:
        piece = self.markup.feed(delta.content or "")
        self.visible += piece if not self.shown else ""
        self.held.append(replace(delta, content=piece))
        self.shown = self.shown or bool(delta.tool_calls) or says_something(self.visible, complete=False)
        if self.shown:
            self._flush()

    def end(self) -> None:
        """The stream is over (or broken): what the filter held back goes out, if anything does."""
        tail = self.markup.end()
        self.held.append(Delta(content=tail))
        if self.shown or says_something(self.visible + tail):
            self._flush()

    def _flush(self) -> None:
        for delta in self.held:
            self.emit(AnswerDelta(delta))
        self.held = []


@dataclass(frozen=True)
class Answered:
    """How an answer was reached: one aggregation, Seq rounds, a fallback (and why), or agreeing
    proposals that made the aggregation needless (`early_exit`)."""

    choice: Choice
    rounds: int
    sequential: bool
    fallback: str | None = None
    early_exit: dict[str, Any] | None = None


def fall_back(candidates: Sequence[Candidate], synthesis: Choice | None, error: SelfMoAError, rounds: int,
              sequential: bool) -> Answered:
    """The answer when the aggregation gave nothing usable: the last synthesis, else the first
    complete proposal (else the first): a plain call would have answered, so must we.

    Not when the aggregation was refused for the request's own fault (an unknown aggregator, a
    `response_format` or tool schema the backend rejects, no access): a plain call would have
    been refused too, and an unconstrained proposal is not what was asked for. That error stands.
    """
    if 400 <= error.status < 500 and error.status != 429 and not isinstance(error, ContextTooLong):
        raise error
    if synthesis is not None:
        choice, what = synthesis, "the previous round's synthesis"
    else:
        best = next((c for c in candidates if not c.cut_off), candidates[0])
        choice, what = best.choice, "a proposal"
    reason = f"the aggregation gave nothing usable ({error}); answered with {what}"
    log.warning("selfmoa: %s", reason)
    return Answered(choice, rounds, sequential, fallback=reason)
