"""The OpenAI wire format the simulator speaks: request validation, error and response bodies.

Clients (the openai SDK, optillm, our approaches) react to the *shape* of errors (status, `code`,
`param`), so errors are OpenAI-shaped and a bad field is named in both `param` and the message.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .formats import FormatError, OutputFormat, parse_format
from .logprobs import MAX_TOP_LOGPROBS
from .tools import ToolCall, ToolRequest

SAMPLING_FIELDS = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "response_format", "n",
)
OPTION_FIELDS = ("tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs", "cache_prompt", "prompt_cache_key")
"""Recorded in the call log as sent, next to SAMPLING_FIELDS; `tools` is recorded as its function names."""


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(BaseModel):
    """One entry of `tools`: only function tools exist in Chat Completions."""

    type: Literal["function"]
    function: FunctionSpec


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: FunctionName


class ChatRequest(BaseModel):
    """The fields the simulator reads; anything else in the body is accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    n: int | None = Field(None, ge=1, le=128)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[ToolSpec] | None = Field(None, min_length=1)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    # strict: "yes" is not a boolean nor "2" a number to OpenAI, whatever pydantic would coerce
    parallel_tool_calls: bool | None = Field(None, strict=True)
    logprobs: bool | None = Field(None, strict=True)
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, strict=True)

    @property
    def token_limit(self) -> int | None:
        limits = [v for v in (self.max_tokens, self.max_completion_tokens) if v is not None]
        return min(limits) if limits else None

    @property
    def tool_request(self) -> ToolRequest:
        """The tools part of the request, as the pure behaviour reads it."""
        functions: dict[str, dict[str, Any]] = {}
        for tool in self.tools or []:
            functions.setdefault(tool.function.name, tool.function.parameters or {})
        parallel = self.parallel_tool_calls is not False
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice):
            return ToolRequest(functions, "named", choice.function.name, parallel)
        return ToolRequest(functions, choice or "auto", None, parallel)

    @property
    def output_format(self) -> OutputFormat:
        """What the content must be (`response_format`); checked when the request was parsed."""
        return parse_format(self.response_format)

    @property
    def top(self) -> int | None:
        """How many `top_logprobs` per token, or None when no logprobs were asked for."""
        return (self.top_logprobs or 0) if self.logprobs else None


class RequestError(Exception):
    """An OpenAI-shaped error response, raised anywhere while handling a request."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return web.json_response(body, status=self.status, headers=self.headers)


def _param(loc: Sequence[int | str]) -> str:
    """A pydantic error location as OpenAI names a field: `tools[0].function.name`.

    Pydantic puts union member tags ("str", "NamedToolChoice", "literal[...]") into the location;
    they are not fields, so they are left out.
    """
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not (part[:1].isupper() or "[" in part or part in ("str", "int", "float", "bool")):
            param += f".{part}" if param else part
    return param


def _check_combinations(req: ChatRequest) -> None:
    """Fields valid alone but not together, refused as OpenAI refuses them."""
    if req.top_logprobs is not None and not req.logprobs:
        raise RequestError(400, "Invalid value for 'top_logprobs': 'top_logprobs' requires 'logprobs' to be true.",
                           param="top_logprobs", code="invalid_value")
    try:
        parse_format(req.response_format)
    except FormatError as exc:
        raise RequestError(400, exc.message, param=exc.param, code=exc.code) from exc
    request = req.tool_request
    if req.tool_choice not in (None, "none", "auto") and not request.functions:
        raise RequestError(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                           "specified.", param="tool_choice", code="invalid_value")
    if request.named is not None and request.named not in request.functions:
        raise RequestError(400, f"Invalid value for 'tool_choice': no function named '{request.named}' in 'tools'.",
                           param="tool_choice", code="invalid_value")


def recorded_params(sent: dict[str, Any]) -> dict[str, Any]:
    """What the call log keeps of a body's options: sampling and tool/logprob fields as sent, tool names."""
    params = {k: sent[k] for k in (*SAMPLING_FIELDS, *OPTION_FIELDS) if k in sent}
    tools = sent.get("tools")
    if isinstance(tools, list) and all(isinstance(t, dict) and isinstance(t.get("function"), dict) for t in tools):
        params["tools"] = [t["function"].get("name") for t in tools]
    elif "tools" in sent:
        params["tools"] = tools
    return params


def parse_chat_request(raw: bytes) -> tuple[dict[str, Any], ChatRequest]:
    """The body as sent and as validated; RequestError(400) naming the first bad field."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    try:
        req = ChatRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _param(first["loc"])
        raise RequestError(400, f"Invalid value for '{param}': {first['msg']}", param=param,
                           code="missing_required_parameter" if first["type"] == "missing" else "invalid_value",
                           ) from exc
    _check_combinations(req)
    return body, req


def unsupported_parameter(param: str) -> RequestError:
    message = f"Unsupported parameter: '{param}' is not supported with this model."
    if param == "max_tokens":
        message += " Use 'max_completion_tokens' instead."
    return RequestError(400, message, param=param, code="unsupported_parameter")


def usage_body(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> dict[str, Any]:
    """A reply's `usage`, whole or in a stream's last chunk. `completion_tokens_details.reasoning_tokens`
    is there for every model (0 without reasoning), as OpenAI and vLLM send it: clients such as
    optillm's own tests read it, and the reasoning is part of `completion_tokens`, not added to it."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }


def completion_body(call_id: str, model: str, choices: list[dict[str, Any]],
                    usage: dict[str, Any]) -> dict[str, Any]:
    """A `chat.completion` object."""
    return {
        "id": call_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": "selfmoa-sim",
    }


def chunk_body(
    call_id: str, model: str, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A `chat.completion.chunk` object (one server-sent event)."""
    body: dict[str, Any] = {"id": call_id, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def tool_call_id(seq: int, index: int, k: int) -> str:
    """Unique per call log entry (`seq`), choice and call, so a test can tell every call apart."""
    return f"call_sim_{seq}_{index}_{k}"


def tool_calls_body(calls: Sequence[ToolCall], ids: Sequence[str]) -> list[dict[str, Any]]:
    """A message's `tool_calls` list."""
    return [{"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call, call_id in zip(calls, ids)]


def _split(text: str, parts: int = 3) -> list[str]:
    size = max(1, math.ceil(len(text) / parts))
    return [text[i:i + size] for i in range(0, len(text), size)]


def tool_call_deltas(calls: Sequence[ToolCall], ids: Sequence[str]) -> list[tuple[dict[str, Any], str]]:
    """Streamed tool calls as OpenAI sends them, each delta with the text it carries: per call a
    header (index, id, name, empty arguments), then the arguments JSON in a few pieces."""
    deltas: list[tuple[dict[str, Any], str]] = []
    for k, (call, call_id) in enumerate(zip(calls, ids)):
        head = {"index": k, "id": call_id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        deltas.append(({"tool_calls": [head]}, call.name))
        deltas += [({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}, piece)
                   for piece in _split(call.arguments)]
    return deltas


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"data: {payload}\n\n".encode()
