"""`WireBackend`: the OpenAI chat-completions wire protocol spoken directly over aiohttp.

No SDK in between: a call is one JSON POST and its JSON (or server-sent events) back, parsed into
our plain values. This is what `selfmoa serve` talks to its backends with: one connection pool per
process, sized for thousands of calls in flight, and the least work per call (the `openai` SDK's
request building and response models were most of the proxy's CPU). Every field of `params` goes
into the body as it is, backend-specific ones (`top_k`, `cache_prompt`) included.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import aiohttp.helpers
import multidict
import yarl

from .backend import Chunk, Chunks, Completion, parse_chunk, parse_completion
from .classify import classify, error_fields, from_status
from .errors import BackendError, SelfMoAError, TransientError
from .types import Message


def new_session(*, limit: int = 0) -> aiohttp.ClientSession:
    """A connection pool for many calls in flight (`limit` 0: no limit but the file descriptors').
    Proxy variables are read once per backend (`_env_proxy`), not on every call (aiohttp's
    `trust_env` reads them in a worker thread for each request)."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector)


_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent")  # ours are sent: aiohttp need not add its own


@functools.lru_cache(maxsize=64)
def _env_proxy(url: str) -> str | None:
    """The HTTP(S)_PROXY that applies to `url` (NO_PROXY honoured), as the openai SDK would use it."""
    try:
        return str(aiohttp.helpers.get_env_proxy_for_url(yarl.URL(url))[0])
    except LookupError:
        return None


class WireBackend:
    """`Backend` over `base_url` (…/v1). Uses the session it is given (the server's, closed by
    whoever made it) or opens its own on first use in the running loop (closed by `aclose`)."""

    def __init__(self, base_url: str, api_key: str | None = None, *, session: aiohttp.ClientSession | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._url = yarl.URL(f"{self.base_url}/chat/completions")  # parsed once, not on every call
        sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                "Accept-Encoding": "gzip, deflate", "User-Agent": "selfmoa", **(headers or {})}
        if api_key:
            sent["Authorization"] = f"Bearer {api_key}"
        self._headers = multidict.CIMultiDictProxy(multidict.CIMultiDict(sent))  # built once, not per call
        self._session = session
        self._owned: aiohttp.ClientSession | None = None
        self._proxy = _env_proxy(str(self._url))

    def session(self) -> aiohttp.ClientSession:
        if self._session is not None:
            return self._session
        if self._owned is None or self._owned.closed:
            self._owned = new_session()
        return self._owned

    async def aclose(self) -> None:
        if self._owned is not None:
            await self._owned.close()

    async def complete(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                       timeout: float, headers: Mapping[str, str] | None = None) -> Completion:
        try:
            async with self._post(model, messages, params, timeout, headers) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise _refusal(model, response, raw)
        except SelfMoAError:
            raise
        except Exception as error:  # connection errors, timeouts
            raise classify(model, error) from None
        try:
            return parse_completion(json.loads(raw))
        except ValueError:
            raise TransientError(model, "the reply was cut off or is not JSON") from None

    @asynccontextmanager
    async def stream(self, model: str, messages: Sequence[Message], params: Mapping[str, Any], *,
                     timeout: float, headers: Mapping[str, str] | None = None) -> AsyncIterator[Chunks]:
        try:
            response = await self._post(model, messages, {**params, "stream": True}, timeout, headers)
            if response.status >= 400:
                raise _refusal(model, response, await response.read())
        except SelfMoAError:
            raise
        except Exception as error:
            raise classify(model, error) from None
        events = _Events(model, response)
        try:
            yield events
        finally:
            await events.aclose()
            if events.done:
                response.release()  # back to the pool (or closed, if it still has unread bytes)
            else:
                response.close()  # an unfinished stream takes its connection with it

    def _post(self, model: str, messages: Sequence[Message], params: Mapping[str, Any],
              timeout: float, headers: Mapping[str, str] | None) -> Any:
        return self.request({**params, "model": model, "messages": list(messages)}, timeout, headers)

    def get(self, path: str, timeout: float) -> Any:
        """A GET of another route of the same server (`/models`), as an aiohttp request context."""
        return self.session().get(f"{self.base_url}{path}", headers=self._headers, proxy=self._proxy,
                                  timeout=aiohttp.ClientTimeout(total=timeout), skip_auto_headers=_NO_AUTO_HEADERS)

    def request(self, body: Mapping[str, Any], timeout: float, headers: Mapping[str, str] | None = None) -> Any:
        """The raw POST of a chat request (an aiohttp request context): for relaying a backend's
        reply as it is, status, headers and bytes."""
        sent = self._headers if not headers else multidict.CIMultiDict({**self._headers, **headers})
        return self.session().post(self._url, data=json.dumps(body).encode(), headers=sent,
                                   proxy=self._proxy, timeout=aiohttp.ClientTimeout(total=timeout),
                                   skip_auto_headers=_NO_AUTO_HEADERS)


def _refusal(model: str, response: aiohttp.ClientResponse, raw: bytes) -> SelfMoAError:
    text = raw.decode(errors="replace")
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    return from_status(model, response.status, body, retry_after=response.headers.get("Retry-After"))


class _Events:
    """The stream's chunks; one that ends without a `finish_reason` or `[DONE]` was cut short."""

    def __init__(self, model: str, response: aiohttp.ClientResponse) -> None:
        self.model, self.done = model, False
        self._lines = self._read(response)

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Chunk:
        return await self._lines.__anext__()

    async def aclose(self) -> None:
        await self._lines.aclose()

    async def _read(self, response: aiohttp.ClientResponse) -> AsyncGenerator[Chunk, None]:
        model, finished = self.model, False
        try:
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    self.done = True
                    break
                event = json.loads(data)
                if event.get("error") and not event.get("choices"):
                    raise BackendError(model, error_fields(event, "error event in the stream")[0])
                chunk = parse_chunk(event)
                finished = finished or any(delta.finish_reason for delta in chunk.deltas)
                yield chunk
        except SelfMoAError:
            raise
        except ValueError:
            raise TransientError(model, "the stream sent an event that is not JSON") from None
        except Exception as error:
            raise classify(model, error) from None
        if not (finished and self.done):
            missing = "no finish_reason" if not finished else "no [DONE]"
            raise TransientError(model, f"the stream ended before it was complete ({missing})")
