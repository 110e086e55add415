"""`selfmoa serve`: optillm's own proxy with the four approaches registered.

On top of stock optillm 0.4.0, all through its public module attributes: its `--plugins-dir` is
honoured (0.4.0 loads plugins before it parses that flag), a refused `moa` configuration is
answered with 400 before any backend call (optillm turns every plugin exception into 500), a failed
request is answered with the status its error carries, keys are redacted from every log line, and
the upstream client is built once per process instead of once per request.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from .config import SLUGS, ConfigError, resolve
from .entry import make_run, reported_errors, request_arrived
from .runtime import current_runtime, redact

log = logging.getLogger("selfmoa")
CHAT_PATH = "/v1/chat/completions"
ROUTING_FIELDS = ("model", "optillm_approach")  # read before we know which approach a request is for


def serve(argv: list[str]) -> None:
    """Run optillm's server with `argv` (every optillm flag, plus `--moa-config PATH`)."""
    moa_config, argv = take_option(argv, "--moa-config")
    if moa_config:
        os.environ["SELFMOA_CONFIG"] = str(Path(moa_config).resolve())
    try:
        current_runtime()
    except ConfigError as error:
        raise SystemExit(f"selfmoa: bad server configuration: {error}") from None
    server = import_optillm()
    plugins_dir = option_value(argv, "--plugins-dir") or os.environ.get("OPTILLM_PLUGINS_DIR", "")
    install(server, plugins_dir)
    sys.argv = ["optillm", *argv]
    server.main()


def import_optillm() -> ModuleType:
    try:
        return importlib.import_module("optillm.server")
    except ImportError as error:
        raise SystemExit(f"selfmoa: optillm is not importable ({error}); run `make setup`") from None


def install(server: ModuleType, plugins_dir: str = "") -> None:
    """Register our approaches at optillm's plugin-loading time, and our request hooks on its app."""
    original_load = server.load_plugins

    def load_plugins() -> None:
        if plugins_dir:
            server.server_config["plugins_dir"] = plugins_dir
        original_load()
        if plugins_dir:
            load_plugin_files(server.plugin_approaches, Path(plugins_dir))
        for slug in SLUGS:
            server.plugin_approaches.setdefault(slug, make_run(slug))

    setattr(server, "load_plugins", load_plugins)  # noqa: B010 - replacing optillm's module function
    # optillm builds (and never closes) a new provider client on every request; one per process will do
    setattr(server, "get_config", functools.lru_cache(maxsize=1)(server.get_config))  # noqa: B010
    server.app.before_request(functools.partial(refuse_bad_config, server))
    server.app.view_functions["proxy"] = with_error_status(server.app.view_functions["proxy"])
    secrets = current_runtime().secrets
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(secrets))


def load_plugin_files(registry: dict[str, Any], directory: Path) -> None:
    """Plugins placed directly in `directory` (optillm itself only looks in `directory/optillm/plugins`)."""
    for path in sorted(directory.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"selfmoa_user_plugin_{path.stem}", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as error:  # a broken user plugin must not stop the server
            log.error("selfmoa: cannot load plugin %s: %s", path, error)
            continue
        if hasattr(module, "SLUG") and hasattr(module, "run"):
            registry[module.SLUG] = module.run
            log.info("selfmoa: loaded plugin %s from %s", module.SLUG, directory)


def requested_slugs(server: ModuleType, data: dict[str, Any]) -> tuple[list[str], str]:
    """Our approaches a request selects through optillm's routing (prefix, field, tag, `&`/`|`)."""
    approach = data.get("optillm_approach", server.server_config["approach"])
    messages = data.get("messages")
    try:
        tagged = server.parse_conversation(messages)[2] if isinstance(messages, list) else None
    except Exception:  # malformed messages: optillm's parser cannot read a tag from them
        tagged = None
    model = data.get("model", server.server_config["model"])
    if not isinstance(model, str) or not isinstance(approach, str):
        return [], ""
    approach = tagged or approach
    routed = model if approach == "auto" else f"{approach}-{model}"
    _, approaches, actual = server.parse_combined_approach(routed, server.known_approaches, server.plugin_approaches)
    return [a for a in approaches if a in SLUGS], actual


def refuse_bad_config(server: ModuleType) -> Any:
    """Before optillm sees a chat request for one of our approaches: 400 if its configuration is bad."""
    from flask import request

    if request.method != "POST" or request.path != CHAT_PATH:
        return None
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return error_response(400, "the request body must be a JSON object", None)
    for name in ROUTING_FIELDS:  # optillm would fail on these with an HTML 500
        if name in data and not isinstance(data[name], str):
            return error_response(400, f"{name}: must be a string", name)
    slugs, model = requested_slugs(server, data)
    runtime = current_runtime()
    request_config = dict(data)
    if data.get("max_completion_tokens") is not None:
        request_config["max_tokens"] = data["max_completion_tokens"]
    try:
        for slug in slugs:
            resolve(slug, model, request_config, data.get("messages"), runtime.config)
    except ConfigError as error:
        return error_response(400, f"{slug}: {redact(str(error), runtime.secrets)}", error.field)
    return None


def with_error_status(view: Callable[..., Any]) -> Callable[..., Any]:
    """optillm answers every plugin exception with 500; answer ours with the status they carry."""

    @functools.wraps(view)
    def proxied(*args: Any, **kwargs: Any) -> Any:
        from flask import current_app

        errors: list[Any] = []
        token = reported_errors.set(errors)
        arrival = request_arrived.set(time.monotonic())
        try:
            response = current_app.make_response(view(*args, **kwargs))
        finally:
            request_arrived.reset(arrival)
            reported_errors.reset(token)
        if errors and response.status_code == 500:
            error = errors[-1]
            return error_response(error.status, str(error), getattr(error, "param", None))
        return response

    return proxied


def error_response(status: int, message: str, param: str | None) -> Any:
    """An OpenAI-shaped error body, so clients raise the right exception with our message."""
    from flask import jsonify

    kind = {400: "invalid_request_error", 504: "timeout_error"}.get(status, "upstream_error")
    return jsonify({"error": {"message": message, "type": kind, "param": param, "code": kind}}), status


class RedactingFilter(logging.Filter):
    """Keeps keys out of every log line, optillm's included."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def take_option(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """Remove `name VALUE` / `name=VALUE` from argv; returns (value, the rest)."""
    rest, value, skip = [], None, False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == name and index + 1 < len(argv):
            value, skip = argv[index + 1], True
        elif arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return value, rest


def option_value(argv: list[str], name: str) -> str | None:
    return take_option(argv, name)[0]
