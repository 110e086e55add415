"""`selfmoa demo`: the offline end-to-end demo, an A/B run (`selfmoa ab`) on the SIMULATOR.

The simulator runs in this process, a real `selfmoa serve` in front of it, and `selfmoa ab` compares
a plain call, optillm's `moa` and `bon`, and our approaches on a bundled task set: the table is
printed, the report and plots written (by default to ./demo-out). Everything runs on 127.0.0.1;
no network, no key, no real model. `running_stack` also drives `benchmarks/run.py`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from .ab.proxy import ProxyError, local_http, local_proxy
from .sim import BackgroundSim

DISCLAIMER = ("NOTE: the backend is a SIMULATOR (`selfmoa sim`, made-up models sim-strong/medium/weak). "
              "These numbers say nothing about real models.")
PROPOSERS = ["sim-strong", "sim-medium", "sim-weak"]
DEMO_APPROACHES = ["none", "moa", "bon", "self_moa", "mixed_moa", "self_moa_seq"]
DEMO_MOA: dict[str, dict[str, Any]] = {"mixed_moa": {"proposers": PROPOSERS}, "self_moa_seq": {"samples": 12}}
DEMO_TASKS = "arithmetic"
DEMO_OUT = Path("demo-out")
DEMO_PRICES = Path(__file__).parent / "ab" / "data" / "sim-prices.yaml"
"""Made-up prices for the made-up models, so the demo shows the cost column and its completeness notes."""
_OWN_FILES = ("results.jsonl", "run.json", "summary.json", "summary.csv", "report.md")


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
        local_http(f"{self.sim_url}/sim/calls", "DELETE")

    def count_calls(self) -> int:
        return len(json.loads(local_http(f"{self.sim_url}/sim/calls")))


def _proxy_env() -> dict[str, str]:
    """Our environment minus anything that could point the proxy elsewhere or reconfigure it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTILLM_", "SELFMOA_"))}
    return {**env, "OPENAI_API_KEY": "sk-simulator-needs-no-key"}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def running_stack(time_scale: float, seed: int = 0) -> Iterator[Stack]:
    """The simulator (in this process, its draws seeded by `seed`) and `selfmoa serve` in front of it, warmed up.

    Meanwhile SIGTERM unwinds like Ctrl-C, so the `finally` blocks still stop what was started.
    """
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="selfmoa-demo-") as folder, \
                BackgroundSim(seed=seed, time_scale=time_scale) as sim, \
                local_proxy(sim.base_url, Path(folder) / "proxy.log", _proxy_env()) as url, \
                openai.OpenAI(base_url=f"{url}/v1", api_key="sk-demo-not-a-real-key", max_retries=0, timeout=120,
                              http_client=openai.DefaultHttpxClient(trust_env=False, timeout=120)) as client:
            stack = Stack(url, sim.root_url, client)
            stack.warm_up()
            yield stack
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fresh(out: Path) -> None:
    """The demo always runs anew: its own files from an earlier demo are removed (nothing else)."""
    for name in _OWN_FILES:
        (out / name).unlink(missing_ok=True)


def run_demo(limit: int | None = None, out: Path = DEMO_OUT, time_scale: float = 0.05) -> None:
    """A/B the demo's approaches on the bundled set through the simulator; exits like `selfmoa ab`."""
    from .ab.command import load_app

    app = load_app()
    print(DISCLAIMER)
    print(f"Starting the simulator (latencies x{time_scale}) and `selfmoa serve`; then `selfmoa ab` of "
          f"{', '.join(DEMO_APPROACHES)} on the bundled `{DEMO_TASKS}` set...\n", flush=True)
    _fresh(out)
    try:
        with running_stack(time_scale) as stack:
            settings = app.Settings(tasks=DEMO_TASKS, approaches=DEMO_APPROACHES, model="sim-strong", out=out,
                                url=f"{stack.proxy_url}/v1", moa=DEMO_MOA, seed=0, limit=limit, prices=DEMO_PRICES,
                                command="selfmoa demo" + (f" --limit {limit}" if limit else ""))
            code = app.run_ab(settings)
    except KeyboardInterrupt:
        print("\ninterrupted; the simulator and the proxy are stopped", file=sys.stderr)
        raise SystemExit(130) from None
    except (ProxyError, openai.OpenAIError, OSError) as error:  # the stack did not start
        raise SystemExit(f"demo failed: {error}") from None
    print(f"\n{DISCLAIMER}")
    if code:
        raise SystemExit(code)
