"""Shared fixtures: a fake client for unit tests; a live simulator and `selfmoa serve` for HTTP tests."""

from __future__ import annotations

import pytest

from selfmoa.approaches import BackendMemory, Caller, Deadline, Proposer, Recipe
from tests.fakes import FakeClient


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's keys or server config."""
    for name in ("SELFMOA_CONFIG", "OPENAI_API_KEY", "OPTILLM_API_KEY", "OPTILLM_APPROACH", "OPTILLM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


def make_caller(client: FakeClient, *, timeout: float = 10.0, memory: BackendMemory | None = None) -> Caller:
    return Caller({"default": client}, memory or BackendMemory(), Deadline(timeout))


def make_recipe(samples: int = 6, model: str = "m", **fields: object) -> Recipe:
    fields.setdefault("proposers", (Proposer(model=model, samples=samples),))
    fields.setdefault("aggregator", model)
    return Recipe(**fields)  # type: ignore[arg-type]
