"""The simulator's own tests: each module talks to a simulator of its own over HTTP (fresh sample
counters and models, which the modules patch), not to the session's shared one."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from selfmoa.sim import BackgroundSim


@pytest.fixture(scope="module")
def sim() -> Iterator[BackgroundSim]:
    with BackgroundSim(seed=0, time_scale=0.0) as server:
        yield server


@pytest.fixture()
def client(sim: BackgroundSim) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=sim.base_url, api_key="sk-test-secret-123", max_retries=0, timeout=10) as c:
        yield c
