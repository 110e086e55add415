"""optillm's own Flask app, as `selfmoa serve` mounts it for the requests it does not answer
itself: its errors in the OpenAI shape (keys redacted), and `/v1/models` listing our approaches."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, jsonify, request

from .config import SLUGS
from .replies import error_body, error_headers
from .runtime import Runtime, redact


def install(app: Flask, runtime: Runtime) -> None:
    app.after_request(functools.partial(openai_shaped, runtime))
    for status in (404, 405):
        app.register_error_handler(status, http_error)
    app.view_functions["proxy_models"] = with_approach_models(runtime, app.view_functions["proxy_models"])


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


def http_error(error: Any) -> Any:
    return _error(error.code, f"{error.name}: {request.method} {request.path}",
                  code=error.name.lower().replace(" ", "_"))


def with_approach_models(runtime: Runtime, view: Callable[..., Any]) -> Callable[..., Any]:
    """`/v1/models` lists each backend model's approach names too, so model pickers offer them."""

    @functools.wraps(view)
    def listed(*args: Any, **kwargs: Any) -> Any:
        response = current_app.make_response(view(*args, **kwargs))
        data = response.get_json(silent=True) if response.status_code == 200 else None
        if not runtime.config.list_approaches or not isinstance(data, dict):
            return response
        models = [m for m in data.get("data") or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
        known = {m["id"] for m in models}
        extra = [{"id": f"{slug}-{m['id']}", "object": "model", "created": m.get("created") or 0,
                  "owned_by": "selfmoa"} for m in models for slug in SLUGS if f"{slug}-{m['id']}" not in known]
        return jsonify({**data, "data": [*data.get("data", []), *extra]})

    return listed


def _error(status: int, message: str, *, code: str | None = None) -> Any:
    response = jsonify(error_body(status, message, code=code))
    response.status_code = status
    response.headers.update(error_headers(status))
    return response
