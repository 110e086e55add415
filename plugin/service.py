"""The process's resources, owned by the ASGI lifespan and handed to every route: optillm (its
settings, routing and app), the runtime (configuration, backend memory, secrets), one connection
pool for every backend call, the backends built on it, the threads optillm's own (synchronous)
approaches run in, the telemetry (metrics, traces) and what operating it needs (requests in
flight, draining). Opened at start-up, closed at
shutdown, after the last request: nothing process-wide lives in a module global.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from selfmoa.approaches import DEFAULT_ENDPOINT, Backend, new_session

from .host import Optillm
from .operating import Operating
from .runtime import Runtime
from .telemetry import Telemetry
from .upstream import Upstream

# optillm's own approaches are synchronous: each run waits in one of these threads (ours never do)
OPTILLM_THREADS = 64


@dataclass(frozen=True)
class Service:
    host: Optillm
    runtime: Runtime
    session: aiohttp.ClientSession
    upstream: Upstream
    endpoints: dict[str, Backend]
    pool: ThreadPoolExecutor
    telemetry: Telemetry
    operating: Operating

    @classmethod
    @asynccontextmanager
    async def open(cls, host: Optillm, runtime: Runtime, telemetry: Telemetry,
                   operating: Operating) -> AsyncIterator[Service]:
        session = new_session()
        pool = ThreadPoolExecutor(max_workers=OPTILLM_THREADS, thread_name_prefix="optillm-approach")
        try:
            yield cls(host, runtime, session, Upstream(host.settings, session), runtime.endpoints(session), pool,
                      telemetry, operating)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            await session.close()
            if telemetry.tracing is not None:
                telemetry.tracing.shutdown()  # what is left of the spans goes out

    def backends(self, bearer: str | None) -> dict[str, Backend]:
        """Every endpoint a request may use: the default one (as the request's key selects it) and
        the server file's named ones."""
        return {DEFAULT_ENDPOINT: self.upstream.backend(bearer), **self.endpoints}
