"""Proposals: k samples per proposer model, drawn concurrently.

One call with `n=k` where the backend honours `n`; where it refuses `n` or returns fewer choices,
the rest is topped up with concurrent calls, and the backend's limit is remembered so the next
request goes straight to the right shape. Failed, empty and truncated samples are dropped (and
reported), never aggregated.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .backend import Completion
from .calls import Caller, Deadline
from .errors import BackendError, DeadlineExceeded, ParameterRefused, SelfMoAError
from .prompts import candidate_of
from .types import Batch, Failure, Message, Proposer, Sample

log = logging.getLogger("selfmoa")


def usable(completion: Completion, model: str, include_reasoning: bool) -> Batch:
    """Sort a reply's choices into usable samples and dropped (empty) ones."""
    batch = Batch()
    share = completion.usage.completion_tokens // max(1, len(completion.choices))
    for choice in completion.choices:
        candidate = candidate_of(choice, include_reasoning)
        if candidate is None:
            batch.failures.append(Failure(model, "empty response"))
        else:
            batch.samples.append(Sample(candidate=candidate, model=model, completion_tokens=share))
    return batch


def sample(
    caller: Caller,
    proposer: Proposer,
    messages: Sequence[Message],
    params: Mapping[str, Any],
    deadline: Deadline,
    include_reasoning: bool = False,
    *,
    enough: int | None = None,
    grace: float | None = None,
) -> Batch:
    """`proposer.samples` proposals from one model, in as few calls as the backend allows
    (`enough` and `grace` as in `gather`, for the calls a refused or short `n` fans out to)."""
    endpoint, model, wanted = proposer.endpoint, proposer.model, proposer.samples

    def call(n: int) -> Batch:
        try:
            completion = caller.complete(endpoint, model, messages, params, n=n, deadline=deadline)
        except SelfMoAError as error:
            return failed(model, error, n)
        return usable(completion, model, include_reasoning)

    def fan_out(count: int, size: int, have: int = 0) -> Batch:
        sizes = [min(size, count - start) for start in range(0, count, size)]
        still = None if enough is None else max(0, enough - have)
        results = gather([functools.partial(call, s) for s in sizes], deadline, enough=still, grace=grace)
        return collect(results, [(model, s) for s in sizes])

    limit = caller.memory.max_n(endpoint, model)
    if wanted == 1 or limit is not None:
        return fan_out(wanted, limit or 1)
    try:
        completion = caller.complete(endpoint, model, messages, params, n=wanted, deadline=deadline)
    except ParameterRefused as refusal:
        if refusal.param != "n":
            return failed(model, refusal, wanted)
        limit = max(1, min(refusal.limit or 1, wanted - 1))
        log.info("selfmoa: %s refuses n=%d; falling back to n<=%d calls (remembered)", model, wanted, limit)
        caller.memory.limit_n(endpoint, model, limit)
        return fan_out(wanted, limit)
    except SelfMoAError as error:
        return failed(model, error, wanted)
    got = len(completion.choices)
    batch = usable(completion, model, include_reasoning)
    if got < wanted:
        log.info("selfmoa: %s returned %d of n=%d choices; topping up (remembered)", model, got, wanted)
        caller.memory.limit_n(endpoint, model, max(got, 1))
        batch.extend(fan_out(wanted - got, max(got, 1), have=len(batch.samples)))
    return batch


def propose(
    caller: Caller,
    proposers: Sequence[Proposer],
    messages: Sequence[Message],
    params: Mapping[str, Any],
    deadline: Deadline,
    *,
    include_reasoning: bool = False,
    enough: int | None = None,
    grace: float | None = None,
) -> Batch:
    """Every proposer's samples, concurrently; see `gather` for `enough` and `grace`."""
    # A lone proposer may fan out to many calls itself (no `n`): the grace period applies there.
    alone = len(proposers) == 1
    tasks = [
        functools.partial(sample, caller, p, messages, params, deadline, include_reasoning,
                          enough=enough if alone else None, grace=grace if alone else None)
        for p in proposers
    ]
    results = gather(tasks, deadline, enough=enough, grace=grace)
    return collect(results, [(p.model, p.samples) for p in proposers])


def gather(
    tasks: Sequence[Callable[[], Batch]],
    deadline: Deadline,
    *,
    enough: int | None = None,
    grace: float | None = None,
) -> list[Batch | None]:
    """Run tasks concurrently; None for those still running at the deadline, or `grace` seconds
    after `enough` usable samples arrived. Abandoned calls end by themselves at the deadline."""
    if len(tasks) == 1:
        return [tasks[0]()]
    pool = ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="selfmoa")
    futures: list[Future[Batch]] = [pool.submit(task) for task in tasks]
    pending = set(futures)
    cutoff = deadline
    while pending and not cutoff.expired():
        _, pending = wait(pending, timeout=cutoff.remaining(), return_when=FIRST_COMPLETED)
        arrived = sum(len(f.result().samples) for f in futures if f.done())
        if enough is not None and grace is not None and arrived >= enough and cutoff is deadline:
            cutoff = Deadline(min(grace, deadline.remaining()))
    pool.shutdown(wait=False, cancel_futures=True)
    return [f.result() if f.done() else None for f in futures]


def failed(model: str, error: SelfMoAError, count: int) -> Batch:
    """`count` samples lost to one failed call, with what the backend said."""
    reason = str(error).removeprefix(f"{model}: ")
    status = error.backend_status if isinstance(error, BackendError) else None
    timed_out = isinstance(error, DeadlineExceeded)
    failure = Failure(model, reason, timed_out, status=status, code=error.code, retry_after=error.retry_after)
    return Batch(failures=[failure] * count)


def collect(results: Sequence[Batch | None], expected: Sequence[tuple[str, int]]) -> Batch:
    """One batch from several; an abandoned task counts as that many failed samples of its model."""
    batch = Batch()
    for result, (model, count) in zip(results, expected):
        batch.extend(result or Batch(failures=[Failure(model, "abandoned: no answer in time", True)] * count))
    return batch
