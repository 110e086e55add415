"""Shared fixtures: a fake backend for unit tests; a live simulator and `selfmoa serve` for HTTP tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from selfmoa.approaches import BackendMemory, Caller, Deadline, Event, Hedging, Proposer, Recipe, moa_events
from selfmoa.sim import BackgroundSim
from selfmoa.testing.live import Proxy, SimLog
from tests.fakes import FakeBackend

# LiteLLM (imported by optillm and by the client tests) fetches its model price list from GitHub
# at import, retrying with pauses when offline; its bundled copy does for tests.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's keys or server config."""
    for name in ("SELFMOA_CONFIG", "OPENAI_API_KEY", "OPTILLM_API_KEY", "OPTILLM_APPROACH", "OPTILLM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


def make_caller(backend: FakeBackend, *, timeout: float = 10.0, memory: BackendMemory | None = None,
                hedging: Hedging | None = None) -> Caller:
    return Caller({"default": backend}, memory or BackendMemory(), Deadline(timeout), hedging=hedging or Hedging())


def events_of(recipe: Recipe, messages: list[dict[str, Any]], caller: Caller, *, stream: bool = True) -> list[Event]:
    """Every event of a run, read through `moa_events` as a streaming server reads them."""
    async def read() -> list[Event]:
        return [event async for event in moa_events(recipe, messages, caller, stream=stream)]

    return asyncio.run(read())


def make_recipe(samples: int = 6, model: str = "m", **fields: object) -> Recipe:
    fields.setdefault("proposers", (Proposer(model=model, samples=samples),))
    fields.setdefault("aggregator", model)
    return Recipe(**fields)  # type: ignore[arg-type]


# --- live processes: the simulator and a real `selfmoa serve` over HTTP ---------------------------

SERVER_CONFIG = """
defaults:
  timeout: 30
presets:
  duo:
    proposers: [{model: sim-strong, samples: 3}, {model: sim-medium, samples: 3}]
    aggregator: sim-strong
  routed:
    proposers: [{model: sim-strong, samples: 2, endpoint: second}]
    aggregator: {model: sim-strong, endpoint: second}
caps:
  samples: 40
  layers: 3
  calls: 120
  timeout: 60
endpoints:
  second:
    base_url: ${SECOND_BASE_URL}
    api_key: ${SECOND_KEY}
models:
  sim-small-context: {context_window: 330}  # less than the simulator gives it: the budget is ours
"""


@pytest.fixture(scope="session")
def sim() -> Iterator[BackgroundSim]:
    with BackgroundSim() as running:
        yield running


@pytest.fixture(scope="session")
def second_sim() -> Iterator[BackgroundSim]:
    """Another backend, reachable only through the server config's `second` endpoint."""
    with BackgroundSim(seed=7) as running:
        yield running


@pytest.fixture(scope="session")
def proxy(sim: BackgroundSim, second_sim: BackgroundSim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    env = {"SECOND_BASE_URL": second_sim.base_url, "SECOND_KEY": "sk-second-endpoint-secret-42"}
    running = Proxy.configured(sim.base_url, SERVER_CONFIG, tmp_path_factory.mktemp("proxy"), env=env)
    yield running
    running.close()


@pytest.fixture
def simlog(sim: BackgroundSim) -> SimLog:
    log = SimLog(sim.root_url)
    log.clear()
    return log


@pytest.fixture
def client(proxy: Proxy) -> openai.OpenAI:
    return proxy.client()
