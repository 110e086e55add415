"""What a MoA run reports as it goes: the core hands each event to an `Emit` callback;
`moa_events` turns them into an async iterator, and a streaming server relays the `AnswerDelta`s
as they come."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .backend import Delta
from .types import Batch, Choice, Outcome


@dataclass(frozen=True)
class ProposalsArrived:
    """A layer's proposals (or a Seq window's), usable and failed."""

    layer: int
    batch: Batch


@dataclass(frozen=True)
class RoundDone:
    """One aggregation finished (Seq: one round); `answer` is its synthesis."""

    round: int
    answer: Choice


@dataclass(frozen=True)
class AnswerDelta:
    """A piece of the final answer, in order; together they are the answer (finish reason aside)."""

    delta: Delta


@dataclass(frozen=True)
class Done:
    outcome: Outcome


Event = ProposalsArrived | RoundDone | AnswerDelta | Done
Emit = Callable[[Event], None]
