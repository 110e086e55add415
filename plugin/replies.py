"""The OpenAI wire shapes of our replies: `chat.completion` bodies, stream chunks, error bodies,
and the optional `selfmoa` trace. Pure functions of plain values: no web framework here."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any

from selfmoa.approaches import Choice, Delta, Outcome, Recipe, Usage

from .runtime import redact

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable_error",
               504: "timeout_error"}


class Reply:
    """The identity every body and chunk of one reply shares."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-selfmoa-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.model = model

    def completion(self, outcomes: Sequence[Outcome], traces: Sequence[dict[str, Any]] | None) -> dict[str, Any]:
        body = {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": i, "message": message(o.answer), "finish_reason": finish_reason(o.answer),
                         "logprobs": o.answer.logprobs} for i, o in enumerate(outcomes)],
            "usage": usage_body(o.usage for o in outcomes),
        }
        if traces is not None:
            body["selfmoa"] = traces[0] if len(traces) == 1 else {"choices": list(traces)}
        return body

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": choices, **extra}
        return sse(body)


def message(choice: Choice) -> dict[str, Any]:
    body: dict[str, Any] = {"role": "assistant", "content": choice.content if choice.content or not choice.tool_calls
                            else None}
    if choice.tool_calls:
        body["tool_calls"] = [dict(call) for call in choice.tool_calls]
    if choice.reasoning:
        body["reasoning_content"] = choice.reasoning
    return body


def finish_reason(choice: Choice) -> str:
    if choice.tool_calls and choice.finish_reason in (None, "stop"):
        return "tool_calls"  # a selected or fallback proposal keeps its own reason; a call is a call
    return choice.finish_reason or "stop"


def delta_body(delta: Delta, *, first: bool) -> dict[str, Any] | None:
    """A backend delta as the client's delta (None when it carries nothing to show)."""
    body: dict[str, Any] = {"role": "assistant"} if first else {}
    if delta.content:
        body["content"] = delta.content
    if delta.reasoning:
        body["reasoning_content"] = delta.reasoning
    if delta.tool_calls:
        body["tool_calls"] = [dict(call) for call in delta.tool_calls]
    return body if body or delta.logprobs else None


def usage_body(usages: Iterable[Usage]) -> dict[str, Any]:
    total = Usage()
    for usage in usages:
        total.add(usage)
    return {"prompt_tokens": total.prompt_tokens, "completion_tokens": total.completion_tokens,
            "total_tokens": total.prompt_tokens + total.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": total.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": total.reasoning_tokens}}


def trace(slug: str, recipe: Recipe, outcome: Outcome, wall: float, secrets: Sequence[str],
          request_id: str | None = None) -> dict[str, Any]:
    """How the answer was reached, for debugging and the A/B harness. Never on by default; backend
    messages in it are redacted like every error message."""
    return {
        "approach": slug,
        "aggregator": recipe.aggregator,
        "proposals": [{"model": s.model, "text": s.text, "finish_reason": s.candidate.choice.finish_reason,
                       "completion_tokens": s.completion_tokens} for s in outcome.proposals],
        "failures": [{"model": f.model, "reason": redact(f.reason, secrets), "status": f.status}
                     for f in outcome.failures],
        "rounds": outcome.rounds,
        "sequential": outcome.sequential,
        "calls": outcome.calls,
        "usage_by_model": {model: {"calls": u.calls, "prompt_tokens": u.prompt_tokens,
                                   "completion_tokens": u.completion_tokens, "cached_tokens": u.cached_tokens}
                           for model, u in outcome.usage_by_model.items()},
        "fallback": redact(outcome.fallback, secrets) if outcome.fallback else None,
        "request_id": request_id,
        "cleaned": outcome.cleaned,
        "early_exit": outcome.early_exit,
        "wall_s": round(wall, 3),
    }


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "upstream_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code or kind}}


def error_headers(status: int, retry_after: float | None = None) -> dict[str, str]:
    """Our 5xx and 429 answers come after our own retries within the deadline: a client's retry would
    pay for every proposal again, so it is told not to (the openai SDK, LiteLLM and LangChain obey)."""
    headers = {"x-should-retry": "false"} if status >= 500 or status == 429 else {}
    if retry_after:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return headers


def sse(data: dict[str, Any] | str) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"data: {payload}\n\n"
