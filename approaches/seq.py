"""Self-MoA-Seq: aggregation in rounds over a sliding window, so any number of samples can be
aggregated while no prompt holds more than `window` candidate slots.

Round 1 reads the first `window` samples. Every later round reads the running synthesis, repeated
in `synthesis_slots` slots (the repetition biases the aggregator toward it: it already summarises
all earlier samples), plus the next `window - synthesis_slots` samples.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .aggregation import Answered, aggregate, fall_back
from .agreement import agreed
from .calls import Caller, Deadline
from .errors import ContextTooLong, NotEnoughProposals, SelfMoAError, StreamInterrupted
from .events import Emit, ProposalsArrived, RoundDone
from .prompts import candidate_of
from .sampling import Group, Harvest, sample_into
from .types import Batch, Candidate, Choice, Failure, Message, Proposer, Recipe, Sample

Window = Callable[[], Awaitable[Batch]]  # the samples of one round, once they are in


def rounds_needed(samples: int, window: int, synthesis_slots: int) -> int:
    """1 + ceil(max(0, N - window) / (window - synthesis_slots)): the paper's round count."""
    return 1 + math.ceil(max(0, samples - window) / (window - synthesis_slots))


def windows(proposers: Sequence[Proposer], window: int, synthesis_slots: int) -> list[list[Proposer]]:
    """The samples each round reads, as per-model groups: `window` first, then the step size."""
    slots = [(p.endpoint, p.model) for p in proposers for _ in range(p.samples)]
    step = window - synthesis_slots
    cuts = [0, *range(window, len(slots), step), len(slots)] if len(slots) > window else [0, len(slots)]
    chunks = []
    for start, end in zip(cuts, cuts[1:]):
        groups: dict[tuple[str, str], int] = {}
        for slot in slots[start:end]:
            groups[slot] = groups.get(slot, 0) + 1
        chunks.append([Proposer(model=m, samples=k, endpoint=e) for (e, m), k in groups.items()])
    return chunks


def rechunk(samples: Sequence[Sample], window: int, synthesis_slots: int) -> list[Batch]:
    """Already-drawn samples cut into the rounds' windows (used when a one-shot run switches to Seq)."""
    step = window - synthesis_slots
    heads = [samples[:window]] + [samples[i : i + step] for i in range(window, len(samples), step)]
    return [Batch(samples=list(chunk)) for chunk in heads if chunk]


async def rounds(
    caller: Caller,
    recipe: Recipe,
    messages: Sequence[Message],
    batches: Sequence[Window],
    report: Emit,
    *,
    layer: int | None = None,
    stream: bool = False,
    narrowable: bool = False,
) -> Answered:
    """Aggregate the windows `batches` brings, in rounds; the last round streams when asked.

    Fresh windows (`layer` given) are reported and must hold `min_samples` usable proposals in
    all. A round that gives nothing usable ends the rounds with the last synthesis (or a
    proposal); a context overflow is raised instead when the caller can narrow the window.
    """
    synthesis: Choice | None = None
    done = 0
    read: list[Candidate] = []
    failures: list[Failure] = []
    for index, window in enumerate(batches):
        batch = await window()
        if layer is not None:
            report(ProposalsArrived(layer, batch))
        failures += batch.failures
        if not batch.samples:
            continue
        fresh = [s.candidate for s in batch.samples]
        read += fresh
        early = agreed(recipe, read) if len(read) >= recipe.min_samples else None
        if early is not None:  # checked before each round: the samples so far agree
            return Answered(early[0], done, True, early_exit=early[1])
        carried = [_carried(synthesis)] * recipe.synthesis_slots if synthesis is not None else []
        last = stream and index == len(batches) - 1
        try:
            synthesis = await aggregate(caller, recipe, messages, carried + fresh, emit=report if last else None,
                                        round=done + 1)
        except StreamInterrupted:
            raise
        except SelfMoAError as error:
            if narrowable and isinstance(error, ContextTooLong):
                raise
            return fall_back(read, synthesis, error, done, True)
        done += 1
        report(RoundDone(done, synthesis))
    if synthesis is None or len(read) < recipe.min_samples:
        raise NotEnoughProposals(len(read), recipe.min_samples, failures)
    return Answered(synthesis, done, True)


async def sampled_rounds(caller: Caller, recipe: Recipe, messages: Sequence[Message], prompt: Sequence[Message],
                         params: Mapping[str, Any], deadline: Deadline, report: Emit, *, layer: int,
                         stream: bool) -> Answered:
    """Self-MoA-Seq from scratch: every window is sampled at once and aggregated in order, so that
    aggregating round r overlaps the sampling of later windows. One proposal phase: `deadline` is
    its share of the time, extended while fewer than `min_samples` usable samples have arrived."""
    async with Harvest(caller, deadline, enough=recipe.min_samples, layer=layer) as harvest:
        groups = []
        for chunk in windows(recipe.proposers, recipe.window, recipe.synthesis_slots):
            group = Group()
            groups.append(group)
            for proposer in chunk:
                harvest.spawn(group, sample_into(harvest, group, proposer, prompt, params, recipe.include_reasoning))
        waits = [functools.partial(harvest.wait, group) for group in groups]
        return await rounds(caller, recipe, messages, waits, report, layer=layer, stream=stream)


def drawn(batches: Sequence[Batch]) -> list[Window]:
    """Windows of samples already drawn (a one-shot run that switched to Seq)."""
    async def ready(batch: Batch) -> Batch:
        return batch

    return [functools.partial(ready, batch) for batch in batches]


def _carried(synthesis: Choice) -> Candidate:
    """The running synthesis as the next round reads it (cut off, if it was)."""
    return candidate_of(synthesis) or Candidate(text="", choice=synthesis)
