"""One request through one of our approaches: configuration → recipe → caller → run, whichever
route (our own, or optillm's plugin contract) received it.

Errors leave as `PublicError`s: the approach named, secrets redacted, the status kept. `summary`
is what a request's log line says of its runs: models, samples ok/failed, rounds, calls, tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from selfmoa.approaches import Backend, Caller, Emit, Outcome, Recipe, SelfMoAError, run
from selfmoa.approaches.watch import UNWATCHED, Watcher

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
        return replace(self, caller=Caller(old.backends, old.memory, old.deadline, old.retry, old.hedging,
                                           watcher=old.watcher))


def prepare(slug: str, model: str, body: Mapping[str, Any], messages: Sequence[dict[str, Any]],
            backends: Mapping[str, Backend], runtime: Runtime, scope: RequestScope,
            watcher: Watcher = UNWATCHED) -> Job:
    """The job for `body`, or a `PublicError` (400) naming the first bad field."""
    try:
        planned = plan(slug, model, body, messages, runtime.config)
    except SelfMoAError as error:
        raise public(slug, model, error, runtime) from None
    caller = Caller(backends, runtime.memory, scope.deadline(planned.recipe.timeout), hedging=planned.hedging,
                    watcher=watcher)
    return Job(slug, planned, [dict(m) for m in messages], caller, runtime)


async def answer(job: Job, emit: Emit | None = None, *, stream: bool = False) -> Outcome:
    """The job's outcome (its events to `emit`); a failure raised as a `PublicError`."""
    try:
        return await run(job.recipe, job.messages, job.caller, emit, stream=stream)
    except SelfMoAError as error:
        raise public(job.slug, job.recipe.aggregator, error, job.runtime) from None


def public(slug: str, model: str, error: SelfMoAError, runtime: Runtime) -> PublicError:
    safe = PublicError(f"{slug}: {redact(str(error), runtime.secrets)}", error)
    log.warning("selfmoa approach=%s model=%s failed: %s", slug, model, safe)
    return safe


def summary(recipe: Recipe, outcomes: Sequence[Outcome], raced: int = 0) -> dict[str, Any]:
    """What a request's log line says of its runs: models, samples ok/failed, rounds, calls (of
    which `raced` were hedging's extra calls), tokens; whether an answer fell back or was cleaned."""
    return {
        "proposers": ",".join(f"{p.model}x{p.samples}" for p in recipe.proposers),
        "aggregator": recipe.aggregator,
        "samples_ok": sum(len(o.proposals) for o in outcomes),
        "samples_failed": sum(len(o.failures) for o in outcomes),
        "rounds": max(o.rounds for o in outcomes),
        "seq": any(o.sequential for o in outcomes),
        "calls": sum(o.calls for o in outcomes),
        "prompt_tokens": sum(o.usage.prompt_tokens for o in outcomes),
        "completion_tokens": sum(o.completion_tokens for o in outcomes),
        "runs": len(outcomes) if len(outcomes) > 1 else None,
        "fallback": True if any(o.fallback for o in outcomes) else None,
        "exit": "agree" if any(o.early_exit for o in outcomes) else None,
        "raced": raced or None,
        "cleaned": True if any(o.cleaned for o in outcomes) else None,
    }
