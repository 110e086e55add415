"""`selfmoa serve`'s own route. A chat request that optillm's routing sends to exactly one of our
approaches is answered here, as a complete OpenAI reply: full usage, the final call's finish
reason and logprobs, tool calls, true streaming. Everything else (optillm's approaches, `&`/`|`
combinations) goes on to optillm's `proxy()`, with `moa` kept from backends and errors reshaped.
"""

from __future__ import annotations

import functools
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import openai
from flask import Response, current_app, jsonify, request

from selfmoa.approaches import AnswerDelta, Done, Event, OpenAIBackend, Outcome, SelfMoAError
from selfmoa.approaches.backend import close, error_fields

from .answering import Job, PublicError, events, outcome, prepare
from .config import SLUGS, plan
from .host import Optillm, Route
from .replies import Reply, delta_body, error_body, error_headers, finish_reason, sse, trace, usage_body
from .runtime import current_runtime, redact
from .scope import ARRIVED, RequestScope, current_scope, open_scope
from .validation import ConfigError

CHAT_PATH = "/v1/chat/completions"
ROUTING_FIELDS = ("model", "optillm_approach")  # read before we know which approach a request is for


def install(host: Optillm) -> None:
    """Our route and error shapes on optillm's app."""
    app = host.app
    host.stamp_arrivals(ARRIVED)
    app.before_request(functools.partial(before_chat, host))
    app.after_request(openai_shaped)
    for status in (404, 405):
        app.register_error_handler(status, http_error)
    host.wrap_view("proxy", with_error_status)
    host.wrap_view("proxy_models", with_approach_models)
    host.on_upstream_error(note_upstream_error)


def before_chat(host: Optillm) -> Any:
    """Chat requests: ours are answered here; optillm's get a checked body."""

    if request.method != "POST" or request.path != CHAT_PATH:
        return None
    scope = open_scope()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error_response(400, "the request body must be a JSON object")
    for name in ROUTING_FIELDS:  # optillm would fail on these with an HTML 500
        if name in body and not isinstance(body[name], str):
            return error_response(400, f"{name}: must be a string", param=name)
    route = host.route(body)
    ours = [a for a in route.approaches if a in SLUGS]
    if not ours:
        body.pop("moa", None)  # optillm would pass it on to the backend as a parameter
        return None
    if route.operation == "SINGLE":
        return answer(host, body, route, scope)
    return refuse_bad_config(ours, route.model, body)


def answer(host: Optillm, body: dict[str, Any], route: Route, scope: RequestScope) -> Any:
    """One of our approaches, answered natively (n > 1: n runs, concurrently)."""
    runtime = current_runtime()
    slug, messages = route.approaches[0], body.get("messages")
    backend = OpenAIBackend(host.upstream_client(_bearer(request.headers.get("Authorization"))))
    try:
        first = prepare(slug, route.model, body, _without_tags(host, messages), backend, runtime, scope)
    except PublicError as error:
        return error_from(error)
    jobs = [first, *(first.again() for _ in range(int(body.get("n") or 1) - 1))]
    reply = Reply(body.get("model") or route.model)
    if body.get("stream"):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return start_stream(reply, jobs, scope, include_usage)
    try:
        outcomes = run_all(jobs)
    except PublicError as error:
        return error_from(error)
    traces = [_trace(job, o, scope) for job, o in zip(jobs, outcomes)] if first.plan.trace else None
    return jsonify(reply.completion(outcomes, traces))


def run_all(jobs: Sequence[Job]) -> list[Outcome]:
    """Every run's outcome; when one fails, the request fails at once and the others stop."""
    if len(jobs) == 1:
        return [outcome(jobs[0])]
    pool = ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="selfmoa-n")
    try:
        return list(pool.map(outcome, jobs))
    finally:
        jobs[0].stop.set()
        pool.shutdown(wait=False)


# --- streaming -------------------------------------------------------------------------------

