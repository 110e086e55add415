"""The simulator's HTTP surface (aiohttp): OpenAI routes plus `/sim/*` introspection for tests.

Everything that waits (latency, hangs) awaits asyncio, so one process serves hundreds of
concurrent connections and stays responsive while some requests hang. Request headers are never
logged or recorded: clients send real-looking API keys.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import behaviour
from .admin import add_admin_routes
from .profile import ModelProfile, Profile
from .protocol import (
    SAMPLING_FIELDS,
    ChatRequest,
    RequestError,
    chunk_body,
    completion_body,
    parse_chat_request,
    sse,
    unsupported_parameter,
)
from .state import STATE, SimState


class _NoResponse(Exception):
    """The request ends without an HTTP response (connection reset, or client gone during a hang)."""


@dataclass
class _Choice:
    content: str
    reasoning: str | None
    finish_reason: str
    tokens: int


def _http_fault(state: SimState, name: str, model: ModelProfile, seq: int) -> str | None:
    """At most one transport-level fault per call, from one draw over (seed, model, call number)."""
    u, edge = state.uniform("fault", name, seq), 0.0
    for fault in ("429", "500", "reset", "hang"):
        edge += getattr(model, f"rate_{fault}")
        if u < edge:
            return fault
    return None


def _content_fault(state: SimState, name: str, model: ModelProfile, seq: int, index: int) -> str | None:
    """Truncated/empty is drawn per choice, so one bad sample in an n-call leaves the others usable."""
    u = state.uniform("content", name, seq, index)
    if u < model.rate_truncated:
        return "truncated"
    return "empty" if u < model.rate_truncated + model.rate_empty else None


def _make_choice(messages: list[dict[str, Any]], reading: behaviour.Reading, model: ModelProfile,
                 req: ChatRequest, rng: random.Random, fault: str | None) -> _Choice:
    """One choice: the reply, its reasoning, then faults, `stop` and the token limit, in that order."""
    text = behaviour.reply(messages, reading, model, rng)
    reasoning = behaviour.reasoning_text(messages, rng) if model.reasoning != "none" else None
    if model.reasoning == "think_tags":
        text, reasoning = f"<think>\n{reasoning}\n</think>\n\n{text}", None
    finish = "stop"
    if fault == "truncated":
        text, finish = behaviour.truncate(text), "length"
    elif fault == "empty":
        text = ""
    text, cut = behaviour.clip_tokens(behaviour.apply_stop(text, req.stop), req.token_limit)
    finish = "length" if cut else finish
    tokens = behaviour.estimate_tokens(text) + behaviour.estimate_tokens(reasoning or "")
    return _Choice(text, reasoning, finish, tokens)


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
        "fault": None, "started": time.monotonic(), "ended": None, "outputs": [], "completion_tokens": 0,
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
                      n=sent.get("n") or 1, params={k: sent[k] for k in SAMPLING_FIELDS if k in sent})
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
    reading = behaviour.read_prompt(messages)
    tokens = behaviour.prompt_tokens(messages)
    record.update(prompt_tokens=tokens, kind=reading.kind, candidates=len(reading.candidates))
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

    count = {"honour": n, "refuse": n, "cap": min(n, model.max_n), "ignore": 1}[model.n_mode]
    prompt_key = json.dumps(messages, sort_keys=True)
    choices = []
    for index in range(count):
        sample = state.next_sample(name, prompt_key, greedy=req.temperature == 0)
        rng = behaviour.draw(state.profile.seed, state.seed, name, prompt_key, sample)
        choices.append(_make_choice(messages, reading, model, req, rng,
                                    _content_fault(state, name, model, record["seq"], index)))
    record["choices"] = len(choices)
    record["outputs"] = [c.content for c in choices]
    record["completion_tokens"] = sum(c.tokens for c in choices)
    call_id = f"chatcmpl-sim-{record['seq']}"
    scale = state.profile.time_scale
    if req.stream:
        return await _stream(request, call_id, name, choices, tokens, model, scale, req)
    await _sleep_ms(model.ttft_ms + model.per_token_ms * max(c.tokens for c in choices), scale)
    body_choices = []
    for index, choice in enumerate(choices):
        message: dict[str, Any] = {"role": "assistant", "content": choice.content}
        if choice.reasoning is not None:
            message["reasoning_content"] = choice.reasoning
        body_choices.append({"index": index, "message": message, "finish_reason": choice.finish_reason,
                             "logprobs": None})
    completion = sum(c.tokens for c in choices)
    return web.json_response(completion_body(call_id, name, body_choices, tokens, completion))


async def _stream(request: web.Request, call_id: str, name: str, choices: list[_Choice], prompt_tokens: int,
                  model: ModelProfile, scale: float, req: ChatRequest) -> web.StreamResponse:
    """Server-sent events: role, reasoning, content pieces (per-token latency between), finish, [DONE]."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    await _sleep_ms(model.ttft_ms, scale)

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return sse(chunk_body(call_id, name, [choice]))

    for index, choice in enumerate(choices):
        await response.write(chunk(index, {"role": "assistant", "content": ""}))
        if choice.reasoning is not None:
            await response.write(chunk(index, {"reasoning_content": choice.reasoning}))
    pieces = [re.findall(r"\s*\S+\s*|\s+", c.content) for c in choices]
    for step in range(max(len(p) for p in pieces)):
        step_tokens = 0
        for index, parts in enumerate(pieces):
            if step < len(parts):
                await response.write(chunk(index, {"content": parts[step]}))
                step_tokens = max(step_tokens, behaviour.estimate_tokens(parts[step]))
        await _sleep_ms(model.per_token_ms * step_tokens, scale)
    for index, choice in enumerate(choices):
        await response.write(chunk(index, {}, choice.finish_reason))
    if (req.stream_options or {}).get("include_usage"):
        completion = sum(c.tokens for c in choices)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                 "total_tokens": prompt_tokens + completion}
        await response.write(sse(chunk_body(call_id, name, [], usage)))
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
