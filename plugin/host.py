"""Every touch of optillm's internals, in one place, checked when `selfmoa serve` starts.

selfmoa runs optillm's own server module and reaches into it for its routing (which approach a
request selects), its upstream client (its `--base-url`, keys, LiteLLM fallback), its plugin
registry and its Flask app. Those are module attributes, not a public API: `Optillm.load()`
checks that each one exists and stops the server with the optillm version it needs if not,
instead of letting a request discover it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

SUPPORTED = ">=0.4.0,<0.5"
REQUIRED = (
    "app", "server_config", "plugin_approaches", "known_approaches", "load_plugins", "parse_combined_approach",
    "parse_conversation", "strip_optillm_approach_tags", "get_config", "none_approach", "main",
)
VIEWS = ("proxy", "proxy_models")


@dataclass(frozen=True)
class Route:
    """Where optillm's routing sends a request: `SINGLE`, `AND` or `OR` of approaches, on `model`."""

    operation: str
    approaches: list[str]
    model: str


class HostError(SystemExit):
    """optillm is missing or is not a version whose internals selfmoa knows."""


class Optillm:
    """optillm's server module, checked; the only way the rest of selfmoa reaches it."""

    def __init__(self, server: ModuleType) -> None:
        self.server = server
        self._clients: Callable[[str, str], Any] = functools.lru_cache(maxsize=32)(self._client_for_key)

    @classmethod
    def load(cls) -> Optillm:
        try:
            server = importlib.import_module("optillm.server")
        except ImportError as error:
            raise HostError(f"selfmoa: optillm is not importable ({error}); run `make setup`") from None
        missing = [name for name in REQUIRED if not hasattr(server, name)]
        missing += [f"view {name}" for name in VIEWS if name not in getattr(server.app, "view_functions", {})]
        if missing:
            raise HostError(f"selfmoa needs optillm {SUPPORTED}; optillm {_version()} lacks {', '.join(missing)}")
        return cls(server)

    @property
    def app(self) -> Any:
        return self.server.app

    def route(self, body: Mapping[str, Any]) -> Route:
        """optillm's own reading of a request: the approach from the tag, the body field, the model
        prefix or the server default, and `&`/`|` combinations."""
        config = self.server.server_config
        approach = body.get("optillm_approach", config["approach"])
        messages = body.get("messages")
        try:
            tagged = self.server.parse_conversation(messages)[2] if isinstance(messages, list) else None
        except Exception:  # malformed messages: optillm's parser cannot read a tag from them
            tagged = None
        model = body.get("model", config["model"])
        approach = tagged or approach
        routed = model if approach == "auto" else f"{approach}-{model}"
        operation, approaches, actual = self.server.parse_combined_approach(
            routed, self.server.known_approaches, self.server.plugin_approaches)
        return Route(operation, list(approaches), actual)

    def without_tags(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation with optillm's `<optillm_approach>` routing tags removed."""
        return list(self.server.strip_optillm_approach_tags(messages))

    def upstream_client(self, bearer: str | None) -> Any:
        """The client optillm would use for this request: a client's `sk-` key passes through,
        as optillm does it (one client per key, reused), else optillm's configured client."""
        if bearer and bearer.startswith("sk-"):
            return self._clients(bearer, self.server.server_config.get("base_url", ""))
        return self.server.get_config()[0]

    def _client_for_key(self, key: str, base_url: str) -> Any:
        from openai import OpenAI

        return OpenAI(api_key=key, base_url=base_url) if base_url else OpenAI(api_key=key)

    def build_client_once(self) -> None:
        """optillm builds (and never closes) a new provider client on every request; one will do."""
        setattr(self.server, "get_config", functools.lru_cache(maxsize=1)(self.server.get_config))  # noqa: B010

    def register(self, plugins: Mapping[str, Callable[..., Any]], plugins_dir: str,
                 load_files: Callable[[dict[str, Any], str], None]) -> None:
        """Add `plugins` when optillm loads its own, and honour `plugins_dir` (0.4.0 loads plugins
        before it parses its `--plugins-dir` flag)."""
        original = self.server.load_plugins

        def load_plugins() -> None:
            if plugins_dir:
                self.server.server_config["plugins_dir"] = plugins_dir
            original()
            if plugins_dir:
                load_files(self.server.plugin_approaches, plugins_dir)
            for slug, run in plugins.items():
                self.server.plugin_approaches.setdefault(slug, run)

        setattr(self.server, "load_plugins", load_plugins)  # noqa: B010

    def stamp_arrivals(self, key: str) -> None:
        """Put the time each request reached the server into its WSGI environ under `key`, before
        Flask (or any hook on its app, optillm's included) does any work for it: a deadline that
        starts later does not count the time the server took to dispatch the request."""
        inner = self.app.wsgi_app

        def stamped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            environ.setdefault(key, time.monotonic())
            return inner(environ, start_response)

        self.app.wsgi_app = stamped

    def wrap_view(self, name: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        self.app.view_functions[name] = wrap(self.app.view_functions[name])

    def on_upstream_error(self, record: Callable[[Exception], None]) -> None:
        """Call `record` with the exception of optillm's pass-through (`none`) call, which optillm
        itself turns into a 500 carrying only its text."""
        original = self.server.none_approach

        @functools.wraps(original)
        def none_approach(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            except Exception as error:
                record(error)
                raise

        setattr(self.server, "none_approach", none_approach)  # noqa: B010

    def main(self, argv: list[str]) -> None:
        sys.argv = ["optillm", *argv]
        self.server.main()


def _version() -> str:
    try:
        return importlib.metadata.version("optillm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
