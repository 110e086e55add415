"""A scriptable `Backend` for unit tests of the algorithms (no HTTP, no client library).

`FakeBackend(script)` calls `script(call)` for every call; the script returns a list of outputs
(one per choice: a string, a `(content, finish_reason)` tuple or a `Choice`), or an awaitable of
one (`later(seconds, outputs)`, `hang(call)`), or raises, e.g. `status_error(429, ...)` (an `openai`
error, classified as the real adapters do) or any `SelfMoAError`. Every call is recorded; a call's
kind is read from the prompt's structure (fenced candidates, the select reply form, the
references instructions), never from its wording. A call cancelled by its caller is marked so.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from selfmoa.approaches import Choice, Chunk, Completion, Delta, Usage
from selfmoa.approaches.classify import classify
from selfmoa.approaches.prompts import CANDIDATE_PATTERN, REFERENCES_INSTRUCTIONS, SELECT_REPLY_FORM

_REFERENCES_HEAD = REFERENCES_INSTRUCTIONS.split("{candidates}")[0][:60]


@dataclass
class Call:
    model: str
    messages: list[dict[str, Any]]
    n: int
    params: dict[str, Any]
    stream: bool = False
    timeout: float = 0.0
    started: float = 0.0
    ended: float = 0.0
    cancelled: bool = False

    @property
    def prompt(self) -> str:
        return "\n".join(_text(m.get("content")) for m in self.messages)

    @property
    def candidates(self) -> list[str]:
        return [text for _, text in CANDIDATE_PATTERN.findall(self.prompt)]

    @property
    def kind(self) -> str:
        if not self.candidates:
            return "propose"
        if SELECT_REPLY_FORM in self.prompt:
            return "select"
        return "references" if _REFERENCES_HEAD in self.prompt else "aggregate"


Script = Callable[[Call], Any]


def _text(content: Any) -> str:
    """A message's content as text (content parts joined)."""
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)


def status_error(status: int, message: str = "error", *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> openai.APIStatusError:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    request = httpx.Request("POST", "http://fake/v1/chat/completions")
    response = httpx.Response(status, request=request, json=body, headers=headers or {})
    kinds = {400: openai.BadRequestError, 404: openai.NotFoundError, 429: openai.RateLimitError}
    kind = kinds.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return kind(message, response=response, body=body)


async def hang(call: Call) -> list[str]:
    """A call that never answers: it ends when its own timeout does, as a real client's would."""
    await asyncio.sleep(call.timeout)
    raise openai.APITimeoutError(request=httpx.Request("POST", "http://fake/v1/chat/completions"))


async def later(seconds: float, outputs: Any) -> Any:
    """`outputs`, after `seconds` (a slow call)."""
    await asyncio.sleep(seconds)
    return outputs


def default_script(call: Call) -> list[str]:
    """Proposals say which model wrote them; aggregations say how many candidates they read."""
    if call.kind == "select":
        return ["<best>2</best>"]
    if call.kind == "aggregate":
        return [f"synthesis of {len(call.candidates)}"]
    return [f"{call.model} answer" for _ in range(call.n)]


def as_choice(output: Any) -> Choice:
    if isinstance(output, Choice):
        return output
    content, finish = output if isinstance(output, tuple) else (output, "stop")
    return Choice(content=content, finish_reason=finish)


@dataclass
class FakeBackend:
    script: Script = default_script
    calls: list[Call] = field(default_factory=list)
    delay: float = 0.0

    async def complete(self, model: str, messages: Sequence[dict[str, Any]], params: Mapping[str, Any], *,
                       timeout: float, headers: Mapping[str, str] | None = None) -> Completion:
        choices = await self._run(model, messages, params, timeout, stream=False)
        return Completion(choices=choices, usage=Usage(prompt_tokens=5, completion_tokens=10 * len(choices)))

    @asynccontextmanager
    async def stream(self, model: str, messages: Sequence[dict[str, Any]], params: Mapping[str, Any], *,
                     timeout: float, headers: Mapping[str, str] | None = None) -> AsyncIterator[AsyncIterator[Chunk]]:
        choice = (await self._run(model, messages, params, timeout, stream=True))[0]
        yield _chunks(choice)

    async def _run(self, model: str, messages: Sequence[dict[str, Any]], params: Mapping[str, Any], timeout: float,
                   stream: bool) -> list[Choice]:
        rest = {k: v for k, v in params.items() if k != "n"}
        call = Call(model=model, messages=list(messages), n=int(params.get("n", 1)), params=rest, stream=stream,
                    timeout=timeout, started=time.monotonic())
        self.calls.append(call)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            outputs = self.script(call)
            if inspect.isawaitable(outputs):
                outputs = await outputs
            return [as_choice(output) for output in outputs]
        except asyncio.CancelledError:
            call.cancelled = True
            raise
        except Exception as error:
            raise classify(model, error) from None
        finally:
            call.ended = time.monotonic()

    def of_kind(self, kind: str) -> list[Call]:
        return [c for c in self.calls if c.kind == kind]


async def _chunks(choice: Choice) -> AsyncIterator[Chunk]:
    """A reply streamed word by word, then its finish and its usage, as servers send them."""
    for piece in re.findall(r"\s*\S+\s*|\s+", choice.content):
        yield Chunk(deltas=[Delta(content=piece)])
    calls = tuple({"index": i, **call} for i, call in enumerate(choice.tool_calls))
    if calls:
        yield Chunk(deltas=[Delta(tool_calls=calls)])
    yield Chunk(deltas=[Delta(finish_reason=choice.finish_reason)])
    yield Chunk(usage=Usage(calls=1, prompt_tokens=5, completion_tokens=10))
