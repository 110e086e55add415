"""Every touch of optillm's internals goes through `selfmoa.host`, checked at start-up: a missing
one stops the server with the optillm version it needs; routing reads requests as optillm does."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from selfmoa.host import REQUIRED, HostError, Optillm


@pytest.fixture(scope="module")
def host() -> Optillm:
    return Optillm.load()


def test_optillm_0_4_has_everything_selfmoa_touches(host: Optillm) -> None:
    assert all(hasattr(host.server, name) for name in REQUIRED)


def test_a_missing_internal_stops_the_server_naming_the_version_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("optillm.server")
    fake.app = types.SimpleNamespace(view_functions={"proxy": None})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "optillm.server", fake)
    with pytest.raises(HostError) as stopped:
        Optillm.load()
    message = str(stopped.value)
    assert "selfmoa needs optillm >=0.4.0,<0.5" in message and "0.4.0" in message  # the installed version
    assert "parse_combined_approach" in message


@pytest.mark.parametrize("body,operation,approaches,model", [
    ({"model": "self_moa-gpt-4o-mini"}, "SINGLE", ["self_moa"], "gpt-4o-mini"),
    ({"model": "gpt-4o-mini", "optillm_approach": "mixed_moa_seq"}, "SINGLE", ["mixed_moa_seq"], "gpt-4o-mini"),
    ({"model": "m", "messages": [{"role": "system", "content": "<optillm_approach>self_moa</optillm_approach>"}]},
     "SINGLE", ["self_moa"], "m"),
    ({"model": "self_moa|moa-m"}, "OR", ["self_moa", "moa"], "m"),
    ({"model": "self_moa&re2-m"}, "AND", ["self_moa", "re2"], "m"),
    ({"model": "gpt-4o"}, "SINGLE", ["none"], "gpt-4o"),
])
def test_routing_is_optillms(host: Optillm, monkeypatch: pytest.MonkeyPatch, body: dict[str, object],
                             operation: str, approaches: list[str], model: str) -> None:
    monkeypatch.setitem(host.server.server_config, "approach", "auto")  # optillm's --approach default
    host.server.plugin_approaches.update({slug: object() for slug in ("self_moa", "mixed_moa_seq")})
    route = host.route(body)
    assert (route.operation, route.approaches, route.model) == (operation, approaches, model)


def test_routing_tags_are_removed_from_the_conversation(host: Optillm) -> None:
    messages = [{"role": "user", "content": "<optillm_approach>self_moa</optillm_approach> Hello"}]
    assert host.without_tags(messages) == [{"role": "user", "content": "Hello"}]
    assert messages[0]["content"].startswith("<optillm_approach>")  # not mutated


def test_skipped_plugins_are_named_in_one_info_line(host: Optillm, caplog: pytest.LogCaptureFixture) -> None:
    """The lean install cannot load optillm's heavy plugins: one INFO line says which and why,
    instead of an ERROR line each, which reads as broken to a newcomer."""
    with caplog.at_level(logging.INFO):
        host._load_plugins_quietly()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    [line] = [r.getMessage() for r in caplog.records if "optillm plugins not loaded" in r.getMessage()]
    assert not errors and "router (torch)" in line and "privacy (spacy)" in line
