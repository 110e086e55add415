"""`selfmoa serve`'s chat route. optillm's routing decides (model prefix, `optillm_approach`, the tag,
`--approach`): a request for one of our approaches is answered here as a complete OpenAI reply (full
usage, the final call's finish reason and logprobs, tool calls, true streaming); a plain model is
relayed to its backend as it is (`passthrough.py`); optillm's own approaches and `&`/`|`
combinations are run as optillm runs them, with their cost metered (`combinations.py`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from selfmoa.approaches import Outcome
from selfmoa.approaches.tasks import all_or_none

from .answering import Job, PublicError, answer, prepare, summary
from .combinations import combined
from .config import SLUGS, plan
from .host import Route
from .http import ClientGone, bearer, error_from, error_response, unless_disconnected
from .passthrough import relay
from .replies import Reply, trace
from .runtime import redact
from .scope import RequestScope
from .service import Service
from .streaming import Chunks, EventStream, Runs, chained, head_of
from .telemetry import RequestTelemetry
from .validation import ConfigError

CHAT_PATH = "/v1/chat/completions"
ROUTING_FIELDS = ("model", "optillm_approach")  # read before we know which approach a request is for

log = logging.getLogger("selfmoa")


async def chat(request: Request) -> Response:
    """POST /v1/chat/completions."""
    service: Service = request.app.state.service
    scope = RequestScope(request_id=request.state.request_id)
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return error_response(400, "the request body must be a JSON object")
    for name in ROUTING_FIELDS:  # optillm would fail on these with an HTML 500
        if name in body and not isinstance(body[name], str):
            return error_response(400, f"{name}: must be a string", param=name)
    route = service.host.route(body)
    first = route.approaches[0]
    telemetry: RequestTelemetry = request.state.telemetry
    telemetry.approach = approach_label(route)
    if route.operation == "SINGLE" and len(route.approaches) > 1:
        log.warning("selfmoa: %s: stacked approaches without an operator; optillm runs only the first (%s)",
                    body.get("model"), first)
    slugs = [a for a in route.approaches if a in SLUGS]
    if route.operation != "SINGLE" or first not in SLUGS:
        refused = refuse_bad_config(slugs, route.model, body, service)  # before any other approach runs
        if refused is not None:
            return refused
    try:
        if route.operation == "SINGLE" and first in SLUGS:
            return await ours(request, service, body, route, scope)
        if route.operation == "SINGLE" and first == "none":
            return await unless_disconnected(request.receive, relay(request, service, body, route, scope))
        return await combined(request, service, body, route, scope)
    except ClientGone:
        return Response(status_code=499)  # nobody reads it: the client has gone


def approach_label(route: Route) -> str:
    """The approach a request is counted and logged under: one, or the combination as written."""
    if route.operation == "SINGLE":
        return route.approaches[0]
    return ("&" if route.operation == "AND" else "|").join(route.approaches)


async def ours(request: Request, service: Service, body: dict[str, Any], route: Route,
               scope: RequestScope) -> Response:
    """One of our approaches, answered natively (n > 1: n runs, concurrently)."""
    slug, telemetry = route.approaches[0], request.state.telemetry
    messages = _without_tags(service, body.get("messages"))
    try:
        first = prepare(slug, route.model, body, messages, service.backends(bearer(request)), service.runtime, scope,
                        telemetry.watcher())
    except PublicError as error:
        return error_from(error)
    jobs = [first, *(first.again() for _ in range(int(body.get("n") or 1) - 1))]
    reply = Reply(body.get("model") or route.model)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await start_stream(request, reply, jobs, scope, include_usage)
    try:
        outcomes = await unless_disconnected(request.receive, all_or_none(answer(job) for job in jobs))
    except PublicError as error:
        return error_from(error)
    report(telemetry, jobs, outcomes)
    traces = [_trace(job, o, scope) for job, o in zip(jobs, outcomes)] if first.plan.trace else None
    return JSONResponse(reply.completion(outcomes, traces))


def report(telemetry: RequestTelemetry, jobs: Sequence[Job], outcomes: Sequence[Outcome]) -> None:
    """What the request's log line and metrics say of its runs."""
    telemetry.summary = summary(jobs[0].recipe, outcomes, sum(job.caller.raced for job in jobs))
    if any(o.fallback for o in outcomes):
        telemetry.fell_back()


async def start_stream(request: Request, reply: Reply, jobs: Sequence[Job], scope: RequestScope,
                       include_usage: bool) -> Response:
    """Run until the answer's first piece: an error before it is an HTTP status, after it an
    error event in the stream."""
    runs = Runs(jobs)
    try:
        head, rest = await unless_disconnected(request.receive, head_of(runs))
    except BaseException as error:
        await runs.close()
        if isinstance(error, PublicError):
            return error_from(error)
        if isinstance(error, ClientGone):
            return Response(status_code=499)
        raise
    chunks = Chunks(reply, jobs, include_usage, lambda job, done: _trace(job, done, scope),
                    lambda outcomes: report(request.state.telemetry, jobs, outcomes))
    return EventStream(chunks.of(chained(head, rest)), runs.close)


def _trace(job: Job, done: Outcome, scope: RequestScope) -> dict[str, Any]:
    return trace(job.slug, job.recipe, done, scope.elapsed(), job.runtime.secrets, scope.request_id)


def refuse_bad_config(slugs: Sequence[str], model: str, body: dict[str, Any], service: Service) -> Response | None:
    """Before optillm runs a combination with our approaches: a bad configuration is a 400 now,
    not a 500 after the other approaches have run."""
    for slug in slugs:
        try:
            plan(slug, model, body, body.get("messages"), service.runtime.config)
        except ConfigError as error:
            return error_response(400, f"{slug}: {redact(str(error), service.runtime.secrets)}", param=error.field)
    return None


def _without_tags(service: Service, messages: Any) -> Any:
    """optillm's routing tags removed (malformed messages are left for validation to refuse)."""
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        return service.host.without_tags(messages)
    return messages

