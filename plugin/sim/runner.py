"""Running the simulator: `serve()` in the foreground (the `selfmoa sim` command) or a
`BackgroundSim` on its own thread (tests and benchmarks in one process).

Both bind before announcing themselves, so port 0 works and the announced port is the real one.
Access logging is off: request lines are harmless, but nothing about clients should leak.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from types import TracebackType

from aiohttp import web

from .profile import Profile, load_profile
from .server import build_app


def _with_time_scale(profile: Profile, time_scale: float | None) -> Profile:
    if time_scale is None:
        return profile
    return Profile.model_validate({**profile.model_dump(), "time_scale": time_scale})


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Bind and start serving; returns the runner and the port actually bound."""
    # handler_cancellation: a client that disconnects cancels its handler (hangs end cleanly).
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)


def serve(host: str = "127.0.0.1", port: int = 8900, profile_path: str | Path | None = None, seed: int = 0,
          time_scale: float | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM); prints one line with the base URL once ready."""
    app = build_app(_with_time_scale(load_profile(profile_path), time_scale), seed)

    async def main() -> None:
        runner, bound = await _start(app, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or not Unix
                pass
        print(f"selfmoa sim listening on {_url(host, bound)}", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


class BackgroundSim:
    """A simulator serving from a daemon thread: `with BackgroundSim() as sim: sim.base_url`.

    Defaults suit tests: the bundled profile, time_scale 0 (no latency) and a free port.
    """

    def __init__(self, profile: Profile | None = None, seed: int = 0, time_scale: float | None = 0.0,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = build_app(_with_time_scale(profile or load_profile(), time_scale), seed)
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="selfmoa-sim", daemon=True)

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (ends with /v1)."""
        return _url(self.host, self.port)

    @property
    def root_url(self) -> str:
        """The server root, for /health and /sim/*."""
        return self.base_url[: -len("/v1")]

    def start(self) -> BackgroundSim:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the simulator failed to start: {self._error}") from self._error
        if not self._ready.is_set():
            raise RuntimeError("the simulator did not start within 30 s")
        return self

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start() instead of dying silently
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        runner, self.port = await _start(self.app, self.host, self.port)
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def __enter__(self) -> BackgroundSim:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
