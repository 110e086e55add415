"""HTTP plumbing shared by our routes: OpenAI-shaped error responses, and work that stops when
its client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from selfmoa.approaches import SelfMoAError
from selfmoa.approaches.tasks import cancel_and_wait

from .replies import error_body, error_headers

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected: its request's work was cancelled, and nobody is left to answer."""


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   retry_after: float | None = None) -> Response:
    """An OpenAI-shaped error, so clients raise the right exception with our message."""
    return JSONResponse(error_body(status, message, param=param, code=code), status_code=status,
                        headers=error_headers(status, retry_after))


def error_from(error: SelfMoAError) -> Response:
    return error_response(error.status, str(error), param=getattr(error, "param", None), code=error.code,
                          retry_after=error.retry_after)


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """`work`, cancelled at once if the client disconnects first (then `ClientGone`)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(disconnected(receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait([pending for pending in (task, watch) if not pending.done()])
    if not task.cancelled():
        return task.result()
    raise ClientGone()


async def disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the request body already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    return header.split("Bearer ", 1)[1].strip() if header and header.startswith("Bearer ") else None


def json_error_for(exc: Any) -> Response:
    """Starlette's own HTTP errors (404, 405) in the OpenAI shape."""
    status = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", "error")
    return error_response(status, str(detail), code=str(detail).lower().replace(" ", "_"))