@dataclass
class _Stream:
    reply: Reply
    jobs: Sequence[Job]
    scope: RequestScope
    include_usage: bool


def start_stream(reply: Reply, jobs: Sequence[Job], scope: RequestScope, include_usage: bool) -> Any:
    """Run until the answer's first piece: an error before it is an HTTP status, after it an
    error event in the stream."""
    merged = merge(jobs)
    head: list[tuple[int, Event]] = []
    try:
        for item in merged:
            head.append(item)
            if isinstance(item[1], (AnswerDelta, Done)):
                break
    except PublicError as error:
        return error_from(error)
    stream = _Stream(reply, jobs, scope, include_usage)
    return Response(sse_events(stream, itertools.chain(head, merged), merged), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def sse_events(stream: _Stream, items: Iterator[tuple[int, Event]], source: Iterator[Any]) -> Iterator[str]:
    started: set[int] = set()
    outcomes: dict[int, Outcome] = {}
    usage_slot = {"usage": None} if stream.include_usage else {}
    try:
        for index, event in items:
            if isinstance(event, AnswerDelta):
                delta = delta_body(event.delta, first=index not in started)
                if delta is not None:
                    started.add(index)
                    yield stream.reply.chunk([{"index": index, "delta": delta, "finish_reason": None,
                                               "logprobs": event.delta.logprobs}], **usage_slot)
            elif isinstance(event, Done):
                outcomes[index] = event.outcome
                yield _finish_chunk(stream, index, event.outcome, index in started, usage_slot)
        if stream.include_usage:
            yield stream.reply.chunk([], usage=usage_body(o.usage for o in outcomes.values()))
        yield sse("[DONE]")
    except SelfMoAError as error:
        status = error.status if isinstance(error, PublicError) else 502
        yield sse(error_body(status, str(error), code=error.code))
    finally:
        close(source)


def _finish_chunk(stream: _Stream, index: int, done: Outcome, started: bool, usage_slot: dict[str, Any]) -> str:
    delta = {} if started else {"role": "assistant", "content": ""}
    extra = dict(usage_slot)
    job = stream.jobs[index]
    if job.plan.trace:
        extra["selfmoa"] = _trace(job, done, stream.scope)
    return stream.reply.chunk([{"index": index, "delta": delta, "finish_reason": finish_reason(done.answer),
                                "logprobs": None}], **extra)


_END = object()


def merge(jobs: Sequence[Job]) -> Iterator[tuple[int, Event]]:
    """The streamed events of every job, as they come, tagged with the job's choice index."""
    if len(jobs) == 1:
        yield from ((0, event) for event in events(jobs[0], stream=True))
        return
    inbox: queue.Queue[tuple[int, Any]] = queue.Queue()
    stop = threading.Event()

    def pump(index: int, job: Job) -> None:
        run = events(job, stream=True)
        try:
            for event in run:
                if stop.is_set():
                    break
                inbox.put((index, event))
        except SelfMoAError as error:
            inbox.put((index, error))
        finally:
            run.close()
            inbox.put((index, _END))

    for index, job in enumerate(jobs):
        threading.Thread(target=pump, args=(index, job), name="selfmoa-n", daemon=True).start()
    ended = 0
    try:
        while ended < len(jobs):
            index, item = inbox.get()
            if item is _END:
                ended += 1
            elif isinstance(item, SelfMoAError):
                raise item
            else:
                yield index, item
    finally:
        stop.set()
        jobs[0].stop.set()  # ended, failed or abandoned by the client: no run goes on calling


def _trace(job: Job, done: Outcome, scope: RequestScope) -> dict[str, Any]:
    return trace(job.slug, job.recipe, done, time.monotonic() - scope.arrived, job.runtime.secrets)


# --- optillm's route -------------------------------------------------------------------------

def refuse_bad_config(slugs: Sequence[str], model: str, body: dict[str, Any]) -> Any:
    """Before optillm runs a combination with our approaches: a bad configuration is a 400 now,
    not a 500 after the other approaches have run."""
    runtime = current_runtime()
    for slug in slugs:
        try:
            plan(slug, model, body, body.get("messages"), runtime.config)
        except ConfigError as error:
            return error_response(400, f"{slug}: {redact(str(error), runtime.secrets)}", param=error.field)
    return None


def with_error_status(view: Callable[..., Any]) -> Callable[..., Any]:
    """optillm answers every plugin exception with 500; answer ours with the status they carry."""

    @functools.wraps(view)
    def proxied(*args: Any, **kwargs: Any) -> Any:
        scope = current_scope()
        try:
            response = current_app.make_response(view(*args, **kwargs))
        finally:
            if scope is not None:  # answered, or a branch of a `|` failed: no branch goes on calling
                scope.stop.set()
        if scope is not None and scope.errors and response.status_code == 500:
            return error_from(scope.errors[-1])
        return response

    return proxied


def note_upstream_error(error: Exception) -> None:
    scope = current_scope()
    if scope is not None:
        scope.upstream_error = error


def openai_shaped(response: Any) -> Any:
    """optillm's `{"error": "<text>"}` bodies as OpenAI's error shape (the SDKs show only the status
    otherwise), with the backend's own status where optillm's pass-through call failed."""
    if response.status_code < 400 or not response.is_json:
        return response
    data = response.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return response
    status, message, code = response.status_code, data["error"], None
    scope = current_scope()
    upstream = scope.upstream_error if scope is not None else None
    if isinstance(upstream, openai.APIStatusError):
        status = upstream.status_code if upstream.status_code < 500 else 502
        message, _, code = error_fields(upstream)
    message = redact(message, current_runtime().secrets)
    shaped = error_response(status, message, code=code)
    shaped.headers.update({k: v for k, v in response.headers.items() if k.lower() == "www-authenticate"})
    return shaped


def http_error(error: Any) -> Any:

    return error_response(error.code, f"{error.name}: {request.method} {request.path}",
                          code=error.name.lower().replace(" ", "_"))


def with_approach_models(view: Callable[..., Any]) -> Callable[..., Any]:
    """`/v1/models` lists each backend model's approach names too, so model pickers offer them."""

    @functools.wraps(view)
    def listed(*args: Any, **kwargs: Any) -> Any:
        response = current_app.make_response(view(*args, **kwargs))
        data = response.get_json(silent=True) if response.status_code == 200 else None
        if not current_runtime().config.list_approaches or not isinstance(data, dict):
            return response
        models = [m for m in data.get("data") or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
        known = {m["id"] for m in models}
        extra = [{"id": f"{slug}-{m['id']}", "object": "model", "created": m.get("created") or 0,
                  "owned_by": "selfmoa"} for m in models for slug in SLUGS if f"{slug}-{m['id']}" not in known]
        return jsonify({**data, "data": [*data.get("data", []), *extra]})

    return listed


# --- helpers ---------------------------------------------------------------------------------

def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   retry_after: float | None = None) -> Any:
    """An OpenAI-shaped error, so clients raise the right exception with our message."""

    response = jsonify(error_body(status, message, param=param, code=code))
    response.status_code = status
    response.headers.update(error_headers(status, retry_after))
    return response


def error_from(error: SelfMoAError) -> Any:
    return error_response(error.status, str(error), param=getattr(error, "param", None), code=error.code,
                          retry_after=error.retry_after)


def _bearer(header: str | None) -> str | None:
    return header.split("Bearer ", 1)[1].strip() if header and header.startswith("Bearer ") else None


def _without_tags(host: Optillm, messages: Any) -> Any:
    """optillm's routing tags removed (malformed messages are left for validation to refuse)."""
    if isinstance(messages, list) and all(isinstance(m, dict) for m in messages):
        return host.without_tags(messages)
    return messages
