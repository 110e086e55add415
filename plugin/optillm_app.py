"""optillm's own Flask app, as `selfmoa serve` mounts it for the requests it does not answer
itself (its other routes): its errors in the OpenAI shape, keys redacted, never an HTML page."""

from __future__ import annotations

import functools
from typing import Any

from flask import Flask, jsonify, request

from .replies import error_body, error_headers
from .runtime import Runtime, redact


def install(app: Flask, runtime: Runtime) -> None:
    app.after_request(functools.partial(openai_shaped, runtime))
    for status in (404, 405):
        app.register_error_handler(status, http_error)
    app.register_error_handler(Exception, functools.partial(crashed, runtime))


def openai_shaped(runtime: Runtime, response: Any) -> Any:
    """optillm's `{"error": "<text>"}` bodies as OpenAI's error shape (the SDKs show only the status
    otherwise), with keys redacted."""
    if response.status_code < 400 or not response.is_json:
        return response
    data = response.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("error"), str):
        return response
    status = response.status_code if response.status_code != 500 else 502  # optillm's 500: the upstream failed
    shaped = _error(status, redact(data["error"], runtime.secrets))
    shaped.headers.update({k: v for k, v in response.headers.items() if k.lower() == "www-authenticate"})
    return shaped


def crashed(runtime: Runtime, error: Exception) -> Any:
    """An exception in one of optillm's views: an OpenAI-shaped 502 with its message (keys
    redacted), not Flask's HTML page."""
    code = getattr(error, "code", None)
    if isinstance(code, int) and code < 500:  # an HTTP error Flask raised (not found, bad request)
        return _error(code, str(error), code=str(code))
    return _error(502, redact(f"{type(error).__name__}: {error}", runtime.secrets))


def http_error(error: Any) -> Any:
    return _error(error.code, f"{error.name}: {request.method} {request.path}",
                  code=error.name.lower().replace(" ", "_"))


def _error(status: int, message: str, *, code: str | None = None) -> Any:
    response = jsonify(error_body(status, message, code=code))
    response.status_code = status
    response.headers.update(error_headers(status))
    return response
