"""A backend's failure as one of our errors: transient (worth retrying) or final, with its status,
code and message kept. From an HTTP status and body (`from_status`, what the wire adapter sees)
or from a client library's exception (`classify`: openai, httpx, aiohttp, timeouts)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx
import openai

from .backend import ADAPTABLE, CACHE_HINTS
from .errors import BackendError, ContextTooLong, ParameterRefused, SelfMoAError, TransientError

_CONTEXT_HINTS = ("context_length", "context length", "context size", "context window", "maximum context")
TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def error_fields(body: Any, fallback: str) -> tuple[str, str | None, str | None]:
    """(message, param, code) of an error body, OpenAI-shaped or not."""
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]
    if isinstance(body, Mapping):
        message = str(body.get("message") or body.get("error") or fallback)
        code = body.get("code") or body.get("type")
        param = body.get("param")
        return message, param if isinstance(param, str) else None, str(code) if code is not None else None
    if isinstance(body, str) and body.strip():
        return body.strip()[:500], None, None
    return fallback, None, None


def from_status(model: str, status: int, body: Any, *, retry_after: str | None = None) -> SelfMoAError:
    """The error a backend's HTTP status and error body stand for."""
    message, param, code = error_fields(body, f"HTTP {status}")
    if status in TRANSIENT_STATUS:
        return TransientError(model, message, status=status, code=code, retry_after=seconds(retry_after))
    lowered = f"{code or ''} {message}".lower()
    if any(hint in lowered for hint in _CONTEXT_HINTS):
        return ContextTooLong(model, message, status=status, code=code)
    if status in (400, 422):
        refused = param if param in ADAPTABLE else _param_named_in(message)
        if refused:
            return ParameterRefused(model, message, param=refused, status=status, code=code)
    return BackendError(model, message, status=status, code=code)


def classify(model: str, error: BaseException) -> SelfMoAError:
    """A client library's exception as one of ours."""
    if isinstance(error, SelfMoAError):
        return error
    if isinstance(error, openai.APIStatusError):
        retry_after = error.response.headers.get("retry-after") if error.response is not None else None
        return from_status(model, error.status_code, error.body, retry_after=retry_after)
    if isinstance(error, (openai.APITimeoutError, httpx.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return TransientError(model, "timed out", timed_out=True)
    if isinstance(error, (openai.APIConnectionError, httpx.TransportError, aiohttp.ClientError, ConnectionError)):
        return TransientError(model, f"connection error ({error.__cause__ or error})")
    if isinstance(error, openai.APIError):  # an error event inside a stream
        return BackendError(model, error.message)
    status = getattr(error, "status_code", None)  # LiteLLM's exceptions carry the provider's status
    if isinstance(status, int) and status >= 400:
        return from_status(model, status, getattr(error, "message", None) or str(error))
    return BackendError(model, f"{type(error).__name__}: {error}")


def seconds(value: str | None) -> float | None:
    """A Retry-After header in seconds (its HTTP-date form is not used by model servers)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _param_named_in(message: str) -> str | None:
    for param in ADAPTABLE:
        if re.search(rf"['\"`]{param}['\"`]|\b{param} (must|is not|not supported)|argument supplied: {param}\b",
                     message):
            return param
    # a cache hint is ours and its name unmistakable: a client error that mentions it is about it
    return next((hint for hint in CACHE_HINTS if re.search(rf"\b{hint}\b", message)), None)
