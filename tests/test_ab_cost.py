"""Cost: tokens at the price table's rates, per model from a trace, incomplete when usage or a price is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfmoa.ab.cost import PriceError, load_prices, row_cost

PRICES_YAML = """
big: {prompt: 2.5, completion: 10, cached_prompt: 1.25}
small: {prompt: 0.15, completion: 0.6}
"""


@pytest.fixture
def prices(tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "prices.yaml"
    path.write_text(PRICES_YAML)
    return load_prices(path)  # type: ignore[return-value]


def test_json_and_yaml_price_files(tmp_path: Path, prices: dict[str, object]) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"big": {"prompt": 2.5, "completion": 10, "cached_prompt": 1.25}, '
                    '"small": {"prompt": 0.15, "completion": 0.6}}')
    assert load_prices(path) == prices
    path.write_text('{"big": {"prompt": 2.5}}')
    with pytest.raises(PriceError, match="big.completion"):
        load_prices(path)


def test_a_plain_reply_costs_its_tokens_at_the_model_rates(prices: dict[str, object]) -> None:
    cost = row_cost({"prompt_tokens": 1000, "completion_tokens": 200}, "big", prices)  # type: ignore[arg-type]
    assert cost.dollars == pytest.approx((1000 * 2.5 + 200 * 10) / 1e6) and cost.complete


def test_a_trace_is_priced_per_model_with_cached_prompt_tokens(prices: dict[str, object]) -> None:
    row = {"prompt_tokens": 9999, "completion_tokens": 9999, "usage_by_model": {
        "big": {"calls": 2, "prompt_tokens": 1000, "completion_tokens": 300, "cached_tokens": 400},
        "small": {"calls": 3, "prompt_tokens": 600, "completion_tokens": 900, "cached_tokens": 0}}}
    cost = row_cost(row, "big", prices)  # type: ignore[arg-type]
    expected = (600 * 2.5 + 400 * 1.25 + 300 * 10) + (600 * 0.15 + 900 * 0.6)
    assert cost.dollars == pytest.approx(expected / 1e6) and cost.complete


def test_a_plain_replys_cached_prompt_tokens_cost_the_cached_rate(prices: dict[str, object]) -> None:
    row = {"prompt_tokens": 1000, "completion_tokens": 200, "cached_tokens": 800}
    cost = row_cost(row, "big", prices)  # type: ignore[arg-type]
    assert cost.dollars == pytest.approx((200 * 2.5 + 800 * 1.25 + 200 * 10) / 1e6) and cost.complete
    small = row_cost(row, "small", prices)  # type: ignore[arg-type]  # no cached rate: the prompt rate
    assert small.dollars == pytest.approx((1000 * 0.15 + 200 * 0.6) / 1e6)


def test_missing_prompt_tokens_or_prices_make_the_cost_a_lower_bound(prices: dict[str, object]) -> None:
    only_completion = row_cost({"prompt_tokens": None, "completion_tokens": 500}, "big", prices)  # type: ignore[arg-type]
    assert only_completion.dollars == pytest.approx(500 * 10 / 1e6) and not only_completion.complete
    unpriced = row_cost({"usage_by_model": {"big": {"prompt_tokens": 10, "completion_tokens": 10},
                                            "unknown": {"prompt_tokens": 10, "completion_tokens": 10}}},
                        "big", prices)  # type: ignore[arg-type]
    assert unpriced.dollars == pytest.approx(10 * 12.5 / 1e6) and not unpriced.complete
