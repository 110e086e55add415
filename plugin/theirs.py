"""optillm's own approaches (`moa`, `bon`, `re2`, its plugins, ...) answered by our route, as optillm
runs them, with a complete reply: optillm's approaches call a synchronous client themselves, so
each run waits in a worker thread with a `MeteringClient` that counts what every call of it cost
(prompt, completion, cached and reasoning tokens) and keeps the backend's errors. An approach
that turns its backend's failure into an answer ("Error: ...") or an exception is answered with
an OpenAI-shaped error carrying the backend's own status, never with a 200.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from selfmoa.approaches import BackendError, Choice, Deadline, SelfMoAError, Usage
from selfmoa.approaches.backend import as_dict, parse_usage
from selfmoa.approaches.classify import classify
from selfmoa.approaches.watch import UNWATCHED, Watcher

from .answering import PublicError
from .host import Optillm

# The fields optillm's `proxy()` takes out of the body before it builds an approach's request_config.
_EXPLICIT = ("stream", "stream_options", "messages", "model", "n", "response_format", "max_completion_tokens",
             "max_tokens")
_OURS = ("moa", "optillm_approach")  # never reach optillm's approaches, nor their calls


class Stopped(Exception):
    """The request this run served has ended: its approach may make no more calls."""


@dataclass
class Metered:
    """What one approach run's calls cost, and how they failed."""

    usage: Usage = field(default_factory=Usage)
    errors: list[SelfMoAError] = field(default_factory=list)
    stopped: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class MeteringClient:
    """The client an optillm approach gets: `chat.completions.create` goes to the real client, within
    the request's deadline and without its retries, and is counted; anything else it reads (its
    `models`, its `api_key`) is the real client's."""

    def __init__(self, client: Any, deadline: Deadline, metered: Metered, watcher: Watcher = UNWATCHED) -> None:
        self._client, self._deadline, self.metered, self._watcher = client, deadline, metered, watcher
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _create(self, **params: Any) -> Any:
        metered = self.metered
        if metered.stopped or self._deadline.expired():
            raise Stopped("the request has ended")
        for name in (*_OURS, "stream", "stream_options"):  # optillm's approaches read whole replies
            params.pop(name, None)
        client = self._client
        if hasattr(client, "with_options"):
            client = client.with_options(timeout=self._deadline.remaining(), max_retries=0)
        with metered.lock:
            metered.usage.calls += 1
        watch = self._watcher.start("default", str(params.get("model")), "optillm", raced=False, step=1)
        if watch.headers:
            params["extra_headers"] = {**(params.get("extra_headers") or {}), **watch.headers}
        try:
            response = client.chat.completions.create(**params)
        except Exception as error:
            watch.end("error", None)
            with metered.lock:
                metered.errors.append(classify(str(params.get("model")), error))
            raise
        usage = parse_usage(as_dict(getattr(response, "usage", None) or {}))
        watch.end("ok", usage)
        with metered.lock:
            metered.usage.add(Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                                    cached_tokens=usage.cached_tokens, reasoning_tokens=usage.reasoning_tokens))
        return response


def request_config(body: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """An approach's `request_config` as optillm's `proxy()` builds it from the body (`moa` aside)."""
    config = {k: v for k, v in body.items() if k not in _EXPLICIT and k not in _OURS}
    config.update({"stream": bool(body.get("stream")), "n": body.get("n", settings.get("n", 1))})
    if body.get("response_format") is not None:
        config["response_format"] = body["response_format"]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if body.get("max_completion_tokens") is not None:
        config["max_completion_tokens"] = body["max_completion_tokens"]
    if limit is not None:
        config["max_tokens"] = limit
    return config


@dataclass(frozen=True)
class Theirs:
    """One run of one of optillm's approaches: what to run, and where."""

    host: Optillm
    approach: str
    model: str
    config: dict[str, Any]
    client: Any
    pool: ThreadPoolExecutor
    watcher: Watcher = UNWATCHED

    async def answer(self, messages: list[dict[str, Any]] | None, query: str | None = None,
                     *, deadline: Deadline) -> tuple[Choice, Usage]:
        """The approach's answer to `messages` (or, as a step of a `&` pipeline, to `query`) and
        what its calls cost; a failure raised as a `BackendError` with the backend's status."""
        system, flattened = self.host.flattened(messages or [])
        metered = Metered()
        meter = MeteringClient(self.client, deadline, metered, self.watcher)
        loop = asyncio.get_running_loop()
        run = loop.run_in_executor(self.pool, self.host.execute, self.approach, system, query or flattened, meter,
                                   self.model, dict(self.config), messages if query is None else None)
        try:
            result, _tokens = await run
        except asyncio.CancelledError:
            metered.stopped = True  # its thread cannot be stopped, but it makes no more calls
            raise
        except Exception as error:
            raise self._failure(metered, f"{type(error).__name__}: {error}") from None
        return self._choice(result, metered), metered.usage

    def _choice(self, result: Any, metered: Metered) -> Choice:
        if isinstance(result, dict) and "choices" in result:  # a plugin that returns a whole reply
            message = (result["choices"] or [{}])[0].get("message") or {}
            return Choice(content=message.get("content") or "", finish_reason="stop",
                          tool_calls=tuple(message.get("tool_calls") or ()))
        text = self.host.final_text(result if isinstance(result, str) else str(result))
        if text.startswith("Error:") and metered.errors:  # optillm's way of saying its calls failed
            raise self._failure(metered, text)
        return Choice(content=text, finish_reason="stop")

    def _failure(self, metered: Metered, message: str) -> PublicError:
        """The backend's own error where its calls failed (its status kept), else a 502."""
        cause = metered.errors[-1] if metered.errors else BackendError(self.model, message)
        return PublicError(f"{self.approach}: {cause}", cause)


def reasoning_of(host: Optillm, choice: Choice, usage: Usage) -> int:
    """Reasoning tokens as optillm counts them for its approaches: what the backends reported,
    else the `<think>` blocks of the answer."""
    return usage.reasoning_tokens or host.reasoning_tokens(choice.content)

