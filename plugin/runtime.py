"""What a process knows once it has read its server file: the configuration, what backends have
shown (`BackendMemory`), and the secrets to keep out of every log line, reply and error.

`selfmoa serve` builds one `Runtime` in its lifespan (`service.py`) and hands it to the routes.
Stock optillm gives a plugin no such place, so its entry (`entry.py`) finds the runtime of the file
SELFMOA_CONFIG names through `runtime_for`, built once per process.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

from selfmoa.approaches import Backend, BackendMemory, WireBackend

from .config import ServerConfig, load_server_config

_KEY_PATTERN = re.compile(r"\b(sk|pk|rk|key)-[A-Za-z0-9_\-]{6,}")
_ENV_SECRETS = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "CEREBRAS_API_KEY", "OPTILLM_API_KEY")


@dataclass(frozen=True)
class Runtime:
    config: ServerConfig
    memory: BackendMemory
    secrets: tuple[str, ...]

    @classmethod
    def load(cls, path: str | None) -> Runtime:
        """The runtime of the server file at `path` (None: built-in defaults only)."""
        config = load_server_config(path)
        keys = [e.api_key.get_secret_value() for e in config.endpoints.values()]
        keys += [os.environ[name] for name in _ENV_SECRETS if os.environ.get(name)]
        return cls(config, BackendMemory(), tuple(k for k in keys if len(k) >= 4))

    def with_secret(self, secret: str) -> Runtime:
        """The same runtime, with one more secret to keep out of everything (if it is one)."""
        if len(secret) < 4 or secret in self.secrets:
            return self
        return Runtime(self.config, self.memory, (*self.secrets, secret))

    def endpoints(self, session: aiohttp.ClientSession | None = None) -> dict[str, Backend]:
        """The server file's named endpoints as backends (over `session`, or their own)."""
        return {name: WireBackend(endpoint.base_url, endpoint.api_key.get_secret_value(), session=session)
                for name, endpoint in self.config.endpoints.items()}


@functools.lru_cache(maxsize=8)
def runtime_for(path: str | None) -> Runtime:
    """The process's runtime for stock optillm's plugin entry (see the module docstring)."""
    return Runtime.load(path)


def configured_path() -> str | None:
    return os.environ.get("SELFMOA_CONFIG") or None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with known secrets and anything shaped like an API key replaced by [REDACTED]."""
    for secret in secrets:
        text = text.replace(secret, "[REDACTED]")
    return _KEY_PATTERN.sub("[REDACTED]", text)
