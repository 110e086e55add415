"""`selfmoa serve`: optillm's proxy with the four approaches, on uvicorn (`app.py`).

Our own flags are read here; every other flag is optillm's, parsed by optillm itself (its
`--base-url`, `--port`, `--approach`, ...), so they all keep working. `--workers N` runs N
processes on one port, each with its own app built from the same options.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from .app import ServeOptions, configured_host, create_app
from .runtime import Runtime
from .validation import ConfigError

OURS = """\
selfmoa's own options (every other option is optillm's, below):
  --moa-config PATH     the server YAML: defaults, presets, caps, endpoints, hedging (else $SELFMOA_CONFIG)
  --workers N           worker processes serving one port (default 1)
"""


def parser() -> argparse.ArgumentParser:
    ours = argparse.ArgumentParser(prog="selfmoa serve", add_help=False)
    ours.add_argument("--moa-config")
    ours.add_argument("--workers", type=int, default=1)
    ours.add_argument("-h", "--help", action="store_true")
    return ours


def serve(argv: list[str]) -> None:
    """Run the proxy with `argv` (our options and every optillm flag)."""
    options, optillm_argv = parser().parse_known_args(argv)
    if options.help:
        print(f"usage: selfmoa serve [selfmoa options] [optillm options]\n\n{OURS}")
        print(configured_host(ServeOptions()).help_text().replace("usage: selfmoa serve", "optillm options:", 1))
        return
    if options.workers < 1:
        raise SystemExit("selfmoa serve: --workers must be at least 1")
    config_path = str(Path(options.moa_config).resolve()) if options.moa_config else os.environ.get("SELFMOA_CONFIG")
    if config_path:
        os.environ["SELFMOA_CONFIG"] = config_path  # stock optillm's plugin entry reads it, in this process too
    try:
        Runtime.load(config_path)
    except ConfigError as error:
        raise SystemExit(f"selfmoa: bad server configuration: {error}") from None
    plugins_dir = _option(optillm_argv, "--plugins-dir") or os.environ.get("OPTILLM_PLUGINS_DIR", "")
    chosen = ServeOptions(optillm_argv, config_path, plugins_dir, options.workers)
    host = configured_host(chosen)
    address = {"host": str(host.settings["host"]), "port": int(host.settings["port"])}
    quiet = {"log_config": None, "access_log": False, "timeout_graceful_shutdown": 30}
    if chosen.workers == 1:
        uvicorn.run(create_app(chosen, host), **address, **quiet)  # type: ignore[arg-type]
        return
    chosen.to_environment()
    uvicorn.run("selfmoa.app:from_environment", factory=True, workers=chosen.workers, **address, **quiet)  # type: ignore[arg-type]


def _option(argv: list[str], name: str) -> str | None:
    """The value of `name VALUE` or `name=VALUE` in argv."""
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None
