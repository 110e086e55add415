"""A scriptable stand-in for an OpenAI client, for unit tests of the algorithms (no HTTP).

`FakeClient(script)` calls `script(call)` for every `chat.completions.create`; the script returns
a list of contents (one per choice, `(content, finish_reason)` tuples allowed) or raises, e.g.
`status_error(429, ...)`. Every call is recorded, with the candidates fenced in its prompt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import openai

from selfmoa.approaches.prompts import CANDIDATE_PATTERN


@dataclass
class Call:
    model: str
    messages: list[dict[str, Any]]
    n: int
    params: dict[str, Any]
    started: float = 0.0
    ended: float = 0.0

    @property
    def prompt(self) -> str:
        return "\n".join(str(m.get("content")) for m in self.messages)

    @property
    def candidates(self) -> list[str]:
        return [text for _, text in CANDIDATE_PATTERN.findall(self.prompt)]

    @property
    def kind(self) -> str:
        if not self.candidates:
            return "propose"
        if "<best>N</best>" in self.prompt:
            return "select"
        return "aggregate" if "write one single" in self.prompt else "references"


Script = Callable[[Call], Any]


def status_error(status: int, message: str = "error", *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> openai.APIStatusError:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    request = httpx.Request("POST", "http://fake/v1/chat/completions")
    response = httpx.Response(status, request=request, json=body, headers=headers or {})
    kinds = {400: openai.BadRequestError, 404: openai.NotFoundError, 429: openai.RateLimitError}
    kind = kinds.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return kind(message, response=response, body=body)


def default_script(call: Call) -> list[str]:
    """Proposals say which sample they are; aggregations say how many candidates they read."""
    if call.kind == "select":
        return ["<best>2</best>"]
    if call.kind == "aggregate":
        return [f"synthesis of {len(call.candidates)}"]
    return [f"{call.model} answer" for _ in range(call.n)]


@dataclass
class FakeClient:
    script: Script = default_script
    calls: list[Call] = field(default_factory=list)
    delay: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def with_options(self, **_: Any) -> FakeClient:
        return self

    def _create(self, *, model: str, messages: list[dict[str, Any]], n: int = 1, **params: Any) -> Any:
        call = Call(model=model, messages=messages, n=n, params=params, started=time.monotonic())
        with self._lock:
            self.calls.append(call)
        if self.delay:
            time.sleep(self.delay)
        try:
            outputs = self.script(call)
        finally:
            call.ended = time.monotonic()
        choices = []
        for output in outputs:
            content, finish = output if isinstance(output, tuple) else (output, "stop")
            message = SimpleNamespace(content=content, reasoning_content=None)
            choices.append(SimpleNamespace(message=message, finish_reason=finish))
        usage = SimpleNamespace(completion_tokens=10 * len(choices))
        return SimpleNamespace(choices=choices, usage=usage)

    def of_kind(self, kind: str) -> list[Call]:
        return [c for c in self.calls if c.kind == kind]
