"""Everything optillm's routing sends elsewhere than one of our approaches or a plain model,
answered by our route with a complete reply: one of optillm's own approaches, `A|B` (one choice
per branch), `A&B` (a pipeline). Every step is ours (`Ours`: our core, the conversation kept) or
optillm's (`theirs.Theirs`), and reports its answer and what its calls cost; the reply sums them.

optillm's semantics are kept: `A|B` runs every branch on the request; in `A&B` each next step
answers the previous step's answer as its query (ours with the conversation around it, the last
user turn being that answer; optillm's approaches flattened, as optillm gives it to them);
`none` cannot be combined; `n` runs the whole operation n times.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from selfmoa.approaches import Backend, Choice, Deadline, Usage
from selfmoa.approaches.tasks import all_or_none
from selfmoa.approaches.watch import Watcher

from .answering import PublicError, answer, prepare
from .config import SLUGS, request_timeout
from .host import Route
from .http import bearer, error_from, error_response, unless_disconnected
from .replies import Reply, message, sse, usage_body
from .runtime import Runtime
from .scope import RequestScope
from .service import Service
from .streaming import EventStream
from .theirs import Theirs, reasoning_of, request_config

Answer = tuple[Choice, Usage]


class Step(Protocol):
    async def answer(self, messages: list[dict[str, Any]], query: str | None = None, *,
                     deadline: Deadline) -> Answer: ...


@dataclass(frozen=True)
class Ours:
    """One of our approaches as a step of a combination."""

    slug: str
    model: str
    body: Mapping[str, Any]
    backends: Mapping[str, Backend]
    runtime: Runtime
    scope: RequestScope
    watcher: Watcher

    async def answer(self, messages: list[dict[str, Any]], query: str | None = None, *,
                     deadline: Deadline) -> Answer:
        conversation = messages if query is None else with_last_user_turn(messages, query)
        outcome = await answer(prepare(self.slug, self.model, self.body, conversation, self.backends, self.runtime,
                                       self.scope, self.watcher))
        return outcome.answer, outcome.usage


def with_last_user_turn(messages: Sequence[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The conversation with its last user turn's content replaced by `text` (added if none)."""
    turns = [dict(m) for m in messages]
    for turn in reversed(turns):
        if turn.get("role") == "user":
            turn["content"] = text
            return turns
    return [*turns, {"role": "user", "content": text}]


async def combined(request: Request, service: Service, body: dict[str, Any], route: Route,
                   scope: RequestScope) -> Response:
    """optillm's approaches and combinations (see the module docstring), as one complete reply."""
    if route.operation != "SINGLE" and "none" in route.approaches:
        return error_response(400, "'none' cannot be combined with other approaches", param="model")
    messages = service.host.without_tags(body.get("messages") or [])
    approaches = route.approaches[:1] if route.operation == "SINGLE" else route.approaches  # as optillm runs them
    watcher = request.state.telemetry.watcher()
    steps = [_step(service, body, route, scope, bearer(request), approach, watcher) for approach in approaches]
    deadline = scope.deadline(request_timeout(service.runtime.config))
    runs = [_run(route.operation, steps, messages, deadline) for _ in range(int(body.get("n") or 1))]
    try:
        answers = await unless_disconnected(request.receive, all_or_none(runs))
    except PublicError as error:
        return error_from(error)
    reply = Reply(body.get("model") or route.model)
    answered = [(choice, replace(usage, reasoning_tokens=reasoning_of(service.host, choice, usage)))
                for run in answers for choice, usage in run]
    whole = completion(reply, answered)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return EventStream(_streamed(reply, whole, include_usage), _nothing)
    return JSONResponse(whole)


def _step(service: Service, body: dict[str, Any], route: Route, scope: RequestScope, key: str | None,
          approach: str, watcher: Watcher) -> Step:
    if approach in SLUGS:
        return Ours(approach, route.model, body, service.backends(key), service.runtime, scope, watcher)
    client = service.upstream.sync_client(key, service.host.litellm_client)
    return Theirs(service.host, approach, route.model, request_config(body, service.host.settings), client,
                  service.pool, watcher)


async def _run(operation: str, steps: Sequence[Step], messages: list[dict[str, Any]],
               deadline: Deadline) -> list[Answer]:
    if operation == "OR":
        return list(await all_or_none([step.answer(messages, deadline=deadline) for step in steps]))
    choice, total = await steps[0].answer(messages, deadline=deadline)
    spent = replace(total)
    for step in steps[1:]:  # AND: each next step answers the previous step's answer
        choice, usage = await step.answer(messages, choice.content, deadline=deadline)
        spent.add(usage)
    return [(choice, spent)]


def completion(reply: Reply, answered: Sequence[Answer]) -> dict[str, Any]:
    return {"id": reply.id, "object": "chat.completion", "created": reply.created, "model": reply.model,
            "choices": [{"index": i, "message": message(choice), "logprobs": None,
                         "finish_reason": "tool_calls" if choice.tool_calls else choice.finish_reason or "stop"}
                        for i, (choice, _) in enumerate(answered)],
            "usage": usage_body(usage for _, usage in answered)}


async def _streamed(reply: Reply, whole: dict[str, Any], include_usage: bool) -> AsyncIterator[str]:
    """A finished reply as a stream: each choice's message, its finish, the usage chunk, [DONE]."""
    for choice in whole["choices"]:
        delta = dict(choice["message"])
        if "tool_calls" in delta:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(delta["tool_calls"])]
        yield reply.chunk([{"index": choice["index"], "delta": delta, "finish_reason": None, "logprobs": None}])
        yield reply.chunk([{"index": choice["index"], "delta": {}, "finish_reason": choice["finish_reason"],
                            "logprobs": None}])
    if include_usage:
        yield reply.chunk([], usage=whole["usage"])
    yield sse("[DONE]")


async def _nothing() -> None:
    return None
