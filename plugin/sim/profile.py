"""The simulator's profile: which models exist and how each behaves.

A profile is plain YAML validated by pydantic (`extra="forbid"`), so a typo in a field name is an
error that names the field instead of a silently ignored knob. The same validation guards runtime
patches (`POST /sim/profile`), which tests use to add models with specific faults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .leaks import LEAK_KINDS, LeakKind

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]

DEFAULT_PROFILE_PATH = Path(__file__).parent / "data" / "profile.yaml"
DEFAULT_ACCURACY = 0.6

HTTP_FAULTS = ("rate_429", "rate_500", "rate_reset", "rate_hang")
CONTENT_FAULTS = ("rate_truncated", "rate_empty")


class ModelProfile(BaseModel):
    """How one simulated model answers, how fast, and how it fails."""

    model_config = ConfigDict(extra="forbid")

    accuracy: Probability | dict[str, Probability] = DEFAULT_ACCURACY
    """P(correct) on bundled tasks: one number, or task-set name -> number ("default" key allowed)."""
    consistency: Probability = 0.0
    """P(a sample of a bundled task repeats the model's settled answer to it, one per model, task and
    seed and itself right with P `accuracy`, instead of a fresh draw): samples of one question agree
    more often, as real models' do, and each stays right with P `accuracy`. 0: independent samples."""
    aggregator_skill: Probability = 0.8
    """P(an aggregation picks the candidates' majority answer rather than a random candidate's)."""
    judge_skill: Probability = 0.9
    """P(a pairwise verdict is the right one: the correct response, a tie between equals) over a coin flip."""
    ttft_ms: NonNegative = 50.0
    per_token_ms: NonNegative = 1.0
    context_window: Annotated[int, Field(gt=0)] = 8192
    n_mode: Literal["honour", "refuse", "cap", "ignore"] = "honour"
    max_n: Annotated[int, Field(ge=1)] = 1
    """Choices returned at most when `n_mode` is `cap`."""
    refuse_params: list[str] = Field(default_factory=list)
    """Body fields this model rejects with a 400 naming them (as some real endpoints do)."""
    rate_429: Probability = 0.0
    retry_after: NonNegative = 1.0
    rate_500: Probability = 0.0
    rate_reset: Probability = 0.0
    rate_hang: Probability = 0.0
    hang_seconds: NonNegative = 3600.0
    rate_truncated: Probability = 0.0
    rate_empty: Probability = 0.0
    rate_stream_cut: Probability = 0.0
    """P(a streamed reply breaks off half-way: the connection drops after half of its pieces)."""
    leak_rate: Probability = 0.0
    """P(a reply to a prompt with candidates leaks the machinery: echoes a fence or a sentence of the
    instructions); drawn per choice, independently of the other faults (see leaks.py)."""
    leak_kinds: Annotated[list[LeakKind], Field(min_length=1)] = Field(default_factory=lambda: list(LEAK_KINDS))
    """How a leak happens, picked uniformly among these: trailing_fence, leading_fence, only_fence,
    instructions."""
    reasoning: Literal["none", "think_tags", "field"] = "none"

    @model_validator(mode="after")
    def _rates_fit(self) -> ModelProfile:
        """One uniform draw per call picks at most one fault, so the rates of a group must fit in 1."""
        for group in (HTTP_FAULTS, CONTENT_FAULTS):
            if sum(getattr(self, name) for name in group) > 1.0 + 1e-9:
                raise ValueError(f"{' + '.join(group)} must not exceed 1")
        return self

    def accuracy_for(self, task_set: str) -> float:
        """P(correct) on one task set."""
        if isinstance(self.accuracy, dict):
            return self.accuracy.get(task_set, self.accuracy.get("default", DEFAULT_ACCURACY))
        return self.accuracy


class Profile(BaseModel):
    """The whole simulator: a seed, a latency multiplier and the models."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    time_scale: NonNegative = 1.0
    """Multiplies every latency; 0 answers at once (tests). Hangs are not scaled."""
    models: dict[str, ModelProfile] = Field(default_factory=dict)


def load_profile(path: str | Path | None = None) -> Profile:
    """Read and validate a profile file; None reads the bundled default."""
    source = Path(path) if path is not None else DEFAULT_PROFILE_PATH
    with source.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a simulator profile must be a mapping, got {type(data).__name__}")
    return Profile.model_validate(data)


def patched(profile: Profile, patch: dict[str, Any]) -> Profile:
    """A new profile with `patch` applied: model fields merged (a null model removes it).

    Raises pydantic's ValidationError (naming the field) or ValueError for a malformed patch;
    the current profile is never modified.
    """
    unknown = set(patch) - {"models", "seed", "time_scale"}
    if unknown:
        raise ValueError(f"unknown profile field(s): {', '.join(sorted(unknown))}")
    data = profile.model_dump()
    for key in ("seed", "time_scale"):
        if key in patch:
            data[key] = patch[key]
    models = patch.get("models", {})
    if not isinstance(models, dict):
        raise ValueError("'models' must be a mapping of model name -> fields")
    for name, fields in models.items():
        if fields is None:
            data["models"].pop(name, None)
        elif isinstance(fields, dict):
            data["models"][name] = {**data["models"].get(name, {}), **fields}
        else:
            raise ValueError(f"models.{name} must be a mapping of fields")
    return Profile.model_validate(data)
