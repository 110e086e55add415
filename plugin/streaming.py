"""Streaming our approaches' answers: the n runs of a request report into one inbox, and their
events become `chat.completion.chunk`s as they come. The runs are tasks owned by the request:
they end with its stream, whether it finished, failed, or its client went away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from selfmoa.approaches import AnswerDelta, Done, Event, Outcome, SelfMoAError
from selfmoa.approaches.tasks import cancel_and_wait

from .answering import Job, PublicError, answer
from .http import ClientGone, unless_disconnected
from .replies import Reply, delta_body, error_body, finish_reason, sse, usage_body

_END = object()


class Runs:
    """The runs of one streamed request, as tasks reporting `(choice index, event)` to one inbox."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.jobs = jobs
        self.inbox: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        self.tasks = [asyncio.ensure_future(self._run(index, job)) for index, job in enumerate(jobs)]

    async def _run(self, index: int, job: Job) -> None:
        try:
            await answer(job, lambda event: self.inbox.put_nowait((index, event)), stream=True)
        except SelfMoAError as error:
            self.inbox.put_nowait((index, error))
        finally:
            self.inbox.put_nowait((index, _END))

    async def events(self) -> AsyncIterator[tuple[int, Event]]:
        """Every run's events as they come; the first failure ends them all (raised)."""
        ended = 0
        while ended < len(self.tasks):
            index, item = await self.inbox.get()
            if item is _END:
                ended += 1
            elif isinstance(item, SelfMoAError):
                raise item
            else:
                yield index, item

    async def close(self) -> None:
        await cancel_and_wait(self.tasks)


async def head_of(runs: Runs) -> tuple[list[tuple[int, Event]], AsyncIterator[tuple[int, Event]]]:
    """The events up to the answer's first piece (an error before it is still an HTTP status),
    and the rest of them."""
    events = runs.events()
    head: list[tuple[int, Event]] = []
    async for item in events:
        head.append(item)
        if isinstance(item[1], (AnswerDelta, Done)):
            break
    return head, events


class EventStream(Response):
    """Server-sent events; the request's runs are cancelled when the stream ends, however it ends
    (a client that goes away included: we watch for it, since nothing is sent while we wait)."""

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[str], close: Callable[[], Any]) -> None:
        self.chunks, self.close = chunks, close
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await unless_disconnected(receive, self._send(send))
        except ClientGone:
            pass
        finally:
            await self.close()

    async def _send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.chunks:
            await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class Chunks:
    """Our events as the client's chunks: deltas, a finish chunk per choice, the usage chunk."""

    def __init__(self, reply: Reply, jobs: Sequence[Job], include_usage: bool,
                 trace: Callable[[Job, Outcome], dict[str, Any]], done: Callable[[list[Outcome]], None]) -> None:
        self.reply, self.jobs, self.include_usage, self.trace = reply, jobs, include_usage, trace
        self.done = done
        self.started: set[int] = set()
        self.outcomes: dict[int, Outcome] = {}

    async def of(self, items: AsyncIterator[tuple[int, Event]]) -> AsyncIterator[str]:
        usage_slot = {"usage": None} if self.include_usage else {}
        try:
            async for index, event in items:
                if isinstance(event, AnswerDelta):
                    delta = delta_body(event.delta, first=index not in self.started)
                    if delta is not None:
                        self.started.add(index)
                        yield self.reply.chunk([{"index": index, "delta": delta, "finish_reason": None,
                                                 "logprobs": event.delta.logprobs}], **usage_slot)
                elif isinstance(event, Done):
                    self.outcomes[index] = event.outcome
                    yield self._finish(index, event.outcome, usage_slot)
            self.done(list(self.outcomes.values()))
            if self.include_usage:
                yield self.reply.chunk([], usage=usage_body(o.usage for o in self.outcomes.values()))
            yield sse("[DONE]")
        except SelfMoAError as error:
            status = error.status if isinstance(error, PublicError) else 502
            yield sse(error_body(status, str(error), code=error.code))

    def _finish(self, index: int, done: Outcome, usage_slot: dict[str, Any]) -> str:
        delta = {} if index in self.started else {"role": "assistant", "content": ""}
        extra = dict(usage_slot)
        job = self.jobs[index]
        if job.plan.trace:
            extra["selfmoa"] = self.trace(job, done)
        return self.reply.chunk([{"index": index, "delta": delta, "finish_reason": finish_reason(done.answer),
                                  "logprobs": None}], **extra)


async def chained(head: Sequence[tuple[int, Event]], rest: AsyncIterator[tuple[int, Event]]
                  ) -> AsyncIterator[tuple[int, Event]]:
    for item in head:
        yield item
    async for item in rest:
        yield item
