"""optillm's plugin contract for the four approaches: parse, call the core, return.

`run(system_prompt, initial_query, client, model, request_config, messages)` is synchronous, so
each call runs the async core on a loop of its own, with the client optillm hands us (an
`openai.OpenAI` is spoken to over the wire directly, optillm's LiteLLM wrapper through LiteLLM's
async API). A single-approach request (optillm passes its `messages` then) gets a complete
`chat.completion` dict (with its completion tokens: optillm unpacks a pair), which optillm 0.4.0
returns and streams as it is; in `&`/`|` combinations optillm passes no messages and can only carry
`(text, completion_tokens)`, so that is what it gets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from selfmoa.approaches import DEFAULT_ENDPOINT, Backend, Outcome, backend_for
from selfmoa.approaches.prompts import candidate_of

from .answering import Job, answer, prepare, summary
from .logs import request_line
from .replies import Reply
from .runtime import configured_path, runtime_for
from .scope import RequestScope

PluginRun = Callable[..., Any]


def make_run(slug: str) -> PluginRun:
    """The `run` function optillm calls for `slug` (a real signature: optillm inspects it)."""

    def run(
        system_prompt: str,
        initial_query: str,
        client: Any,
        model: str,
        request_config: dict[str, Any] | None = None,
        messages: list[dict[str, Any]] | None = None,
    ) -> Any:
        scope = RequestScope()
        runtime = runtime_for(configured_path())
        conversation = messages or conversation_from(system_prompt, initial_query)
        backends: dict[str, Backend] = {DEFAULT_ENDPOINT: backend_for(client), **runtime.endpoints()}
        job = prepare(slug, model, request_config or {}, conversation, backends, runtime, scope)
        outcome = asyncio.run(_answer(job))
        if messages is None:  # a step of a combination: optillm carries only text
            return as_text(outcome), outcome.completion_tokens
        return Reply(f"{slug}-{model}").completion([outcome], None), outcome.completion_tokens

    run.__name__ = f"run_{slug}"
    run.__doc__ = f"optillm entry point of the {slug} approach."
    return run


async def _answer(job: Job) -> Outcome:
    started = time.monotonic()
    try:
        outcome = await answer(job)
        request_line({"approach": job.slug, **summary(job.recipe, [outcome], job.caller.raced),
                      "wall": time.monotonic() - started})
        return outcome
    finally:
        for backend in job.caller.backends.values():
            closing = getattr(backend, "aclose", None)
            if closing is not None:
                await closing()  # the connections this run opened on its own loop


def as_text(outcome: Outcome) -> str:
    """The answer as text: a tool call in its text form (optillm carries only text)."""
    if outcome.answer.tool_calls:
        candidate = candidate_of(outcome.answer)
        return candidate.text if candidate else ""
    return str(outcome.text)


def conversation_from(system_prompt: str, initial_query: str) -> list[dict[str, Any]]:
    """optillm's flattened form (used by `&` pipelines, which pass no messages) back as messages."""
    turns = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*turns, {"role": "user", "content": initial_query}]
