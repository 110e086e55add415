"""The OpenAI wire format the simulator speaks: request validation, error and response bodies.

Clients (the openai SDK, optillm, our approaches) react to the *shape* of errors (status, `code`,
`param`), so errors are OpenAI-shaped and a bad field is named in both `param` and the message.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SAMPLING_FIELDS = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "response_format", "n",
)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


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

    @property
    def token_limit(self) -> int | None:
        limits = [v for v in (self.max_tokens, self.max_completion_tokens) if v is not None]
        return min(limits) if limits else None


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


def parse_chat_request(raw: bytes) -> tuple[dict[str, Any], ChatRequest]:
    """The body as sent and as validated; RequestError(400) naming the first bad field."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(body, dict):
        raise RequestError(400, "The request body must be a JSON object.")
    try:
        return body, ChatRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"])
        raise RequestError(400, f"Invalid value for '{param}': {first['msg']}", param=param,
                           code="missing_required_parameter" if first["type"] == "missing" else "invalid_value",
                           ) from exc


def unsupported_parameter(param: str) -> RequestError:
    message = f"Unsupported parameter: '{param}' is not supported with this model."
    if param == "max_tokens":
        message += " Use 'max_completion_tokens' instead."
    return RequestError(400, message, param=param, code="unsupported_parameter")


def completion_body(call_id: str, model: str, choices: list[dict[str, Any]], prompt_tokens: int,
                    completion_tokens: int) -> dict[str, Any]:
    """A `chat.completion` object."""
    return {
        "id": call_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "selfmoa-sim",
    }


def chunk_body(
    call_id: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """A `chat.completion.chunk` object (one server-sent event)."""
    body: dict[str, Any] = {"id": call_id, "object": "chat.completion.chunk", "created": int(time.time()),
                            "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"data: {payload}\n\n".encode()
