"""Operating `selfmoa serve`: every request gets an id (`x-request-id`, taken from the request or
made, echoed on the reply); every chat request is refused with a 503 and a Retry-After while the
server drains or holds `--max-in-flight` requests already, else counted in flight, timed,
reported (metrics, span) and logged in one line when it ends. `Drain` is the graceful shutdown:
new requests refused, `/ready` 503, the requests in flight given their time to finish.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import request_line
from .replies import error_body
from .telemetry import RequestTelemetry

log = logging.getLogger("selfmoa")
CHAT_PATH = "/v1/chat/completions"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")  # what we take from a client, else we make one
RETRY_AFTER = 1.0  # seconds a refused client is told to wait


@dataclass
class InFlight:
    telemetry: RequestTelemetry
    started: float = field(default_factory=time.monotonic)


@dataclass
class Operating:
    """The process's requests in flight, its limit, and whether it is draining."""

    max_in_flight: int | None = None
    draining: bool = False
    in_flight: dict[str, InFlight] = field(default_factory=dict)

    def refusal(self) -> str | None:
        if self.draining:
            return "draining"
        if self.max_in_flight is not None and len(self.in_flight) >= self.max_in_flight:
            return "max_in_flight"
        return None

    async def drain(self, timeout: float) -> None:
        """Refuse new requests; wait for those in flight (at most `timeout` seconds), and say
        which were still running when the time was up."""
        self.draining = True
        log.info("selfmoa: draining: %d request(s) in flight, %g s to finish", len(self.in_flight), timeout)
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for request_id, flight in self.in_flight.items():
            log.warning("selfmoa: drained with request_id=%s approach=%s still in flight after %.1fs: cut",
                        request_id, flight.telemetry.approach, time.monotonic() - flight.started)


def drain_on_signals(operating: Operating, timeout: float) -> None:
    """The first SIGTERM or SIGINT drains (`Operating.drain`), then stops uvicorn's server as its
    own handler would (without re-raising the signal: the exit status stays 0); a second one is
    uvicorn's, at once. Installed once the server runs, over uvicorn's own handlers."""
    if threading.current_thread() is not threading.main_thread():
        return  # a server run in a thread (tests): signals are its host's business
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        uvicorns = signal.getsignal(number)
        server = getattr(uvicorns, "__self__", None)
        if not isinstance(server, uvicorn.Server) or not callable(uvicorns):
            log.warning("selfmoa: not run by uvicorn's server: %s stops without draining", signal.Signals(number).name)
            continue

        def handle(received: int, frame: FrameType | None, server: Any = server, uvicorns: Any = uvicorns) -> None:
            if operating.draining:
                uvicorns(received, frame)
                return
            operating.draining = True
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(_drain_then_stop(operating, timeout, server)))

        signal.signal(number, handle)


async def _drain_then_stop(operating: Operating, timeout: float, server: Any) -> None:
    await operating.drain(timeout)
    server.should_exit = True


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers") or []:
        if name == b"x-request-id":
            taken = str(value.decode("latin-1"))
            if _REQUEST_ID.fullmatch(taken):
                return taken
    return f"req_{secrets.token_hex(12)}"


class Operations:
    """The ASGI middleware (see the module docstring); finds the service in the app's state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        send = _with_request_id(send, request_id)
        if scope["path"] != CHAT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        service = scope["app"].state.service
        refused = service.operating.refusal()
        if refused is not None:
            service.telemetry.metrics.refused.labels(refused).inc()
            await _refuse(send, refused)
            return
        await self._counted(scope, receive, send, service, request_id)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, service: Any, request_id: str) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
        telemetry = service.telemetry.request(request_id, headers, scope["path"])
        scope["state"]["telemetry"] = telemetry
        operating, gauge = service.operating, service.telemetry.metrics.in_flight
        operating.in_flight[request_id] = InFlight(telemetry)
        gauge.inc()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and message.get("more_body") and message.get("body"):
                telemetry.first_byte()  # a stream's first piece (a whole reply has no more_body)
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            operating.in_flight.pop(request_id, None)
            gauge.dec()
            telemetry.finish(status)
            request_line({"approach": telemetry.approach, **telemetry.summary, "status": status,
                          "request_id": request_id, "wall": time.monotonic() - telemetry.started})


def _with_request_id(send: Send, request_id: str) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []),
                                              (b"x-request-id", request_id.encode())]}
        await send(message)

    return sending


async def _refuse(send: Send, reason: str) -> None:
    message = ("the server is shutting down: send the request to another replica" if reason == "draining"
               else "the server has as many requests in flight as it takes (--max-in-flight): retry shortly")
    body = json.dumps(error_body(503, message, code=reason)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"retry-after", str(round(RETRY_AFTER)).encode()),
               (b"x-should-retry", b"true")]  # nothing was done for it: a retry costs nothing
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
