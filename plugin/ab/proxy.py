"""A local `selfmoa serve` subprocess in front of a backend, for `selfmoa ab --serve`, the demo and the bench.

It gets its own session (a terminal's Ctrl-C reaches only us, and we stop it, quietly) and, on
Linux, the signal to stop when we die, so even `kill -9` of the harness leaves no proxy behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy
DUMMY_KEY = "sk-selfmoa-ab-no-key"
_PR_SET_PDEATHSIG = 1


class ProxyError(RuntimeError):
    """`selfmoa serve` did not start; the message carries the end of its log."""


def local_http(url: str, method: str = "GET") -> bytes:
    """A plain HTTP request on the loopback; errors (OSError) propagate."""
    with _LOOPBACK.open(urllib.request.Request(url, method=method), timeout=10) as response:
        return bytes(response.read())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_command(base_url: str, port: int) -> list[str]:
    script = Path(sys.executable).parent / "selfmoa"
    launcher = [str(script)] if script.exists() else [sys.executable, "-c", "from selfmoa.cli import main; main()"]
    return [*launcher, "serve", "--base-url", base_url, "--host", "127.0.0.1", "--port", str(port)]


def serve_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment with its key (a dummy when there is none) and no HTTP proxy for the loopback."""
    return {**environ, "OPENAI_API_KEY": environ.get("OPENAI_API_KEY") or DUMMY_KEY,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            local_http(f"{url}/health")
            return
        except OSError:  # not listening yet
            time.sleep(0.1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise ProxyError(f"`selfmoa serve` did not start (exit code {process.poll()}):\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@contextmanager
def local_proxy(base_url: str, log: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """`selfmoa serve --base-url base_url` on a free loopback port; yields its root URL; always stopped."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(serve_command(base_url, port), env=serve_env(env or os.environ), stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                   preexec_fn=_die_with_parent)
        try:
            _wait_healthy(f"http://127.0.0.1:{port}", process, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            _stop(process)
