"""The simulator's HTTP surface (aiohttp): OpenAI routes plus `/sim/*` introspection for tests.

Everything that waits (latency, hangs) awaits asyncio, so one process serves hundreds of
concurrent connections and stays responsive while some requests hang. Request headers are never
logged or recorded: clients send real-looking API keys.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from . import behaviour, reading
from .admin import add_admin_routes
from .generation import Choice, generate
from .logprobs import logprobs_body, pieces
from .profile import ModelProfile, Profile
from .protocol import (
    ChatRequest,
    RequestError,
    chunk_body,
    completion_body,
    parse_chat_request,
    recorded_params,
    sse,
    tool_call_deltas,
    tool_calls_body,
    unsupported_parameter,
    usage_body,
)
from .state import STATE, SimState

_CUT_PAUSE = 0.2  # seconds, unscaled: how long a cut stream's first half is left to arrive


class _NoResponse(Exception):
    """The request ends without an HTTP response (connection reset, or client gone during a hang)."""


def _http_fault(state: SimState, name: str, model: ModelProfile, seq: int) -> str | None:
    """At most one transport-level fault per call, from one draw over (seed, model, call number)."""
    u, edge = state.uniform("fault", name, seq), 0.0
    for fault in ("429", "500", "reset", "hang"):
        edge += getattr(model, f"rate_{fault}")
        if u < edge:
            return fault
    return None


async def _sleep_ms(ms: float, scale: float) -> None:
    if ms * scale > 0:
        await asyncio.sleep(ms * scale / 1000.0)


async def _hang(request: web.Request, seconds: float) -> None:
    """Wait `seconds` (unscaled), ending early, without a response, if the client goes away."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (remaining := deadline - loop.time()) > 0:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise _NoResponse("hang")
        await asyncio.sleep(min(0.05, remaining))


def _record(state: SimState) -> dict[str, Any]:
    state.seq += 1
    record: dict[str, Any] = {
        "seq": state.seq, "model": None, "n": None, "choices": 0, "status": None, "stream": False,
        "params": {}, "prompt_tokens": None, "kind": None, "candidates": 0, "messages": None,
        "fault": None, "started": time.monotonic(), "ended": None, "outputs": [], "leaks": [],
        "completion_tokens": 0, "reasoning_tokens": 0,
    }
    state.calls.append(record)
    return record


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions, with every outcome (errors included) in the call log."""
    state = request.app[STATE]
    record = _record(state)
    try:
        response = await _chat(request, state, record)
        record["status"] = response.status
        return response
    except RequestError as error:
        record["status"] = error.status
        return error.response()
    except _NoResponse as gone:
        record["fault"] = record["fault"] or str(gone)
        return web.Response(status=499)  # never delivered: the connection is already gone
    except asyncio.CancelledError:
        record["fault"] = record["fault"] or "cancelled"
        raise
    finally:
        record["ended"] = time.monotonic()


async def _chat(request: web.Request, state: SimState, record: dict[str, Any]) -> web.StreamResponse:
    raw = await request.read()
    try:
        sent = json.loads(raw)
    except ValueError:
        sent = None
    if isinstance(sent, dict):
        record.update(model=sent.get("model"), messages=sent.get("messages"), stream=bool(sent.get("stream")),
                      n=sent.get("n") or 1, params=recorded_params(sent))
    body, req = parse_chat_request(raw)
    name = req.model
    model = state.profile.models.get(name)
    if model is None:
        raise RequestError(404, f"The model `{name}` does not exist or you do not have access to it.",
                           param="model", code="model_not_found")
    for param in model.refuse_params:
        if param in body:
            raise unsupported_parameter(param)
    n = req.n or 1
    if n > 1 and model.n_mode == "refuse":
        raise RequestError(400, "n must be 1 for this model", param="n", code="unsupported_value")

    messages = [m.model_dump() for m in req.messages]
    prompt = reading.read_prompt(messages)
    tokens = behaviour.prompt_tokens(messages)
    record.update(prompt_tokens=tokens, kind=prompt.kind, candidates=len(prompt.candidates))
    if tokens > model.context_window:
        raise RequestError(400, f"This model's maximum context length is {model.context_window} tokens. "
                           f"However, your messages resulted in {tokens} tokens.",
                           param="messages", code="context_length_exceeded")

    fault = _http_fault(state, name, model, record["seq"])
    record["fault"] = fault
    if fault == "429":
        wait = f"{model.retry_after:g}"
        raise RequestError(429, f"Rate limit reached for {name}. Please try again in {wait}s.", type_="requests",
                           code="rate_limit_exceeded",
                           headers={"Retry-After": wait, "retry-after-ms": f"{model.retry_after * 1000:g}"})
    if fault == "500":
        raise RequestError(500, "The server had an error while processing your request. Sorry about that!",
                           type_="server_error")
    if fault == "reset":
        if request.transport is not None:
            request.transport.abort()
        raise _NoResponse("reset")
    if fault == "hang":
        await _hang(request, model.hang_seconds)

    choices = generate(state, model, req, messages, prompt, record["seq"])
    record["choices"] = len(choices)
    record["outputs"] = [c.output for c in choices]
    record["leaks"] = [c.leak for c in choices]
    record["completion_tokens"] = sum(c.tokens for c in choices)
    record["reasoning_tokens"] = sum(c.reasoning_tokens for c in choices)
    call_id = f"chatcmpl-sim-{record['seq']}"
    scale = state.profile.time_scale
    if req.stream:
        cut = state.uniform("stream_cut", name, record["seq"]) < model.rate_stream_cut
        record["fault"] = record["fault"] or ("stream_cut" if cut else None)
        return await _stream(request, call_id, name, choices, tokens, model, scale, req, cut)
    await _sleep_ms(model.ttft_ms + model.per_token_ms * max(c.tokens for c in choices), scale)
    body_choices = [{"index": index, "message": _message(choice), "finish_reason": choice.finish_reason,
                     "logprobs": _logprobs(choice.logprobs)} for index, choice in enumerate(choices)]
    return web.json_response(completion_body(call_id, name, body_choices, _usage(tokens, choices)))


def _usage(prompt_tokens: int, choices: list[Choice]) -> dict[str, Any]:
    """The call's usage over all its choices, the same whether it is sent whole or streamed."""
    return usage_body(prompt_tokens, sum(c.tokens for c in choices), sum(c.reasoning_tokens for c in choices))


