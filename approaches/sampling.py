"""Proposals: k samples per proposer model, drawn concurrently.

One call with `n=k` where the backend honours `n`; where it refuses `n` or returns fewer choices,
the rest is topped up with concurrent calls, and the backend's limit is remembered so the next
request goes straight to the right shape. Every one of those calls is hedged (`hedging.py`): a
hung `n` call would otherwise lose every sample at once. Failed and empty samples are dropped (and
reported), never aggregated; a sample cut at its token limit stays a candidate, marked as cut off,
since a plain call would have answered with it too.

A `Harvest` is one proposal phase (a layer, or all of Seq's windows): it waits for the calls
until the phase's share of the time is over, then stops waiting as soon as `enough` usable
samples are in, but not before. With fewer, the aggregation would have nothing to read, so the
calls get the rest of the request's time instead of leaving it unused.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backend import Completion
from .calls import Caller, Deadline
from .errors import Abandoned, BackendError, DeadlineExceeded, ParameterRefused, SelfMoAError
from .hedging import hedged_complete
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


@dataclass
class Group:
    """The calls whose samples are read together (a layer, or one Seq window): the samples each
    call was expected to bring, what arrived, and how many of its tasks still run."""

    expected: list[tuple[str, int]] = field(default_factory=list)
    filled: dict[int, Batch] = field(default_factory=dict)
    running: int = 0
    closed: bool = False

    def batch(self) -> Batch:
        """What arrived; a call still out counts as that many abandoned samples of its model."""
        batch = Batch()
        for slot, (model, count) in enumerate(self.expected):
            lost = Batch(failures=[Failure(model, "abandoned: no answer in time", True)] * count)
            batch.extend(self.filled[slot] if slot in self.filled else lost)
        return batch


class Harvest:
    """One proposal phase: its calls run concurrently, each filling its slot of a `Group`.

    Waiting stops when a group's calls are all back; else at `soft` once `enough` usable samples
    arrived (or `grace` seconds after that, if sooner); else at the request's deadline.
    """

    def __init__(self, caller: Caller, soft: Deadline, *, enough: int = 1, grace: float | None = None) -> None:
        self.caller, self.soft, self.enough, self.grace = caller, soft, max(1, enough), grace
        self.cond = threading.Condition()
        self.arrived = 0
        self.enough_at: float | None = None

    def expect(self, group: Group, model: str, count: int) -> int:
        with self.cond:
            group.expected.append((model, count))
            return len(group.expected) - 1

    def fill(self, group: Group, slot: int, batch: Batch) -> None:
        with self.cond:
            if group.closed:
                return  # arrived after the group was read: nobody will
            group.filled[slot] = batch
            self.arrived += len(batch.samples)
            if self.enough_at is None and self.arrived >= self.enough:
                self.enough_at = time.monotonic()
            self.cond.notify_all()

    def spawn(self, group: Group, task: Callable[[], None]) -> None:
        with self.cond:
            group.running += 1
        threading.Thread(target=self._run, args=(group, task), name="selfmoa-propose", daemon=True).start()

    def _run(self, group: Group, task: Callable[[], None]) -> None:
        try:
            task()
        finally:
            with self.cond:
                group.running -= 1
                self.cond.notify_all()

    def cutoff(self) -> float:
        """When waiting stops (monotonic time), given what arrived so far."""
        hard = self.caller.deadline.at
        if self.enough_at is None:
            return hard
        end = self.soft.at if self.grace is None else min(self.soft.at, self.enough_at + self.grace)
        return min(end, hard)

    def wait(self, group: Group) -> Batch:
        """The group's samples once its calls are back or the phase may end (see the class)."""
        self.caller.stop.on_set(self._wake)
        try:
            with self.cond:
                while group.running and not self.caller.stop.is_set():
                    left = self.cutoff() - time.monotonic()
                    if left <= 0:
                        break
                    self.cond.wait(left)
                group.closed = True
                if self.caller.stop.is_set():
                    raise Abandoned("the request no longer needs its proposals")
                return group.batch()
        finally:
            self.caller.stop.forget(self._wake)

    def _wake(self) -> None:
        with self.cond:
            self.cond.notify_all()


def sample_into(harvest: Harvest, group: Group, proposer: Proposer, messages: Sequence[Message],
                params: Mapping[str, Any], include_reasoning: bool = False) -> None:
    """`proposer.samples` proposals from one model into `group`, in as few calls as the backend
    allows (run as one of the harvest's tasks; the calls a refused or short `n` fans out to are
    tasks of their own)."""
    caller, endpoint, model, wanted = harvest.caller, proposer.endpoint, proposer.model, proposer.samples

    def call(n: int) -> Completion:
        return hedged_complete(caller, endpoint, model, messages, params, kind="proposal", n=n,
                               usable=lambda c: bool(usable(c, model, include_reasoning).samples))

    def fill(slot: int, n: int) -> None:
        try:
            batch = usable(call(n), model, include_reasoning)
        except SelfMoAError as error:
            batch = failed(model, error, n)
        harvest.fill(group, slot, batch)

    def fan_out(count: int, size: int) -> None:
        for start in range(0, count, size):
            n = min(size, count - start)
            harvest.spawn(group, functools.partial(fill, harvest.expect(group, model, n), n))

    limit = caller.memory.max_n(endpoint, model)
    if wanted == 1 or limit is not None:
        return fan_out(wanted, limit or 1)
    slot = harvest.expect(group, model, wanted)
    try:
        completion = call(wanted)
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
    """Every proposer's samples, concurrently, within `deadline` (the phase's share of the time;
    see `Harvest` for when the calls get more of it, and for `enough` and `grace`)."""
    harvest = Harvest(caller, deadline, enough=enough or 1, grace=grace)
    group = Group()
    for proposer in proposers:
        harvest.spawn(group, functools.partial(sample_into, harvest, group, proposer, messages, params,
                                               include_reasoning))
    return harvest.wait(group)


def failed(model: str, error: SelfMoAError, count: int) -> Batch:
    """`count` samples lost to one failed call, with what the backend said."""
    reason = str(error).removeprefix(f"{model}: ")
    status = error.backend_status if isinstance(error, BackendError) else None
    timed_out = isinstance(error, DeadlineExceeded)
    failure = Failure(model, reason, timed_out, status=status, code=error.code, retry_after=error.retry_after)
    return Batch(failures=[failure] * count)
