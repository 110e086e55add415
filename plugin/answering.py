"""One request through one approach: configuration → recipe → caller → events, whichever route
(our own, or optillm's plugin contract) received it.

Errors leave as `PublicError`s: the approach named, secrets redacted, the status kept. Each run
logs one line: approach, models, samples ok/failed, rounds, calls, tokens, wall time.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from selfmoa.approaches import (
    DEFAULT_ENDPOINT,
    Abandoned,
    Backend,
    Caller,
    Deadline,
    Done,
    Event,
    Outcome,
    Recipe,
    SelfMoAError,
    Stop,
    moa_events,
)

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
        self.abandoned = isinstance(cause, Abandoned)  # stopped because the request ended otherwise


@dataclass(frozen=True)
class Job:
    """One run of an approach for a request, ready to go (a request with `n` > 1 has n of them)."""

    slug: str
    plan: Plan
    messages: list[dict[str, Any]]
    caller: Caller
    runtime: Runtime
    stop: Stop  # the request's: stopping it stops every run of the request

    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe

    def again(self) -> Job:
        """Another run of the same request (its own calls and usage, the same deadline and stop)."""
        old = self.caller
        caller = Caller(old.backends, old.memory, old.deadline, old.retry, old.hedging, self.stop.child())
        return replace(self, caller=caller)


def prepare(slug: str, model: str, body: dict[str, Any], messages: Sequence[dict[str, Any]], backend: Backend,
            runtime: Runtime, scope: RequestScope | None) -> Job:
    """The job for `body`, or a `PublicError` (400) naming the first bad field."""
    try:
        planned = plan(slug, model, body, messages, runtime.config)
    except SelfMoAError as error:
        raise public(slug, model, error, runtime) from None
    seconds = planned.recipe.timeout
    deadline = scope.deadline(seconds) if scope is not None else Deadline(seconds)
    stop = scope.stop if scope is not None else Stop()
    caller = Caller({DEFAULT_ENDPOINT: backend, **runtime.backends}, runtime.memory, deadline,
                    hedging=planned.hedging, stop=stop.child())
    return Job(slug, planned, [dict(m) for m in messages], caller, runtime, stop)


def events(job: Job, *, stream: bool = False) -> Generator[Event, None, None]:
    """The job's events; failures raised as `PublicError`s, the run logged when it ends."""
    started = time.monotonic()
    # closed with this generator: a run given up by its reader stops its calls at once (`moa_events`)
    with contextlib.closing(moa_events(job.recipe, job.messages, job.caller, stream=stream)) as run:
        try:
            for event in run:
                if isinstance(event, Done):
                    log.info(summary(job.slug, job.recipe, event.outcome, time.monotonic() - started,
                                     job.caller.raced))
                yield event
        except SelfMoAError as error:
            raise public(job.slug, job.recipe.aggregator, error, job.runtime) from None


def outcome(job: Job) -> Outcome:
    for event in events(job):
        if isinstance(event, Done):
            return event.outcome
    raise AssertionError("the run ended without an outcome")  # pragma: no cover


def public(slug: str, model: str, error: SelfMoAError, runtime: Runtime) -> PublicError:
    safe = PublicError(f"{slug}: {redact(str(error), runtime.secrets)}", error)
    if safe.abandoned:
        log.info("selfmoa approach=%s model=%s stopped: %s", slug, model, safe)
    else:
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
