"""Proposals: k samples per proposer model, drawn concurrently.

One call with `n=k` where the backend honours `n`; where it refuses `n` or returns fewer choices,
the rest is topped up with concurrent calls, and the backend's limit is remembered so the next
request goes straight to the right shape. Every one of those calls is hedged (`hedging.py`): a
hung `n` call would otherwise lose every sample at once. Failed and empty samples are dropped (and
reported), never aggregated; a sample cut at its token limit stays a candidate, marked as cut off,
since a plain call would have answered with it too.

A `Harvest` is one proposal phase (a layer, or all of Seq's windows) and owns its calls: it waits
for them until the phase's share of the time is over, then stops waiting as soon as `enough`
usable samples are in, but not before. With fewer, the aggregation would have nothing to read, so
the calls get the rest of the request's time instead of leaving it unused. Calls still out when
the phase is done with them are cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .backend import Completion
from .calls import Caller, Deadline
from .errors import BackendError, DeadlineExceeded, ParameterRefused, SelfMoAError, TransientError
from .hedging import hedged_complete
from .prompts import candidate_of
from .tasks import cancel_and_wait
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


def _has_output(completion: Completion) -> bool:
    """Whether a reply may win its race: some choice has text or a tool call."""
    return any(choice.content.strip() or choice.tool_calls for choice in completion.choices)


@dataclass
class Group:
    """The calls whose samples are read together (a layer, or one Seq window): the samples each
    call was expected to bring, what arrived, and its tasks."""

    expected: list[tuple[str, int]] = field(default_factory=list)
    filled: dict[int, Batch] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    closed: bool = False

    def batch(self) -> Batch:
        """What arrived; a call still out counts as that many abandoned samples of its model."""
        batch = Batch()
        for slot, (model, count) in enumerate(self.expected):
            lost = Batch(failures=[Failure(model, "abandoned: no answer in time", True)] * count)
            batch.extend(self.filled[slot] if slot in self.filled else lost)
        return batch


class Harvest:
    """One proposal phase: its calls run as its tasks, each filling its slot of a `Group`; leaving
    the phase (`async with`) cancels the calls still out.

    Waiting stops when a group's calls are all back; else at `soft` once `enough` usable samples
    arrived (or `grace` seconds after that, if sooner); else at the request's deadline.
    """

    def __init__(self, caller: Caller, soft: Deadline, *, enough: int = 1, grace: float | None = None,
                 layer: int = 1) -> None:
        self.caller, self.soft, self.enough, self.grace = caller, soft, max(1, enough), grace
        self.layer = layer
        self.arrived = 0
        self.enough_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Harvest:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await cancel_and_wait(self._tasks)  # a failure of a window nobody read is read there, not lost

    def expect(self, group: Group, model: str, count: int) -> int:
        group.expected.append((model, count))
        return len(group.expected) - 1

    def fill(self, group: Group, slot: int, batch: Batch) -> None:
        if group.closed:
            return  # arrived after the group was read: nobody will
        group.filled[slot] = batch
        self.arrived += len(batch.samples)
        if self.enough_at is None and self.arrived >= self.enough:
            self.enough_at = time.monotonic()

    def spawn(self, group: Group, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        group.tasks.add(task)
        self._tasks.add(task)

    def cutoff(self) -> float:
        """When waiting stops (monotonic time), given what arrived so far."""
        hard = self.caller.deadline.at
        if self.enough_at is None:
            return hard
        end = self.soft.at if self.grace is None else min(self.soft.at, self.enough_at + self.grace)
        return min(end, hard)

    async def wait(self, group: Group) -> Batch:
        """The group's samples once its calls are back or the phase may end (see the class)."""
        while pending := {task for task in group.tasks if not task.done()}:
            left = self.cutoff() - time.monotonic()
            if left <= 0:
                break
            await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        group.closed = True
        for task in group.tasks:  # a task that died of anything but a backend error is a bug: raise it
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return group.batch()


async def sample_into(harvest: Harvest, group: Group, proposer: Proposer, messages: Sequence[Message],
                      params: Mapping[str, Any], include_reasoning: bool = False) -> None:
    """`proposer.samples` proposals from one model into `group`, in as few calls as the backend
    allows (run as one of the harvest's tasks; the calls a refused or short `n` fans out to are
    tasks of their own)."""
    caller, endpoint, model, wanted = harvest.caller, proposer.endpoint, proposer.model, proposer.samples

    async def call(n: int) -> Completion:
        return await hedged_complete(caller, endpoint, model, messages, params, kind="proposal", n=n,
                                     usable=_has_output, step=harvest.layer)

    async def fill(slot: int, n: int) -> None:
        try:
            batch = usable(await call(n), model, include_reasoning)
        except SelfMoAError as error:
            batch = failed(model, error, n)
        harvest.fill(group, slot, batch)

    def fan_out(count: int, size: int) -> None:
        for start in range(0, count, size):
            n = min(size, count - start)
            harvest.spawn(group, fill(harvest.expect(group, model, n), n))

    limit = caller.memory.max_n(endpoint, model)
    if wanted == 1 or limit is not None:
        return fan_out(wanted, limit or 1)
    slot = harvest.expect(group, model, wanted)
    try:
        completion = await call(wanted)
    except ParameterRefused as refusal:
        if refusal.param != "n":
            return harvest.fill(group, slot, failed(model, refusal, wanted))
        limit = max(1, min(refusal.limit or 1, wanted - 1))
        log.info("selfmoa: %s refuses n=%d; falling back to n<=%d calls (remembered)", model, wanted, limit)
        caller.memory.limit_n(endpoint, model, limit)
        harvest.fill(group, slot, Batch())
        return fan_out(wanted, limit)
    except SelfMoAError as error:
        return harvest.fill(group, slot, failed(model, error, wanted))
    got = len(completion.choices)
    harvest.fill(group, slot, usable(completion, model, include_reasoning))
    if got < wanted:
        log.info("selfmoa: %s returned %d of n=%d choices; topping up (remembered)", model, got, wanted)
        caller.memory.limit_n(endpoint, model, max(got, 1))
        fan_out(wanted - got, max(got, 1))
    return None


async def propose(
    caller: Caller,
    proposers: Sequence[Proposer],
    messages: Sequence[Message],
    params: Mapping[str, Any],
    deadline: Deadline,
    *,
    include_reasoning: bool = False,
    enough: int | None = None,
    grace: float | None = None,
    layer: int = 1,
) -> Batch:
    """Every proposer's samples, concurrently, within `deadline` (the phase's share of the time;
    see `Harvest` for when the calls get more of it, and for `enough` and `grace`)."""
    async with Harvest(caller, deadline, enough=enough or 1, grace=grace, layer=layer) as harvest:
        group = Group()
        for proposer in proposers:
            harvest.spawn(group, sample_into(harvest, group, proposer, messages, params, include_reasoning))
        return await harvest.wait(group)


def failed(model: str, error: SelfMoAError, count: int) -> Batch:
    """`count` samples lost to one failed call, with what the backend said."""
    reason = str(error).removeprefix(f"{model}: ")
    status = error.backend_status if isinstance(error, BackendError) else None
    timed_out = isinstance(error, DeadlineExceeded) or (isinstance(error, TransientError) and error.timed_out)
    failure = Failure(model, reason, timed_out, status=status, code=error.code, retry_after=error.retry_after)
    return Batch(failures=[failure] * count)
