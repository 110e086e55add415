"""A plain model through `selfmoa serve`: the request relayed to its backend as it is, and the
backend's reply relayed back as it is: its status, body and the headers that matter (Retry-After,
rate limits), a stream chunk by chunk. Only `moa` and optillm's own routing (the
`optillm_approach` field, `<optillm_approach>` tags) are taken out; nothing is retried, so a 429
reaches the client at once, with the backend's Retry-After.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from selfmoa.approaches import ClientBackend, SelfMoAError, WireBackend
from selfmoa.approaches.backend import as_dict
from selfmoa.approaches.classify import classify

from .config import request_timeout
from .host import Route
from .http import ClientGone, bearer, error_from, unless_disconnected
from .replies import sse
from .scope import RequestScope
from .service import Service
from .streaming import EventStream

KEPT_HEADERS = ("content-type", "retry-after", "x-request-id", "openai-processing-ms")
OURS = ("moa", "optillm_approach")


async def relay(request: Request, service: Service, body: dict[str, Any], route: Route,
                scope: RequestScope) -> Response:
    sent = {k: v for k, v in body.items() if k not in OURS}
    sent["model"] = route.model
    if isinstance(sent.get("messages"), list) and all(isinstance(m, dict) for m in sent["messages"]):
        sent["messages"] = service.host.without_tags(sent["messages"])
    backend = service.upstream.backend(bearer(request))
    timeout = scope.deadline(request_timeout(service.runtime.config)).remaining()
    try:
        if isinstance(backend, WireBackend):
            return await _over_the_wire(backend, sent, timeout)
        if isinstance(backend, ClientBackend):
            return await _through_the_client(backend, sent, timeout)
    except SelfMoAError as error:
        return error_from(error)
    raise TypeError(f"no pass-through for {type(backend).__name__}")  # pragma: no cover


async def _over_the_wire(backend: WireBackend, sent: dict[str, Any], timeout: float) -> Response:
    try:
        response = await backend.request(sent, timeout)
    except Exception as error:
        raise classify(str(sent.get("model")), error) from None
    headers = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
    if response.status >= 400 or not response.headers.get("content-type", "").startswith("text/event-stream"):
        try:
            data = await response.read()
        finally:
            response.release()
        return Response(data, status_code=response.status, headers=headers)
    return _RelayedStream(response, headers)


class _RelayedStream(Response):
    """The backend's event stream, bytes as they come; closing it closes the backend's."""

    def __init__(self, upstream: aiohttp.ClientResponse, headers: dict[str, str]) -> None:
        self.upstream = upstream
        self.status_code = upstream.status
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await unless_disconnected(receive, self._relay(send))
        except ClientGone:
            pass
        finally:
            self.upstream.close()

    async def _relay(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for piece in self.upstream.content.iter_any():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        except (aiohttp.ClientError, TimeoutError) as error:  # after the first byte: an error event
            failure = classify(str(self.upstream.url), error)
            await send({"type": "http.response.body", "more_body": True,
                        "body": sse({"error": {"message": str(failure), "type": "upstream_error"}}).encode()})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _through_the_client(backend: ClientBackend, sent: dict[str, Any], timeout: float) -> Response:
    """Providers spoken to through an SDK (LiteLLM, Azure, Cerebras): their reply objects as JSON."""
    model, messages = str(sent.pop("model")), sent.pop("messages", [])
    reply = await backend.raw(model, messages, sent, timeout)
    if not sent.get("stream"):
        return JSONResponse(as_dict(reply))

    async def chunks() -> Any:
        async for chunk in reply:
            yield sse(as_dict(chunk))
        yield sse("[DONE]")

    async def close() -> None:
        closer = getattr(reply, "close", None)
        if callable(closer):
            result = closer()
            if hasattr(result, "__await__"):
                await result

    return EventStream(chunks(), close)

