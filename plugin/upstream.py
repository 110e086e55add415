"""The default endpoint, as optillm is configured to reach it, for our async core.

optillm picks its provider from the environment (`get_config`): an OpenAI-compatible server at its
`--base-url` with OPENAI_API_KEY, Azure, Cerebras, else LiteLLM. We make the same choice: the
OpenAI-compatible case is spoken to over the wire (`WireBackend`, on the process's connection
pool), Azure and Cerebras through their SDKs' async clients, LiteLLM through its async API. A
client's own `sk-` bearer key passes through to the `--base-url` as optillm passes it, unless it
is the proxy's own key (`--optillm-api-key`), which is for us, not for the backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from selfmoa.approaches import Backend, ClientBackend, LiteLLMBackend, WireBackend

OPENAI_BASE_URL = "https://api.openai.com/v1"
_KEYS = 256  # clients' own keys whose backends are kept


class Upstream:
    def __init__(self, settings: Mapping[str, Any], session: aiohttp.ClientSession | None,
                 environ: Mapping[str, str] = os.environ) -> None:
        self.base_url = str(settings.get("base_url") or OPENAI_BASE_URL)
        self.proxy_key = str(settings.get("optillm_api_key") or "")
        self.session = session
        self.key = environ.get("OPENAI_API_KEY")
        self.provider = _provider(environ)
        self.default = self._default(environ)
        self._clients: dict[tuple[str, str], Any] = {}
        self._environ = environ
        self._backends: dict[str, Backend] = {}

    def backend(self, bearer: str | None) -> Backend:
        """The backend for a request that carried `bearer` (see the module docstring)."""
        if self._passes_through(bearer):
            return self._keyed(bearer or "")
        return self.default

    def sync_client(self, bearer: str | None, litellm: Callable[[], Any]) -> Any:
        """A synchronous client for optillm's own approaches, which call the SDK themselves, as
        optillm would build it (`litellm()`: optillm's LiteLLM wrapper): one per key, reused."""
        key = (bearer or "") if self._passes_through(bearer) else self.key or ""
        provider = "openai" if self._passes_through(bearer) else self.provider
        if (provider, key) not in self._clients:
            self._clients[(provider, key)] = self._sync(provider, key, litellm)
        return self._clients[(provider, key)]

    def _sync(self, provider: str, key: str, litellm: Callable[[], Any]) -> Any:
        import openai

        if provider == "openai":
            return openai.OpenAI(api_key=key, base_url=self.base_url)
        if provider == "azure":
            return openai.AzureOpenAI(api_key=self._environ["AZURE_OPENAI_API_KEY"],
                                      api_version=self._environ.get("AZURE_API_VERSION"),
                                      azure_endpoint=self._environ.get("AZURE_API_BASE", ""))
        if provider == "cerebras":
            from cerebras.cloud.sdk import Cerebras

            base_url = self.base_url if self.base_url != OPENAI_BASE_URL else None
            return Cerebras(api_key=self._environ["CEREBRAS_API_KEY"], base_url=base_url)
        return litellm()

    def _keyed(self, key: str) -> Backend:
        """The backend for a client's own key, made once per key (at most `_KEYS` remembered)."""
        backend = self._backends.pop(key, None) or WireBackend(self.base_url, key, session=self.session)
        self._backends[key] = backend  # the most recent last
        while len(self._backends) > _KEYS:
            self._backends.pop(next(iter(self._backends)))
        return backend

    def _passes_through(self, bearer: str | None) -> bool:
        return bool(bearer and bearer.startswith("sk-") and bearer != self.proxy_key)

    def _default(self, environ: Mapping[str, str]) -> Backend:
        if self.provider == "openai":
            return WireBackend(self.base_url, self.key, session=self.session)
        if self.provider == "azure":
            import openai

            return ClientBackend(openai.AsyncAzureOpenAI(api_key=environ["AZURE_OPENAI_API_KEY"],
                                                         api_version=environ.get("AZURE_API_VERSION"),
                                                         azure_endpoint=environ.get("AZURE_API_BASE", "")))
        if self.provider == "cerebras":
            from cerebras.cloud.sdk import AsyncCerebras

            base_url = self.base_url if self.base_url != OPENAI_BASE_URL else None
            return ClientBackend(AsyncCerebras(api_key=environ["CEREBRAS_API_KEY"], base_url=base_url))
        return LiteLLMBackend()


def _provider(environ: Mapping[str, str]) -> str:
    """optillm's order of precedence (its local inference, chosen by OPTILLM_API_KEY, aside:
    that key is the proxy's client key here)."""
    if environ.get("CEREBRAS_API_KEY"):
        return "cerebras"
    if environ.get("OPENAI_API_KEY"):
        return "openai"
    if environ.get("AZURE_OPENAI_API_KEY"):
        return "azure"
    return "litellm"

