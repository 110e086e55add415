"""Configuration: validation naming the field, precedence, presets, caps, endpoints and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfmoa.config import ServerConfig, load_server_config, resolve
from selfmoa.runtime import redact
from selfmoa.validation import ConfigError

USER = [{"role": "user", "content": "hi"}]

SERVER_YAML = """
defaults:
  samples: 4
  temperature: 0.9
presets:
  duo:
    proposers: [{model: strong, samples: 3}, {model: medium, samples: 3, endpoint: second}]
    aggregator: {model: strong, endpoint: second}
    mode: select
  deep:
    layers: 2
    samples: 3
caps:
  samples: 12
  layers: 2
  calls: 20
  timeout: 60
  message_chars: 500
endpoints:
  second:
    base_url: http://127.0.0.1:9/v1
    api_key: ${SECOND_KEY}
models:
  strong: {context_window: 4000}
"""


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServerConfig:
    monkeypatch.setenv("SECOND_KEY", "sk-second-secret-123456")
    path = tmp_path / "selfmoa.yaml"
    path.write_text(SERVER_YAML)
    return load_server_config(path)


def refused(moa: object, server: ServerConfig | None = None, approach: str = "self_moa", **body: object) -> ConfigError:
    with pytest.raises(ConfigError) as error:
        resolve(approach, "strong", {"moa": moa, **body}, USER, server or ServerConfig())
    return error.value


@pytest.mark.parametrize("moa,field,words", [
    ({"sampels": 3}, "moa.sampels", "unknown key (allowed: samples, proposers"),
    ({"samples": 0}, "moa.samples", "greater than or equal to 1"),
    ({"samples": "6"}, "moa.samples", "valid integer"),
    ({"mode": "vote"}, "moa.mode", "'synthesize' or 'select'"),
    ({"temperature": 3}, "moa.temperature", "less than or equal to 2"),
    ({"window": 1}, "moa.window", "greater than or equal to 2"),
    ({"window": 4, "synthesis_slots": 4}, "moa.synthesis_slots", "less than window (4)"),
    ({"layers": 0}, "moa.layers", "greater than or equal to 1"),
    ({"min_samples": 7}, "moa.min_samples", "at most the number of proposals (6)"),
    ({"timeout": -1}, "moa.timeout", "greater than 0"),
    ({"grace": -1}, "moa.grace", "greater than or equal to 0"),
    ({"include_reasoning": "yes"}, "moa.include_reasoning", "valid boolean"),
    ({"max_tokens": 0}, "moa.max_tokens", "greater than or equal to 1"),
    ({"preset": "nope"}, "moa.preset", "unknown preset 'nope'"),
    ({"aggregator": ""}, "moa.aggregator", "at least 1 character"),
    ([1, 2], "moa", "must be an object, not array"),
    (None, "moa", "must be an object, not null"),
])
def test_bad_options_name_the_field(moa: object, field: str, words: str) -> None:
    error = refused(moa)
    assert error.field == field and words in str(error)


def test_a_request_can_never_name_an_endpoint_or_key() -> None:
    assert refused({"proposers": [{"model": "a", "endpoint": "second"}]}, approach="mixed_moa").field == (
        "moa.proposers[0].endpoint"
    )
    assert refused({"base_url": "http://evil"}).field == "moa.base_url"
    assert refused({"api_key": "sk-x"}).field == "moa.api_key"


def test_mixed_needs_proposers_and_self_samples_its_own_model() -> None:
    assert "required for mixed_moa" in str(refused({}, approach="mixed_moa"))
    recipe = resolve("self_moa", "strong", {"moa": {"proposers": ["a"], "samples": 2}}, USER, ServerConfig())
    assert [(p.model, p.samples) for p in recipe.proposers] == [("strong", 2)]


def test_bare_mixed_proposers_share_the_samples_like_the_papers_mmmddd() -> None:
    recipe = resolve("mixed_moa", "x", {"moa": {"proposers": ["m", "d"]}}, USER, ServerConfig())
    assert [(p.model, p.samples) for p in recipe.proposers] == [("m", 3), ("d", 3)]
    recipe = resolve("mixed_moa", "x", {"moa": {"proposers": ["a", "b", {"model": "c", "samples": 1}], "samples": 5}},
                     USER, ServerConfig())
    assert [(p.model, p.samples) for p in recipe.proposers] == [("a", 3), ("b", 2), ("c", 1)]


def test_built_in_defaults_reproduce_the_paper() -> None:
    recipe = resolve("self_moa", "strong", {}, USER, ServerConfig())
    assert recipe.proposers[0].samples == 6 and recipe.temperature == 0.7 and recipe.layers == 1
    assert recipe.window == 6 and recipe.synthesis_slots == 3 and recipe.mode == "synthesize"
    assert recipe.aggregator == "strong" and not recipe.sequential
    assert resolve("self_moa_seq", "strong", {}, USER, ServerConfig()).sequential


def test_precedence_request_over_preset_over_server_over_built_in(server: ServerConfig) -> None:
    assert resolve("self_moa", "strong", {}, USER, server).proposers[0].samples == 4  # server default
    assert resolve("self_moa", "strong", {}, USER, server).temperature == 0.9
    deep = resolve("self_moa", "strong", {"moa": {"preset": "deep"}}, USER, server)
    assert (deep.layers, deep.proposers[0].samples, deep.temperature) == (2, 3, 0.9)
    mine = resolve("self_moa", "strong", {"moa": {"preset": "deep", "samples": 2}}, USER, server)
    assert mine.proposers[0].samples == 2 and mine.layers == 2


def test_a_preset_routes_models_to_named_endpoints(server: ServerConfig) -> None:
    recipe = resolve("mixed_moa", "strong", {"moa": {"preset": "duo"}}, USER, server)
    assert [(p.model, p.endpoint) for p in recipe.proposers] == [("strong", "default"), ("medium", "second")]
    assert (recipe.aggregator, recipe.aggregator_endpoint, recipe.mode) == ("strong", "second", "select")


def test_caps_refuse_oversize_requests(server: ServerConfig) -> None:
    assert "cap of 12" in str(refused({"samples": 13}, server))
    assert refused({"layers": 3}, server).field == "moa.layers"
    assert refused({"timeout": 61}, server).field == "moa.timeout"
    assert "backend calls" in str(refused({"samples": 12, "layers": 2}, server))
    with pytest.raises(ConfigError, match="messages: 600 characters exceed the server's cap of 500"):
        resolve("self_moa", "strong", {}, [{"role": "user", "content": "x" * 600}], server)


def test_the_context_budget_comes_from_the_server_models(server: ServerConfig) -> None:
    assert resolve("self_moa", "strong", {"max_tokens": 1000}, USER, server).context_budget == 3000
    assert resolve("self_moa", "other", {}, USER, server).context_budget is None


def test_the_request_shapes_the_final_aggregation_only() -> None:
    body = {"temperature": 0.1, "top_p": 0.5, "max_tokens": 99, "stop": ["END"], "seed": 3,
            "response_format": {"type": "json_object"}, "n": 1, "stream": False}
    recipe = resolve("self_moa", "m", body, USER, ServerConfig())
    assert recipe.final_params == {k: body[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed",
                                                        "response_format")}
    assert recipe.temperature == 0.7 and recipe.max_tokens == 99


@pytest.mark.parametrize("messages,field", [
    ([], "messages"), ("hi", "messages"), ([{"content": "x"}], "messages[0].role"),
    ([{"role": "wizard", "content": "x"}], "messages[0].role"),
    ([{"role": "user", "content": 5}], "messages[0].content"),
])
def test_malformed_messages_are_refused(messages: object, field: str) -> None:
    with pytest.raises(ConfigError) as error:
        resolve("self_moa", "m", {}, messages, ServerConfig())  # type: ignore[arg-type]
    assert error.value.field == field


def test_server_file_errors_name_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("caps: {samples: many}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.caps.samples"):
        load_server_config(path)
    path.write_text("presets: {p: {proposers: [{model: a, endpoint: nowhere}]}}\n")
    with pytest.raises(ConfigError, match="unknown endpoint 'nowhere'"):
        load_server_config(path)
    path.write_text("endpoints: {e: {base_url: 'http://x/v1', api_key: '${MISSING_KEY}'}}\n")
    with pytest.raises(ConfigError, match=r"\$\{MISSING_KEY\}"):
        load_server_config(path)


def test_secrets_are_interpolated_and_never_printed(server: ServerConfig) -> None:
    endpoint = server.endpoints["second"]
    assert endpoint.api_key.get_secret_value() == "sk-second-secret-123456"
    assert "sk-second" not in repr(server) and "sk-second" not in str(endpoint)
    assert redact("bad key sk-second-secret-123456 and sk-abcdefghijkl", ["sk-second-secret-123456"]) == (
        "bad key [REDACTED] and [REDACTED]"
    )
