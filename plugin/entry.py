"""optillm's plugin contract for the four approaches: parse, call the core, return.

`run(system_prompt, initial_query, client, model, request_config, messages)` returns
`(answer, completion_tokens)`: all optillm can carry. `selfmoa serve` answers single-approach
requests itself, with complete replies; this path serves `&`/`|` combinations and stock optillm.
Failures are raised as `PublicError`s, and noted in the request scope so that `selfmoa serve`
can answer with their status instead of optillm's 500.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from selfmoa.approaches import OpenAIBackend
from selfmoa.approaches.prompts import candidate_of

from .answering import PublicError, outcome, prepare
from .runtime import current_runtime
from .scope import current_scope

PluginRun = Callable[..., tuple[str, int]]


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
        scope = current_scope()
        try:
            job = prepare(slug, model, request_config or {}, conversation, OpenAIBackend(client), current_runtime(),
                          scope)
            result = outcome(job)
        except PublicError as error:
            if scope is not None and not error.abandoned:  # an abandoned run is not why the request failed
                scope.errors.append(error)
                scope.stop.set()  # the request fails with this: another `|` branch stops now
            raise
        if result.answer.tool_calls:  # optillm carries only text: a tool call goes in its text form
            candidate = candidate_of(result.answer)
            return (candidate.text if candidate else ""), result.completion_tokens
        return result.text, result.completion_tokens

    run.__name__ = f"run_{slug}"
    run.__doc__ = f"optillm entry point of the {slug} approach."
    return run


def conversation_from(system_prompt: str, initial_query: str) -> list[dict[str, Any]]:
    """optillm's flattened form (used by `&` pipelines, which pass no messages) back as messages."""
    turns = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*turns, {"role": "user", "content": initial_query}]
