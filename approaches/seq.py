"""Self-MoA-Seq: aggregation in rounds over a sliding window, so any number of samples can be
aggregated while no prompt holds more than `window` candidate slots.

Round 1 reads the first `window` samples. Every later round reads the running synthesis, repeated
in `synthesis_slots` slots (the repetition biases the aggregator toward it: it already summarises
all earlier samples), plus the next `window - synthesis_slots` samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from .aggregation import aggregate
from .calls import Caller, Deadline
from .prompts import strip_reasoning
from .sampling import collect, sample
from .types import Batch, Message, Proposer, Recipe, Sample


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


def stream_windows(
    caller: Caller,
    recipe: Recipe,
    messages: Sequence[Message],
    params: Mapping[str, Any],
    deadline: Deadline,
) -> Iterator[Batch]:
    """Sample every window concurrently and yield them in order, so that aggregating round r
    overlaps the sampling of later windows."""
    chunks = windows(recipe.proposers, recipe.window, recipe.synthesis_slots)
    pool = ThreadPoolExecutor(max_workers=max(1, sum(len(c) for c in chunks)), thread_name_prefix="selfmoa-seq")
    try:
        futures = [
            [pool.submit(sample, caller, p, messages, params, deadline, recipe.include_reasoning) for p in chunk]
            for chunk in chunks
        ]
        for chunk, chunk_futures in zip(chunks, futures):
            results: list[Batch | None] = []
            for future in chunk_futures:
                try:
                    results.append(future.result(timeout=deadline.remaining()))
                except FutureTimeout:
                    results.append(None)
            yield collect(results, [(p.model, p.samples) for p in chunk])
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def sequential(
    caller: Caller,
    recipe: Recipe,
    messages: Sequence[Message],
    batches: Iterable[Batch],
) -> tuple[str | None, int, Batch]:
    """Run the rounds; returns (final synthesis or None, rounds, every sample and failure seen)."""
    synthesis: str | None = None
    rounds = 0
    seen = Batch()
    for batch in batches:
        seen.extend(batch)
        if not batch.samples:
            continue
        carried = [strip_reasoning(synthesis)] * recipe.synthesis_slots if synthesis is not None else []
        synthesis = aggregate(caller, recipe, messages, carried + [s.text for s in batch.samples])
        rounds += 1
    return synthesis, rounds, seen