def _message(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.content}
    if choice.calls:
        message["tool_calls"] = tool_calls_body(choice.calls, choice.call_ids)
    if choice.reasoning is not None:
        message["reasoning_content"] = choice.reasoning
    return message


def _logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return None if entries is None else logprobs_body(entries)


def _deltas(choice: Choice) -> list[tuple[dict[str, Any], dict[str, Any] | None, str]]:
    """A choice's stream after its role chunk: (delta, its logprobs, the text it carries) per chunk.

    Text goes in the pieces its logprob tokens cover, so each content chunk carries its own entry.
    """
    if choice.calls:
        return [(delta, None, text) for delta, text in tool_call_deltas(choice.calls, choice.call_ids)]
    entries = choice.logprobs
    return [({"content": part}, None if entries is None else logprobs_body([entries[i]]), part)
            for i, part in enumerate(pieces(choice.content or ""))]


async def _stream(request: web.Request, call_id: str, name: str, choices: list[Choice], prompt_tokens: int,
                  model: ModelProfile, scale: float, req: ChatRequest, cut: bool = False) -> web.StreamResponse:
    """Server-sent events: role, reasoning, content or tool-call pieces (per-token latency between), finish,
    usage if asked, [DONE]. A `cut` stream drops its connection after half of its pieces."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    await _sleep_ms(model.ttft_ms, scale)

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None,
              logprobs: dict[str, Any] | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        return sse(chunk_body(call_id, name, [choice]))

    for index, choice in enumerate(choices):
        await response.write(chunk(index, {"role": "assistant", "content": None if choice.calls else ""}))
        if choice.reasoning is not None:
            await response.write(chunk(index, {"reasoning_content": choice.reasoning}))
    streams = [_deltas(c) for c in choices]
    steps = max(len(s) for s in streams)
    for step in range(steps):
        if cut and step == steps // 2:
            # the half answer must reach the client before the connection goes: a client library
            # may drop the bytes it has not read yet once the connection is lost
            await asyncio.sleep(_CUT_PAUSE)
            if request.transport is not None:
                request.transport.close()
            raise _NoResponse("stream_cut")
        step_tokens = 0
        for index, deltas in enumerate(streams):
            if step < len(deltas):
                delta, logprobs, text = deltas[step]
                await response.write(chunk(index, delta, logprobs=logprobs))
                step_tokens = max(step_tokens, behaviour.estimate_tokens(text))
        await _sleep_ms(model.per_token_ms * step_tokens, scale)
    for index, choice in enumerate(choices):
        await response.write(chunk(index, {}, choice.finish_reason))
    if (req.stream_options or {}).get("include_usage"):
        await response.write(sse(chunk_body(call_id, name, [], _usage(prompt_tokens, choices))))
    await response.write(sse("[DONE]"))
    await response.write_eof()
    return response


async def list_models(request: web.Request) -> web.Response:
    names = request.app[STATE].profile.models
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "selfmoa-sim"} for n in names]
    return web.json_response({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@web.middleware
async def openai_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown routes and methods answer in OpenAI's error shape too."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return RequestError(exc.status, f"{exc.reason}: {request.method} {request.path}",
                            code=exc.reason.lower().replace(" ", "_")).response()


def build_app(profile: Profile, seed: int = 0) -> web.Application:
    """The simulator as an aiohttp application; `seed` is mixed with the profile's own seed."""
    app = web.Application(middlewares=[openai_errors], client_max_size=64 * 1024 * 1024)
    app[STATE] = SimState(profile=profile, seed=seed)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    add_admin_routes(app)
    return app
