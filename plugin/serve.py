"""`selfmoa serve`: optillm's proxy with the four approaches, on uvicorn (`app.py`).

Our own flags are read here; every other flag is optillm's, parsed by optillm itself (its
`--base-url`, `--port`, `--approach`, ...), so they all keep working. `--workers N` runs N
processes on one port, each with its own app built from the same options, their metrics summed
through one directory. The first SIGTERM (or Ctrl-C) drains each process (`operating.py`): new
requests are refused, `/ready` answers 503, the requests in flight get `--graceful-timeout`
seconds to finish, then the server exits with status 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

from .app import ServeOptions, configured_host, create_app
from .logs import FORMATS, use_format
from .metrics import MULTIPROCESS_ENV
from .runtime import Runtime
from .validation import ConfigError

OURS = """\
selfmoa's own options (every other option is optillm's, below):
  --moa-config PATH        the server YAML: defaults, presets, caps, endpoints, hedging (else $SELFMOA_CONFIG)
  --workers N              worker processes serving one port (default 1)
  --graceful-timeout S     on SIGTERM, seconds the requests in flight get to finish (default 30)
  --max-in-flight N        chat requests a worker holds at once; beyond, a 503 with Retry-After (default: no limit)
  --log-format text|json   one line per request as key=value text, or one JSON object per line (default text)
"""


def parser() -> argparse.ArgumentParser:
    ours = argparse.ArgumentParser(prog="selfmoa serve", add_help=False, allow_abbrev=False)  # optillm has --log
    ours.add_argument("--moa-config")
    ours.add_argument("--workers", type=int, default=1)
    ours.add_argument("--graceful-timeout", type=float, default=30.0)
    ours.add_argument("--max-in-flight", type=int)
    ours.add_argument("--log-format", choices=FORMATS, default="text")
    ours.add_argument("-h", "--help", action="store_true")
    return ours


def serve(argv: list[str]) -> None:
    """Run the proxy with `argv` (our options and every optillm flag)."""
    options, optillm_argv = parser().parse_known_args(argv)
    if options.help:
        print(f"usage: selfmoa serve [selfmoa options] [optillm options]\n\n{OURS}")
        print(configured_host(ServeOptions()).help_text().replace("usage: selfmoa serve", "optillm options:", 1))
        return
    chosen = _chosen(options, optillm_argv)
    use_format(chosen.log_format, Runtime.load(chosen.config_path).secrets)  # from the first line on
    host = configured_host(chosen)
    owned = _metrics_directory() if chosen.workers > 1 else None
    where, port = str(host.settings["host"]), int(host.settings["port"])
    try:
        if chosen.workers == 1:
            uvicorn.run(create_app(chosen, host), host=where, port=port, log_config=None, access_log=False,
                        timeout_graceful_shutdown=1)  # the drain gave the requests their time already
        else:
            chosen.to_environment()
            uvicorn.run("selfmoa.app:from_environment", factory=True, workers=chosen.workers, host=where, port=port,
                        log_config=None, access_log=False, timeout_graceful_shutdown=1)
    finally:
        if owned:
            shutil.rmtree(owned, ignore_errors=True)


def _chosen(options: argparse.Namespace, optillm_argv: list[str]) -> ServeOptions:
    """Our options checked, the server file loaded once to refuse a bad one before anything starts."""
    if options.workers < 1:
        raise SystemExit("selfmoa serve: --workers must be at least 1")
    if options.max_in_flight is not None and options.max_in_flight < 1:
        raise SystemExit("selfmoa serve: --max-in-flight must be at least 1")
    if options.graceful_timeout < 0:
        raise SystemExit("selfmoa serve: --graceful-timeout must be at least 0")
    config_path = str(Path(options.moa_config).resolve()) if options.moa_config else os.environ.get("SELFMOA_CONFIG")
    if config_path:
        os.environ["SELFMOA_CONFIG"] = config_path  # stock optillm's plugin entry reads it, in this process too
    try:
        Runtime.load(config_path)
    except ConfigError as error:
        raise SystemExit(f"selfmoa: bad server configuration: {error}") from None
    plugins_dir = _option(optillm_argv, "--plugins-dir") or os.environ.get("OPTILLM_PLUGINS_DIR", "")
    return ServeOptions(optillm_argv, config_path, plugins_dir, options.workers, options.graceful_timeout,
                        options.max_in_flight, options.log_format)


def _metrics_directory() -> str | None:
    """The directory every worker writes its metrics to (made here, unless the operator set one).
    Set before the workers start: prometheus_client reads it when a process first imports it."""
    if os.environ.get(MULTIPROCESS_ENV):
        return None
    made = tempfile.mkdtemp(prefix="selfmoa-metrics-")
    os.environ[MULTIPROCESS_ENV] = made
    return made


def _option(argv: list[str], name: str) -> str | None:
    """The value of `name VALUE` or `name=VALUE` in argv."""
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None
