"""Every touch of optillm's internals, in one place, checked when `selfmoa serve` starts.

selfmoa runs optillm's own server module and reaches into it for its command line and settings,
its routing (which approach a request selects), its plugin registry, its own approaches (run with
a client we hand them, its LiteLLM wrapper among them) and its Flask app (for the routes we do not
answer ourselves). Those are
module attributes, not a public API: `Optillm.load()` checks that each one exists and stops the
server with the optillm version it needs if not, instead of letting a request discover it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import logging
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

SUPPORTED = ">=0.4.0,<0.5"
REQUIRED = (
    "app", "server_config", "plugin_approaches", "known_approaches", "load_plugins", "parse_args",
    "parse_combined_approach", "parse_conversation", "strip_optillm_approach_tags", "execute_single_approach",
    "tagged_conversation_to_messages", "count_reasoning_tokens", "init_cepo_config",
)
_SKIPPED = re.compile(r"Error loading (?:package|local) plugin (\S+?)(?:_plugin)?\.py: (.*)")

log = logging.getLogger("selfmoa")


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

    @classmethod
    def load(cls) -> Optillm:
        try:
            server = importlib.import_module("optillm.server")
        except ImportError as error:
            raise HostError(f"selfmoa: optillm is not importable ({error}); run `make setup`") from None
        missing = [name for name in REQUIRED if not hasattr(server, name)]
        if importlib.util.find_spec("optillm.litellm_wrapper") is None:
            missing.append("litellm_wrapper")
        if missing:
            raise HostError(f"selfmoa needs optillm {SUPPORTED}; optillm {_version()} lacks {', '.join(missing)}")
        return cls(server)

    # --- start-up -------------------------------------------------------------------------------

    def configure(self, argv: list[str], plugins: Mapping[str, Callable[..., Any]], plugins_dir: str,
                  load_files: Callable[[dict[str, Any], str], None]) -> None:
        """What optillm's `main()` does before it runs its server: plugins loaded (ours and
        `plugins_dir`'s included: 0.4.0 loads plugins before it parses `--plugins-dir`), its flags
        parsed into its settings, its log level and CePO settings applied."""
        server = self.server
        if plugins_dir:
            server.server_config["plugins_dir"] = plugins_dir
        self._load_plugins_quietly()
        if plugins_dir:
            load_files(server.plugin_approaches, plugins_dir)
        for slug, run in plugins.items():
            server.plugin_approaches.setdefault(slug, run)
        with _argv(argv):
            server.server_config.update(vars(server.parse_args()))
        level = getattr(logging, str(server.server_config.get("log", "info")).upper(), logging.INFO)
        logging.getLogger().setLevel(level)
        setattr(server, "cepo_config", server.init_cepo_config(server.server_config))  # noqa: B010  # as main() does
        if server.server_config.get("batch_mode"):
            log.warning("selfmoa: optillm's --batch-mode is not supported by selfmoa serve; requests run unbatched")

    def help_text(self) -> str:
        """optillm's own `--help`, for `selfmoa serve --help`."""
        out = io.StringIO()
        with _argv(["--help"]), contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            self.server.parse_args()
        return out.getvalue()

    def _load_plugins_quietly(self) -> None:
        """optillm's plugins, with one INFO line naming those the lean install cannot load
        instead of an ERROR line for each (they need torch, spacy, selenium, ...)."""
        skipped = _Skipped()
        logger = logging.getLogger("optillm.server")
        logger.addFilter(skipped)
        try:
            self.server.load_plugins()
        finally:
            logger.removeFilter(skipped)
        if skipped.names:
            log.info("selfmoa: optillm plugins not loaded (their extra dependencies are not installed: "
                     "`make setup-full` installs them): %s", ", ".join(skipped.names))

    # --- settings and routing ---------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        return self.server.server_config  # type: ignore[no-any-return]

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

    def is_approach(self, name: str) -> bool:
        return name in self.server.known_approaches or name in self.server.plugin_approaches

    def without_tags(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation with optillm's `<optillm_approach>` routing tags removed."""
        return list(self.server.strip_optillm_approach_tags(messages))

    # --- optillm's own approaches -------------------------------------------------------------------

    def flattened(self, messages: list[dict[str, Any]]) -> tuple[str, str]:
        """(system prompt, query) as optillm's approaches read a conversation."""
        system, query, _ = self.server.parse_conversation(messages)
        return system, query

    def execute(self, approach: str, system: str, query: str, client: Any, model: str,
                request_config: dict[str, Any], messages: list[dict[str, Any]] | None) -> Any:
        """One of optillm's approaches (or a plugin) as optillm runs it: `(answer, tokens)`."""
        return self.server.execute_single_approach(approach, system, query, client, model, request_config, None,
                                                   messages)

    def final_text(self, answer: str) -> str:
        """An approach's answer as optillm returns it (a tagged conversation: its last turn)."""
        turns = self.server.tagged_conversation_to_messages(answer)
        return turns[-1]["content"] if isinstance(turns, list) and turns else answer

    def reasoning_tokens(self, text: str) -> int:
        return int(self.server.count_reasoning_tokens(text))

    def litellm_client(self) -> Any:
        """optillm's LiteLLM wrapper, the client its approaches get when no provider key is set."""
        from optillm.litellm_wrapper import LiteLLMWrapper

        return LiteLLMWrapper()


class _Skipped(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        found = _SKIPPED.match(record.getMessage())
        if found is None:
            return record.levelno > logging.INFO  # optillm's own "Looking for..." chatter is kept out too
        missing = re.search(r"No module named '([^']+)'", found.group(2))
        name = found.group(1).rsplit("/", 1)[-1]
        self.names.append(f"{name} ({missing.group(1) if missing else found.group(2)})")
        return False


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = ["selfmoa serve", *argv]
    try:
        yield
    finally:
        sys.argv = saved


def _version() -> str:
    try:
        return importlib.metadata.version("optillm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
