"""`selfmoa demo`: the offline end-to-end demo (simulator + a real `selfmoa serve`, one request per approach).

Everything runs on 127.0.0.1 against the bundled SIMULATOR; no network, no key, no real model.
The approach list, `running_stack` and `ask` also drive `benchmarks/run.py`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from .sim import BackgroundSim, Task, extract_answer, load_tasks

DISCLAIMER = ("NOTE: the backend is a SIMULATOR (`selfmoa sim`, made-up models sim-strong/medium/weak). "
              "These numbers say nothing about real models.")
PROPOSERS = ["sim-strong", "sim-medium", "sim-weak"]
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy


@dataclass(frozen=True)
class Approach:
    name: str
    model: str
    moa: dict[str, Any] = field(default_factory=dict)


APPROACHES: tuple[Approach, ...] = (
    Approach("single", "sim-strong"),
    Approach("moa", "moa-sim-strong"),
    Approach("self_moa", "self_moa-sim-strong"),
    Approach("mixed_moa", "mixed_moa-sim-strong", {"proposers": PROPOSERS}),
    Approach("self_moa_seq", "self_moa_seq-sim-strong", {"samples": 12}),
    Approach("mixed_moa_seq", "mixed_moa_seq-sim-strong",
             {"proposers": [{"model": m, "samples": 4} for m in PROPOSERS]}),
)


@dataclass
class Result:
    approach: str
    task: Task
    latency: float
    answer: str | None = None
    tokens: int = 0
    calls: int = 0
    error: str | None = None

    @property
    def correct(self) -> bool:
        return self.error is None and self.answer == self.task.answer


@dataclass(frozen=True)
class Stack:
    """A running simulator and proxy; `client` is a shared (thread-safe) openai client without retries."""

    proxy_url: str
    sim_url: str
    client: openai.OpenAI

    def warm_up(self) -> None:
        """One untimed request, so the proxy's first-request costs land in no measurement."""
        self.client.chat.completions.create(model="sim-strong", messages=[{"role": "user", "content": "Hello"}])

    def clear_calls(self) -> None:
        """Empty the simulator's call log (`count_calls` then counts the backend calls made since)."""
        _local_http(f"{self.sim_url}/sim/calls", "DELETE")

    def count_calls(self) -> int:
        return len(json.loads(_local_http(f"{self.sim_url}/sim/calls")))


def _local_http(url: str, method: str = "GET") -> bytes:
    """A plain HTTP request on the loopback; errors (OSError) propagate."""
    with _LOOPBACK.open(urllib.request.Request(url, method=method), timeout=10) as response:
        return bytes(response.read())


