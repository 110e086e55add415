"""One request through one of our approaches: configuration → recipe → caller → run, whichever
route (our own, or optillm's plugin contract) received it.

Errors leave as `PublicError`s: the approach named, secrets redacted, the status kept. Each run
logs one line: approach, models, samples ok/failed, rounds, calls, tokens, wall time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from selfmoa.approaches import Backend, Caller, Emit, Outcome, Recipe, SelfMoAError, run

from .config import Plan, plan
from .runtime import Runtime, redact
from .scope import RequestScope

log = logging.getLogger("selfmoa")


class PublicError(SelfMoAError):
    """An approach's error as a client may see it: approach named, secrets redacted, status kept."""

    def __init__(self, message: str, cause: SelfMoAError) -> None:
        super().__init__(message)
        self.status = cause.status
        self.code = cause.code
        self.retry_after = cause.retry_after
        self.param: str | None = getattr(cause, "field", None)


@dataclass(frozen=True)
class Job:
    """One run of an approach for a request, ready to go (a request with `n` > 1 has n of them)."""

    slug: str
    plan: Plan
    messages: list[dict[str, Any]]
    caller: Caller
    runtime: Runtime

    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe

    def again(self) -> Job:
        """Another run of the same request (its own calls and usage, the same deadline)."""
        old = self.caller
        return replace(self, caller=Caller(old.backends, old.memory, old.deadline, old.retry, old.hedging))


def prepare(slug: str, model: str, body: Mapping[str, Any], messages: Sequence[dict[str, Any]],
            backends: Mapping[str, Backend], runtime: Runtime, scope: RequestScope) -> Job:
    """The job for `body`, or a `PublicError` (400) naming the first bad field."""
    try:
        planned = plan(slug, model, body, messages, runtime.config)
    except SelfMoAError as error:
        raise public(slug, model, error, runtime) from None
    caller = Caller(backends, runtime.memory, scope.deadline(planned.recipe.timeout), hedging=planned.hedging)
    return Job(slug, planned, [dict(m) for m in messages], caller, runtime)


async def answer(job: Job, emit: Emit | None = None, *, stream: bool = False) -> Outcome:
    """The job's outcome (its events to `emit`); a failure raised as a `PublicError`, the run
    logged when it ends."""
    started = time.monotonic()
    try:
        outcome = await run(job.recipe, job.messages, job.caller, emit, stream=stream)
    except SelfMoAError as error:
        raise public(job.slug, job.recipe.aggregator, error, job.runtime) from None
    log.info(summary(job.slug, job.recipe, outcome, time.monotonic() - started, job.caller.raced))
    return outcome


def public(slug: str, model: str, error: SelfMoAError, runtime: Runtime) -> PublicError:
    safe = PublicError(f"{slug}: {redact(str(error), runtime.secrets)}", error)
    log.warning("selfmoa approach=%s model=%s failed: %s", slug, model, safe)
    return safe


def summary(slug: str, recipe: Recipe, outcome: Outcome, wall: float, raced: int = 0) -> str:
    """The one log line per run: approach, models, samples ok/failed, rounds, calls (of which
    `raced` were hedging's extra calls), tokens, time."""
    models = ",".join(f"{p.model}x{p.samples}" for p in recipe.proposers)
    extras = (" fallback=yes" if outcome.fallback else "") + (f" raced={raced}" if raced else "")
    extras += " cleaned=yes" if outcome.cleaned else ""
    return (
        f"selfmoa approach={slug} proposers={models} aggregator={recipe.aggregator} "
        f"samples_ok={len(outcome.proposals)} samples_failed={len(outcome.failures)} "
        f"rounds={outcome.rounds} seq={'yes' if outcome.sequential else 'no'} calls={outcome.calls} "
        f"prompt_tokens={outcome.usage.prompt_tokens} completion_tokens={outcome.completion_tokens}"
        f"{extras} wall={wall:.2f}s"
    )
