"""A plain model through `selfmoa serve`: the request relayed to its backend as it is, and the
backend's reply relayed back as it is: its status, body and the headers that matter (Retry-After,
rate limits), a stream chunk by chunk. Only `moa` and optillm's own routing (the
`optillm_approach` field, `<optillm_approach>` tags) are taken out; nothing is retried, so a 429
reaches the client at once, with the backend's Retry-After.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from selfmoa.approaches import ClientBackend, SelfMoAError, Usage, WireBackend
from selfmoa.approaches.backend import as_dict, parse_usage
from selfmoa.approaches.classify import classify
from selfmoa.approaches.watch import Watch

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
    watch = request.state.telemetry.call(route.model, "plain")
    try:
        if isinstance(backend, WireBackend):
            return await _over_the_wire(backend, sent, timeout, watch)
        if isinstance(backend, ClientBackend):
            return await _through_the_client(backend, sent, timeout, watch)
    except SelfMoAError as error:
        watch.end("error", None)
        return error_from(error)
    raise TypeError(f"no pass-through for {type(backend).__name__}")  # pragma: no cover


async def _over_the_wire(backend: WireBackend, sent: dict[str, Any], timeout: float, watch: Watch) -> Response:
    try:
        response = await backend.request(sent, timeout, watch.headers)
    except Exception as error:
        raise classify(str(sent.get("model")), error) from None
    headers = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
    if response.status >= 400 or not response.headers.get("content-type", "").startswith("text/event-stream"):
        try:
            data = await response.read()
        finally:
            response.release()
        watch.end("ok" if response.status < 400 else "error", _usage_in(data) if response.status < 400 else None)
        return Response(data, status_code=response.status, headers=headers)
    return _RelayedStream(response, headers, watch)


def _usage_in(data: bytes) -> Usage | None:
    """The usage a backend's JSON reports (or none, when it is not JSON)."""
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return parse_usage(body.get("usage")) if isinstance(body, dict) else None


class _RelayedStream(Response):
    """The backend's event stream, bytes as they come; closing it closes the backend's. The usage
    chunk is read on its way through, for the metrics."""

    def __init__(self, upstream: aiohttp.ClientResponse, headers: dict[str, str], watch: Watch) -> None:
        self.upstream, self.watch = upstream, watch
        self.status_code = upstream.status
        self.background = None
        self.init_headers(headers)
        self._lines = b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "cancelled"
        try:
            await unless_disconnected(receive, self._relay(send))
            outcome = "ok"
        except ClientGone:
            pass
        finally:
            self.upstream.close()
            self.watch.end(outcome, self._usage())

    async def _relay(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for piece in self.upstream.content.iter_any():
                self._lines = (self._lines + piece)[-8192:]  # the end of the stream is where usage is
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        except (aiohttp.ClientError, TimeoutError) as error:  # after the first byte: an error event
            failure = classify(str(self.upstream.url), error)
            await send({"type": "http.response.body", "more_body": True,
                        "body": sse({"error": {"message": str(failure), "type": "upstream_error"}}).encode()})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _usage(self) -> Usage | None:
        for line in reversed(self._lines.split(b"\n")):
            if line.startswith(b"data: {") and b'"usage"' in line:
                found = _usage_in(line[6:])
                if found is not None and (found.prompt_tokens or found.completion_tokens):
                    return found
        return None


async def _through_the_client(backend: ClientBackend, sent: dict[str, Any], timeout: float,
                              watch: Watch) -> Response:
    """Providers spoken to through an SDK (LiteLLM, Azure, Cerebras): their reply objects as JSON."""
    model, messages = str(sent.pop("model")), sent.pop("messages", [])
    reply = await backend.raw(model, messages, sent, timeout, watch.headers)
    if not sent.get("stream"):
        body = as_dict(reply)
        watch.end("ok", parse_usage(body.get("usage")))
        return JSONResponse(body)
    watch.end("ok", None)

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