def pick_tasks(count: int) -> list[Task]:
    """`count` bundled tasks, alternating between the arithmetic and the multiple-choice set."""
    sets = [load_tasks("arithmetic"), load_tasks("choice")]
    return [sets[i % 2][(i // 2) % len(sets[i % 2])] for i in range(count)]


def ask(client: openai.OpenAI, approach: Approach, task: Task) -> Result:
    """One request through the proxy; a failure is recorded in the result, not raised."""
    started = time.perf_counter()
    try:
        reply = client.chat.completions.create(model=approach.model, extra_body={"moa": approach.moa} if approach.moa
                                               else None, messages=[{"role": "user", "content": task.question}])
    except openai.OpenAIError as error:
        return Result(approach.name, task, time.perf_counter() - started, error=str(error)[:300])
    latency = time.perf_counter() - started
    tokens = reply.usage.completion_tokens if reply.usage else 0
    return Result(approach.name, task, latency, extract_answer(reply.choices[0].message.content or ""), tokens)


def _proxy_command(base_url: str, port: int) -> list[str]:
    script = Path(sys.executable).parent / "selfmoa"
    launcher = [str(script)] if script.exists() else [sys.executable, "-c", "from selfmoa.cli import main; main()"]
    return [*launcher, "serve", "--base-url", base_url, "--host", "127.0.0.1", "--port", str(port)]


def _proxy_env() -> dict[str, str]:
    """Our environment minus anything that could point the proxy elsewhere or reconfigure it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTILLM_", "SELFMOA_"))}
    return {**env, "OPENAI_API_KEY": "sk-simulator-needs-no-key", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            _local_http(f"{url}/health")
            return
        except OSError:  # not listening yet
            pass
        time.sleep(0.1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"`selfmoa serve` did not start (exit code {process.poll()}):\n{tail}")


@contextmanager
def _proxy(base_url: str, log: Path) -> Iterator[str]:
    """A real `selfmoa serve` subprocess on a free loopback port; always stopped on the way out."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with open(log, "wb") as out:
        # Its own session: a terminal's Ctrl-C reaches only us, and we stop the proxy ourselves, quietly.
        process = subprocess.Popen(_proxy_command(base_url, port), env=_proxy_env(), stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait_healthy(f"http://127.0.0.1:{port}", process, log)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def running_stack(time_scale: float) -> Iterator[Stack]:
    """The simulator (in this process) and `selfmoa serve` in front of it, warmed up.

    Meanwhile SIGTERM unwinds like Ctrl-C, so the `finally` blocks still stop what was started.
    """
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="selfmoa-demo-") as folder, \
                BackgroundSim(time_scale=time_scale) as sim, _proxy(sim.base_url, Path(folder) / "proxy.log") as url, \
                openai.OpenAI(base_url=f"{url}/v1", api_key="sk-demo-not-a-real-key", max_retries=0, timeout=120,
                              http_client=openai.DefaultHttpxClient(trust_env=False, timeout=120)) as client:
            stack = Stack(url, sim.root_url, client)
            stack.warm_up()
            yield stack
    finally:
        signal.signal(signal.SIGTERM, previous)


def _marks() -> tuple[str, str]:
    """Check mark and cross, or plain-text stand-ins where the terminal cannot print them."""
    try:
        "✓✗".encode(sys.stdout.encoding or "ascii")
        return "✓", "✗"
    except (UnicodeEncodeError, LookupError):
        return "ok", "x"


def _print_rows(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))


def print_answers(tasks: list[Task], results: list[Result]) -> None:
    good, bad = _marks()
    cells = {(r.task.id, r.approach): "ERROR" if r.error else f"{r.answer or '-'} {good if r.correct else bad}"
             for r in results}
    rows = [["task", "expected", *(a.name for a in APPROACHES)]]
    _print_rows(rows + [[t.id, t.answer, *(cells[t.id, a.name] for a in APPROACHES)] for t in tasks])


def print_summary(results: list[Result]) -> None:
    rows = [["approach", "correct", "mean latency", "completion tokens/req", "backend calls/req"]]
    for approach in APPROACHES:
        mine = [r for r in results if r.approach == approach.name]
        rows.append([approach.name, f"{sum(r.correct for r in mine)}/{len(mine)}",
                     f"{sum(r.latency for r in mine) / len(mine):.2f} s",
                     f"{sum(r.tokens for r in mine) / len(mine):.0f}", f"{sum(r.calls for r in mine) / len(mine):.1f}"])
    _print_rows(rows)


def _run(stack: Stack, tasks: list[Task]) -> list[Result]:
    """Every approach on every task, one request at a time, each with its own backend call count."""
    results = []
    for task in tasks:
        for approach in APPROACHES:
            stack.clear_calls()
            results.append(ask(stack.client, approach, task))
            results[-1].calls = stack.count_calls()
    return results


def run_demo(tasks: int = 3, time_scale: float = 0.2) -> None:
    """Run every approach on `tasks` bundled questions and print them side by side; exit 1 if any failed."""
    chosen = pick_tasks(max(1, tasks))
    print(DISCLAIMER)
    print(f"Starting the simulator (latencies x{time_scale}) and `selfmoa serve`; "
          f"{len(chosen)} question(s) x {len(APPROACHES)} approaches...\n", flush=True)
    try:
        with running_stack(time_scale) as stack:
            results = _run(stack, chosen)
    except KeyboardInterrupt:
        print("\ninterrupted; the simulator and the proxy are stopped", file=sys.stderr)
        raise SystemExit(130) from None
    except (RuntimeError, openai.OpenAIError, OSError) as error:  # the stack did not start
        raise SystemExit(f"demo failed: {error}") from None
    print_answers(chosen, results)
    print()
    print_summary(results)
    failed = [r for r in results if r.error is not None]
    sys.stdout.flush()
    for r in failed:
        print(f"FAILED {r.approach} on {r.task.id}: {r.error}", file=sys.stderr)
    print(f"\n{DISCLAIMER}")
    if failed:
        raise SystemExit(f"{len(failed)} request(s) failed")
