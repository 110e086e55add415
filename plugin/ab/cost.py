"""Money: tokens at a price table's rates, per model where a trace says which model made which call.

A price file (JSON or YAML) maps a model to dollars per million tokens:
`{"gpt-4o": {"prompt": 2.5, "completion": 10, "cached_prompt": 1.25}}` (`cached_prompt` optional,
else cached prompt tokens cost the prompt rate). A cost is *complete* only when every call's prompt
and completion tokens are known and every model has a price: optillm's own approaches report
completion tokens only, so their cost is a lower bound, and the summary says so instead of
presenting it as comparable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MILLION = 1_000_000


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)
    cached_prompt: float | None = Field(default=None, ge=0)


class PriceError(ValueError):
    """An unreadable price file; the message names the file and the model or field."""


def load_prices(path: Path) -> dict[str, Price]:
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise PriceError(f"{path}: {error}") from None
    if not isinstance(raw, dict):
        raise PriceError(f"{path}: expected a mapping of model -> {{prompt, completion}}")
    prices = {}
    for model, entry in raw.items():
        try:
            prices[str(model)] = Price.model_validate(entry)
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise PriceError(f"{path}: {model}{'.' + field if field else ''}: {first['msg']}") from None
    return prices


@dataclass(frozen=True)
class Cost:
    dollars: float
    """What could be priced (a lower bound when not complete)."""
    complete: bool


def _priced(price: Price | None, prompt: int | None, completion: int | None, cached: int | None) -> Cost:
    if price is None:
        return Cost(0.0, False)
    cached = min(cached or 0, prompt or 0)
    cached_rate = price.cached_prompt if price.cached_prompt is not None else price.prompt
    dollars = ((prompt or 0) - cached) * price.prompt + cached * cached_rate + (completion or 0) * price.completion
    return Cost(dollars / MILLION, prompt is not None and completion is not None)


def row_cost(row: Mapping[str, Any], base_model: str, prices: Mapping[str, Price]) -> Cost:
    """The cost of one answered row: per model from `usage_by_model`, else all at the base model's rates
    (cached prompt tokens at the cached rate either way, so a plain model's cache hits count too)."""
    by_model = row.get("usage_by_model")
    if not by_model:
        return _priced(prices.get(base_model), row.get("prompt_tokens"), row.get("completion_tokens"),
                       row.get("cached_tokens"))
    parts = [_priced(prices.get(name), u.get("prompt_tokens"), u.get("completion_tokens"), u.get("cached_tokens"))
             for name, u in by_model.items()]
    return Cost(sum(p.dollars for p in parts), all(p.complete for p in parts))
