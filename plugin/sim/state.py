"""Mutable simulator state, shared by the OpenAI routes and the `/sim/*` introspection routes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import behaviour
from .profile import Profile


@dataclass
class SimState:
    """Mutable simulator state: profile, call log and the counters that make runs reproducible."""

    profile: Profile
    seed: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0
    samples: dict[tuple[str, str], int] = field(default_factory=dict)

    def next_sample(self, model: str, prompt_key: str, greedy: bool) -> int:
        """The sample number for this (model, prompt); temperature 0 always reuses sample 0."""
        if greedy:
            return 0
        number = self.samples.get((model, prompt_key), 0)
        self.samples[(model, prompt_key)] = number + 1
        return number

    def uniform(self, *parts: object) -> float:
        return behaviour.draw(self.profile.seed, self.seed, *parts).random()


STATE = web.AppKey("selfmoa_sim_state", SimState)
