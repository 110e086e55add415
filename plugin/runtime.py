"""Process-wide state, built lazily once per server config: the config itself, the backends of its
named endpoints (one client per endpoint, reused), and what backends have shown they refuse."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from openai import OpenAI

from selfmoa.approaches import Backend, BackendMemory, OpenAIBackend

from .config import ServerConfig, load_server_config

_KEY_PATTERN = re.compile(r"\b(sk|pk|rk|key)-[A-Za-z0-9_\-]{6,}")
_ENV_SECRETS = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "CEREBRAS_API_KEY", "OPTILLM_API_KEY")


@dataclass(frozen=True)
class Runtime:
    config: ServerConfig
    backends: dict[str, Backend]
    memory: BackendMemory
    secrets: tuple[str, ...]


@functools.lru_cache(maxsize=8)
def runtime_for(path: str | None) -> Runtime:
    config = load_server_config(path)
    backends: dict[str, Backend] = {
        name: OpenAIBackend(OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key.get_secret_value(),
                                   max_retries=0))
        for name, endpoint in config.endpoints.items()
    }
    keys = [e.api_key.get_secret_value() for e in config.endpoints.values()]
    keys += [os.environ[name] for name in _ENV_SECRETS if os.environ.get(name)]
    return Runtime(config, backends, BackendMemory(), tuple(k for k in keys if len(k) >= 4))


def current_runtime() -> Runtime:
    """The runtime of the config named by SELFMOA_CONFIG (`selfmoa serve --moa-config` sets it)."""
    return runtime_for(os.environ.get("SELFMOA_CONFIG") or None)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with known secrets and anything shaped like an API key replaced by [REDACTED]."""
    for secret in secrets:
        text = text.replace(secret, "[REDACTED]")
    return _KEY_PATTERN.sub("[REDACTED]", text)
