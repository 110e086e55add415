"""The simulator's HTTP surface (aiohttp): OpenAI routes plus `/sim/*` introspection for tests.

Everything that waits (latency, hangs) awaits asyncio, so one process serves hundreds of
concurrent connections and stays responsive while some requests hang. Request headers are never
logged or recorded: clients send real-looking API keys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import behaviour, tools
from .admin import add_admin_routes
from .logprobs import content_logprobs, logprobs_body, pieces
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
    tool_call_id,
    tool_calls_body,
    unsupported_parameter,
)
from .state import STATE, SimState


class _NoResponse(Exception):
    """The request ends without an HTTP response (connection reset, or client gone during a hang)."""


@dataclass
class _Choice:
    """One generated choice: text, or tool calls (then `content` is None), before it goes on the wire."""

    content: str | None
    reasoning: str | None
    finish_reason: str
    tokens: int
    calls: list[tools.ToolCall] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None
    """`logprobs.content` when the request asked for logprobs."""

    @property
    def output(self) -> str:
        """What the call log shows: the text, or one `[tool call] name(arguments)` line per call."""
        return self.content if self.content is not None else "\n".join(c.line() for c in self.calls)


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


def _call_choice(calls: list[tools.ToolCall], messages: list[dict[str, Any]], model: ModelProfile,
                 rng: random.Random) -> _Choice:
    """A tool-call choice. Its reasoning travels only as a field: its content must stay null."""
    reasoning = behaviour.reasoning_text(messages, rng) if model.reasoning == "field" else None
    tokens = sum(behaviour.estimate_tokens(c.name + c.arguments) for c in calls)
    return _Choice(None, reasoning, "tool_calls", tokens + behaviour.estimate_tokens(reasoning or ""), calls)


def _make_choice(messages: list[dict[str, Any]], reading: behaviour.Reading, model: ModelProfile,
                 req: ChatRequest, rng: random.Random, fault: str | None) -> _Choice:
    """One choice: tool calls if the model makes any; else the reply, its reasoning, then faults, `stop`
    and the token limit, in that order."""
    calls = tools.plan(messages, reading, req.tool_request)
    if calls:
        return _call_choice(calls, messages, model, rng)
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


def _annotate(choice: _Choice, seq: int, index: int, top: int | None, rng: random.Random) -> _Choice:
    """Wire details that leave what the model wrote unchanged: tool call ids and made-up logprobs."""
    ids = [tool_call_id(seq, index, k) for k in range(len(choice.calls))]
    logprobs = None if top is None else content_logprobs(choice.content or "", top, rng)
    return dataclasses.replace(choice, call_ids=ids, logprobs=logprobs)


def _generate(state: SimState, model: ModelProfile, req: ChatRequest, messages: list[dict[str, Any]],
              reading: behaviour.Reading, seq: int) -> list[_Choice]:
    """The choices of one call, each from its own sample number of this (model, prompt)."""
    n = req.n or 1
    count = {"honour": n, "refuse": n, "cap": min(n, model.max_n), "ignore": 1}[model.n_mode]
    prompt_key = json.dumps(messages, sort_keys=True)
    choices = []
    for index in range(count):
        sample = state.next_sample(req.model, prompt_key, greedy=req.temperature == 0)
        key = (state.profile.seed, state.seed, req.model, prompt_key, sample)
        fault = _content_fault(state, req.model, model, seq, index)
        choice = _make_choice(messages, reading, model, req, behaviour.draw(*key), fault)
        choices.append(_annotate(choice, seq, index, req.top, behaviour.draw(*key, "logprobs")))
    return choices


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

    choices = _generate(state, model, req, messages, reading, record["seq"])
    record["choices"] = len(choices)
    record["outputs"] = [c.output for c in choices]
    record["completion_tokens"] = sum(c.tokens for c in choices)
    call_id = f"chatcmpl-sim-{record['seq']}"
    scale = state.profile.time_scale
    if req.stream:
        cut = state.uniform("stream_cut", name, record["seq"]) < model.rate_stream_cut
        record["fault"] = record["fault"] or ("stream_cut" if cut else None)
        return await _stream(request, call_id, name, choices, tokens, model, scale, req, cut)
    await _sleep_ms(model.ttft_ms + model.per_token_ms * max(c.tokens for c in choices), scale)
    body_choices = [{"index": index, "message": _message(choice), "finish_reason": choice.finish_reason,
                     "logprobs": _logprobs(choice.logprobs)} for index, choice in enumerate(choices)]
    completion = sum(c.tokens for c in choices)
    return web.json_response(completion_body(call_id, name, body_choices, tokens, completion))


def _message(choice: _Choice) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.content}
    if choice.calls:
        message["tool_calls"] = tool_calls_body(choice.calls, choice.call_ids)
    if choice.reasoning is not None:
        message["reasoning_content"] = choice.reasoning
    return message


def _logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return None if entries is None else logprobs_body(entries)


def _deltas(choice: _Choice) -> list[tuple[dict[str, Any], dict[str, Any] | None, str]]:
    """A choice's stream after its role chunk: (delta, its logprobs, the text it carries) per chunk.

    Text goes in the pieces its logprob tokens cover, so each content chunk carries its own entry.
    """
    if choice.calls:
        return [(delta, None, text) for delta, text in tool_call_deltas(choice.calls, choice.call_ids)]
    entries = choice.logprobs
    return [({"content": part}, None if entries is None else logprobs_body([entries[i]]), part)
            for i, part in enumerate(pieces(choice.content or ""))]


async def _stream(request: web.Request, call_id: str, name: str, choices: list[_Choice], prompt_tokens: int,
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
            if request.transport is not None:
                request.transport.abort()
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
