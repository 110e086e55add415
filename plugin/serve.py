"""`selfmoa serve`: optillm's own proxy with the four approaches registered and answered natively.

On top of stock optillm 0.4.0 (every touch of its internals is in `host.py`): our approaches are
answered by our own route (`route.py`), its `--plugins-dir` is honoured (0.4.0 loads plugins
before it parses that flag), every error is OpenAI-shaped, keys are redacted from every log line,
and the upstream client is built once per process instead of once per request.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from . import route
from .config import SLUGS
from .entry import make_run
from .host import Optillm
from .runtime import current_runtime, redact
from .validation import ConfigError

log = logging.getLogger("selfmoa")


def serve(argv: list[str]) -> None:
    """Run optillm's server with `argv` (every optillm flag, plus `--moa-config PATH`)."""
    moa_config, argv = take_option(argv, "--moa-config")
    if moa_config:
        os.environ["SELFMOA_CONFIG"] = str(Path(moa_config).resolve())
    try:
        current_runtime()
    except ConfigError as error:
        raise SystemExit(f"selfmoa: bad server configuration: {error}") from None
    host = Optillm.load()
    install(host, option_value(argv, "--plugins-dir") or os.environ.get("OPTILLM_PLUGINS_DIR", ""))
    host.main(argv)


def install(host: Optillm, plugins_dir: str = "") -> None:
    """Our approaches in optillm's registry (for combinations), our route and hooks on its app."""
    host.register({slug: make_run(slug) for slug in SLUGS}, plugins_dir, load_plugin_files)
    host.build_client_once()
    route.install(host)
    secrets = current_runtime().secrets
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter(secrets))


def load_plugin_files(registry: dict[str, Any], directory: str) -> None:
    """Plugins placed directly in `directory` (optillm itself only looks in `directory/optillm/plugins`)."""
    for path in sorted(Path(directory).glob("*.py")):
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
