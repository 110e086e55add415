"""A scripted OpenAI-compatible endpoint over real HTTP, for `selfmoa ab` tests.

`ScriptedEndpoint(script)` serves POST /v1/chat/completions by calling `script(body)`, which returns
(status, json body); every request body is recorded. GET /v1/models lists `models` (owned by `owner`).
It speaks the reply shapes `selfmoa ab` must read: full usage and a `selfmoa` trace (native serving),
completion tokens only (optillm's own approaches), errors.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Script = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def completion(content: str, *, prompt_tokens: int | None = 10, completion_tokens: int = 5,
               trace: dict[str, Any] | None = None, cached_tokens: int | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = {"completion_tokens": completion_tokens}
    if prompt_tokens is not None:
        usage.update(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens + completion_tokens)
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                         "finish_reason": "stop"}], "usage": usage}
    if trace is not None:
        body["selfmoa"] = trace
    return body


def error(status: int, message: str, param: str | None = None) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}


def number_in(body: dict[str, Any]) -> int:
    """The task number N of a prompt "Say N." (the scripted tasks' form)."""
    text = body["messages"][-1]["content"]
    return int(re.search(r"Say (\d+)\.", text).group(1))  # type: ignore[union-attr]


def say_tasks(count: int) -> str:
    return "".join(json.dumps({"id": f"t{i}", "prompt": f"Say {i}.", "answer": i}) + "\n" for i in range(count))


class ScriptedEndpoint:
    def __init__(self, script: Script, models: tuple[str, ...] = ("m",), owner: str = "someone") -> None:
        self.script, self.models, self.owner = script, models, owner
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                data = [{"id": m, "object": "model", "owned_by": endpoint.owner} for m in endpoint.models]
                self._send(200, {"object": "list", "data": data})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with endpoint._lock:
                    endpoint.bodies.append(body)
                self._send(*endpoint.script(body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        with self._lock:
            return [b for b in self.bodies if b["model"] == model]

    def __enter__(self) -> ScriptedEndpoint:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()
