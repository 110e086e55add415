"""Aggregation: the aggregator reads fenced candidates and writes one answer (`synthesize`, the
paper's) or names the best candidate, which is returned verbatim (`select`: nothing invented).

An aggregation that has not answered when it should have is raced by an identical call
(`hedging.py`): by then every proposal has been paid for, and one hung call must not lose them all.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .backend import Accumulator, Completion, Delta
from .calls import Caller
from .errors import BackendError, ContextTooLong, SelfMoAError, StreamInterrupted
from .events import AnswerDelta
from .hedging import hedged_complete, hedged_open
from .hygiene import MarkupFilter, clean, says_something
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
    drops: tuple[str, ...]
    answer: Callable[[Choice, Sequence[Candidate], str], Choice]
    streams: bool  # the reply is the answer itself, so it can be relayed as it is generated


MODES: dict[str, AggregationMode] = {
    "synthesize": AggregationMode(SYNTHESIZE_INSTRUCTIONS, (), _synthesized, streams=True),
    "select": AggregationMode(SELECT_INSTRUCTIONS, _ANSWER_SHAPING, _selected, streams=False),
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


def aggregate(caller: Caller, recipe: Recipe, messages: Sequence[Message], candidates: Sequence[Candidate],
              *, stream: bool = False) -> Generator[AnswerDelta, None, Choice]:
    """One aggregation over `candidates`; returns the answer. With `stream`, a mode whose reply is
    the answer yields it piece by piece as the aggregator writes it. An empty reply is asked for
    once more, then raised as an error."""
    mode = MODES[recipe.mode]
    prompt = aggregation_messages(messages, candidates, mode.instructions, recipe.placement)
    call = functools.partial(_streamed if stream and mode.streams else _whole, caller,
                             recipe.aggregator_endpoint, recipe.aggregator, prompt, aggregation_params(recipe))
    for _ in range(2):
        reply = yield from call()
        if usable_reply(reply):
            return mode.answer(reply, candidates, recipe.aggregator)
    raise BackendError(recipe.aggregator, "returned an empty aggregation twice (nothing but our own markup)")


def usable_reply(reply: Choice) -> bool:
    """A reply says something once our markup is taken out of it (`hygiene.py`), or calls a tool."""
    return bool(reply.tool_calls) or says_something(clean(reply.content)[0])


def _whole(caller: Caller, endpoint: str, model: str, prompt: Sequence[Message],
           params: Mapping[str, Any]) -> Generator[AnswerDelta, None, Choice]:
    """One whole call, raced while it has not answered; an empty reply does not win the race.
    A call that fails outright (a 4xx) is not raced; its error stands."""
    completion = hedged_complete(caller, endpoint, model, prompt, params, kind="aggregation", usable=_has_output)
    return completion.choices[0] if completion.choices else Choice(content="")
    yield  # a generator like `_streamed`, with nothing to stream


def _has_output(completion: Completion) -> bool:
    return bool(completion.choices) and usable_reply(completion.choices[0])


def _streamed(caller: Caller, endpoint: str, model: str, prompt: Sequence[Message],
              params: Mapping[str, Any]) -> Generator[AnswerDelta, None, Choice]:
    """One streamed call (raced until a first chunk arrives), relayed from its first words on,
    with our markup filtered out as it comes (`hygiene.py`); returns the whole reply as written.
    Nothing is relayed of a reply that stays empty, so it can still be asked for again."""
    chunks = hedged_open(caller, endpoint, model, prompt, params)
    reply, markup, held = Accumulator(), MarkupFilter(), []
    visible, shown = "", False
    try:
        for chunk in chunks:
            for delta in chunk.deltas:
                if delta.index == 0:
                    reply.add(delta)
                    piece = markup.feed(delta.content or "")
                    visible += piece
                    shown = shown or bool(delta.tool_calls)
                    held.append(AnswerDelta(replace(delta, content=piece)))
            shown = shown or says_something(visible, complete=False)
            if shown:
                yield from held
                held = []
    except SelfMoAError as error:
        if not shown:
            raise
        yield from held
        yield AnswerDelta(Delta(content=markup.end()))  # what was held back waiting for more text
        raise StreamInterrupted(f"{model}: the answer's stream broke off ({error})") from None
    finally:
        chunks.close()
    tail = markup.end()
    if shown or says_something(visible + tail):
        yield from held
        yield AnswerDelta(Delta(content=tail))
    return reply.choice()


@dataclass(frozen=True)
class Answered:
    """How an answer was reached: one aggregation, Seq rounds, or a fallback (and why)."""

    choice: Choice
    rounds: int
    sequential: bool
    fallback: str | None = None


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
