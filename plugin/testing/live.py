"""Live processes for HTTP tests: a real `selfmoa serve` (or stock `optillm`) on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import openai

BIN = Path(sys.executable).parent
CLIENT_KEY = "sk-client-secret-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proxy:
    """A proxy process on 127.0.0.1; its output goes to `log_path` for assertions on logging."""

    def __init__(self, command: Sequence[str], *, log_path: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        full_env = {**os.environ, "OPENAI_API_KEY": "sk-upstream-secret-0123456789", **(env or {})}
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)], cwd=cwd, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    @classmethod
    def selfmoa(cls, base_url: str, *args: str, log_path: Path, config: Path | None = None,
                env: dict[str, str] | None = None) -> Proxy:
        extra = ["--moa-config", str(config)] if config else []
        return cls([str(BIN / "selfmoa"), "serve", "--base-url", base_url, *extra, *args], log_path=log_path, env=env)

    @classmethod
    def configured(cls, base_url: str, config_text: str, folder: Path, *, env: dict[str, str] | None = None) -> Proxy:
        """`selfmoa serve` with `config_text` as its server YAML; its config and log go in `folder`."""
        config = folder / "selfmoa.yaml"
        config.write_text(config_text)
        return cls.selfmoa(base_url, log_path=folder / "proxy.log", config=config, env=env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=CLIENT_KEY, max_retries=0,
                             timeout=options.pop("timeout", 60), **options)

    def post(self, body: Any, timeout: float = 60, headers: dict[str, str] | None = None) -> httpx.Response:
        sent = {"Authorization": f"Bearer {CLIENT_KEY}", **(headers or {})}
        return httpx.post(f"{self.url}/v1/chat/completions", json=body, headers=sent, timeout=timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_once(self, text: str, times: int = 1, timeout: float = 10) -> str:
        """The log, once `text` is in it `times` times (a request's line follows its reply)."""
        deadline = time.monotonic() + timeout
        while (log := self.log()).count(text) < times and time.monotonic() < deadline:
            time.sleep(0.05)
        return log

    def alive(self) -> bool:
        return self.process.poll() is None and httpx.get(f"{self.url}/health", timeout=5).status_code == 200

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.close()
        raise RuntimeError(f"proxy did not start within 60 s:\n{self.log()[-3000:]}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class SimLog:
    """The simulator's record of the backend calls it received."""

    def __init__(self, root_url: str) -> None:
        self.root_url = root_url

    def calls(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.root_url}/sim/calls", timeout=10).json())

    def clear(self) -> None:
        httpx.delete(f"{self.root_url}/sim/calls", timeout=10)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.calls() if c["kind"] == kind]

    def patch(self, models: dict[str, dict[str, Any]]) -> None:
        response = httpx.post(f"{self.root_url}/sim/profile", json={"models": models}, timeout=10)
        response.raise_for_status()
