"""The ASGI app `selfmoa serve` runs on uvicorn: our routes first (chat, health, readiness,
metrics), optillm's own Flask app behind a WSGI adapter for the rest; in front of every route a
request id and, for chat, the operating rules (`operating.py`), then client authentication on
every route but `/health` and `/ready`; and a lifespan that owns the process's resources
(`service.py`).

`create_app` builds it from the serve options; with `--workers N`, each worker process builds its
own from the options `selfmoa serve` put in its environment (`from_environment`).
"""

from __future__ import annotations

import gc
import hmac
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field

from a2wsgi import WSGIMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import optillm_app
from .config import SLUGS
from .entry import make_run
from .host import Optillm
from .http import json_error_for
from .logs import use_format
from .metrics import Metrics, worker_exited
from .models import models
from .operating import Operating, Operations, drain_on_signals
from .plugins import load_plugin_files
from .redaction import redact_logs
from .replies import error_body
from .route import CHAT_PATH, chat
from .runtime import Runtime
from .service import Service
from .telemetry import Telemetry
from .tracing import Tracing

OPTIONS_ENV = "SELFMOA_SERVE_OPTIONS"  # how `selfmoa serve` hands its options to worker processes
OPEN_PATHS = ("/health", "/ready")  # probes carry no key; they tell nothing but that the server is up
GC_THRESHOLDS = (20_000, 20, 20)  # Python's are (700, 10, 10)


@dataclass(frozen=True)
class ServeOptions:
    """What `selfmoa serve` was asked for: optillm's flags, and ours."""

    optillm_argv: list[str] = field(default_factory=list)
    config_path: str | None = None
    plugins_dir: str = ""
    workers: int = 1
    graceful_timeout: float = 30.0
    max_in_flight: int | None = None
    log_format: str = "text"

    def to_environment(self) -> None:
        os.environ[OPTIONS_ENV] = json.dumps(asdict(self))

    @classmethod
    def from_environment(cls) -> ServeOptions:
        return cls(**json.loads(os.environ[OPTIONS_ENV]))


def configured_host(options: ServeOptions) -> Optillm:
    """optillm, loaded and configured as its `main()` would be, with our approaches registered."""
    host = Optillm.load()
    host.configure(options.optillm_argv, {slug: make_run(slug) for slug in SLUGS}, options.plugins_dir,
                   load_plugin_files)
    return host


def create_app(options: ServeOptions, host: Optillm | None = None, telemetry: Telemetry | None = None) -> Starlette:
    runtime = Runtime.load(options.config_path)
    redact_logs(runtime.secrets)
    use_format(options.log_format, runtime.secrets)
    host = host or configured_host(options)
    runtime = runtime.with_secret(str(host.settings.get("optillm_api_key") or ""))  # `--optillm-api-key`'s too
    redact_logs(runtime.secrets)
    use_format(options.log_format, runtime.secrets)
    optillm_app.install(host.app, runtime)
    telemetry = telemetry or Telemetry(Metrics(), Tracing.from_environment())
    operating = Operating(max_in_flight=options.max_in_flight)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Service.open(host, runtime, telemetry, operating) as service:
            app.state.service = service
            drain_on_signals(operating, options.graceful_timeout)
            # optillm and LiteLLM leave millions of objects behind at import: out of the collector's
            # way, so that a collection during a burst scans only what the requests made; and fewer
            # collections (requests free what they make by reference counting; cycles are rare)
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            try:
                yield
            finally:
                worker_exited(os.getpid())

    app = Starlette(
        routes=[Route(CHAT_PATH, chat, methods=["POST"]), Route("/health", health, methods=["GET"]),
                Route("/ready", ready, methods=["GET"]), Route("/metrics", metrics, methods=["GET"]),
                Route("/v1/models", models, methods=["GET"]),
                Mount("/", WSGIMiddleware(host.app))],  # type: ignore[arg-type]
        middleware=[Middleware(Operations),
                    Middleware(ClientAuth, key=str(host.settings.get("optillm_api_key") or ""))],
        exception_handlers={404: _not_found, 405: _not_found},
        lifespan=lifespan,
    )
    return app


def from_environment() -> Starlette:
    """The app of one `--workers` worker process."""
    return create_app(ServeOptions.from_environment())


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness: 200 while the server takes requests, 503 once it drains (before it starts, it
    does not answer at all)."""
    if request.app.state.service.operating.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    """Prometheus' text format, every worker's values summed (`metrics.py`)."""
    body = request.app.state.service.telemetry.metrics.exposition()
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def _not_found(request: Request, exc: Exception) -> Response:
    return json_error_for(exc)


class ClientAuth:
    """With `--optillm-api-key` (or OPTILLM_API_KEY) set, every route but `/health` answers 401
    without that bearer key, compared in constant time, before any work is done for the request."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.key or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps(error_body(401, "Invalid API key: send it as 'Authorization: Bearer <key>'")).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})

    def _allowed(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        token = header[len(b"Bearer "):].strip() if header.startswith(b"Bearer ") else b""
        return hmac.compare_digest(token, self.key)

