"""optillm's plugin contract for the four approaches: parse, call the core, return.

`run(system_prompt, initial_query, client, model, request_config, messages)` returns
`(answer, completion_tokens)`; failures are raised as `SelfMoAError`s whose messages are safe
to show (secrets redacted), and reported to `selfmoa serve` so it can answer with their status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from selfmoa.approaches import DEFAULT_ENDPOINT, Caller, Deadline, Outcome, Recipe, SelfMoAError, run_moa

from .config import resolve
from .runtime import Runtime, current_runtime, redact

log = logging.getLogger("selfmoa")

# Set by `selfmoa serve` around each proxied request: the errors to answer with their own status.
reported_errors: ContextVar[list[SelfMoAError] | None] = ContextVar("selfmoa_reported_errors", default=None)
# Set by `selfmoa serve` when a request reaches the proxy (monotonic clock): the request's deadline
# counts from then, not from when optillm gets round to calling the plugin (its own per-request
# set-up takes a while under load, and `n` > 1 runs the plugin several times in a row).
request_arrived: ContextVar[float | None] = ContextVar("selfmoa_request_arrived", default=None)

PluginRun = Callable[..., tuple[str, int]]


class PublicError(SelfMoAError):
    """An approach's error as a client may see it: approach named, secrets redacted, status kept."""

    def __init__(self, message: str, cause: SelfMoAError) -> None:
        super().__init__(message)
        self.status = cause.status
        self.param: str | None = getattr(cause, "field", None)


def make_run(slug: str) -> PluginRun:
    """The `run` function optillm calls for `slug` (a real signature: optillm inspects it)."""

    def run(
        system_prompt: str,
        initial_query: str,
        client: Any,
        model: str,
        request_config: dict[str, Any] | None = None,
        messages: list[dict[str, Any]] | None = None,
    ) -> tuple[str, int]:
        conversation = messages or conversation_from(system_prompt, initial_query)
        return answer(slug, conversation, client, model, request_config or {}, current_runtime())

    run.__name__ = f"run_{slug}"
    run.__doc__ = f"optillm entry point of the {slug} approach."
    return run


def conversation_from(system_prompt: str, initial_query: str) -> list[dict[str, Any]]:
    """optillm's flattened form (used by `&` pipelines, which pass no messages) back as messages."""
    turns = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*turns, {"role": "user", "content": initial_query}]


def answer(
    slug: str,
    messages: Sequence[Mapping[str, Any]],
    client: Any,
    model: str,
    request_config: Mapping[str, Any],
    runtime: Runtime,
) -> tuple[str, int]:
    started = time.monotonic()
    try:
        recipe = resolve(slug, model, request_config, messages, runtime.config)
        caller = Caller({DEFAULT_ENDPOINT: client, **runtime.clients}, runtime.memory, request_deadline(recipe.timeout))
        outcome = run_moa(recipe, [dict(m) for m in messages], caller)
    except SelfMoAError as error:
        safe = PublicError(f"{slug}: {redact(str(error), runtime.secrets)}", error)
        log.warning("selfmoa approach=%s model=%s failed: %s", slug, model, safe)
        holder = reported_errors.get()
        if holder is not None:
            holder.append(safe)
        raise safe from None
    log.info(summary(slug, recipe, outcome, time.monotonic() - started))
    return outcome.text, outcome.completion_tokens


def request_deadline(seconds: float) -> Deadline:
    """`seconds` after the request reached the proxy (or from now, outside `selfmoa serve`)."""
    arrived = request_arrived.get()
    return Deadline(seconds - (time.monotonic() - arrived if arrived is not None else 0.0))


def summary(slug: str, recipe: Recipe, outcome: Outcome, wall: float) -> str:
    """The one log line per request: approach, models, samples ok/failed, rounds, calls, tokens, time."""
    models = ",".join(f"{p.model}x{p.samples}" for p in recipe.proposers)
    return (
        f"selfmoa approach={slug} proposers={models} aggregator={recipe.aggregator} "
        f"samples_ok={len(outcome.proposals)} samples_failed={len(outcome.failures)} "
        f"rounds={outcome.rounds} seq={'yes' if outcome.sequential else 'no'} calls={outcome.calls} "
        f"completion_tokens={outcome.completion_tokens} wall={wall:.2f}s"
    )
