"""Every touch of optillm's internals goes through `selfmoa.host`, checked at start-up: a missing
one stops the server with the optillm version it needs; routing reads requests as optillm does."""

from __future__ import annotations

import sys
import time
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
    assert "parse_combined_approach" in message and "view proxy_models" in message


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


def test_the_deadline_counts_from_when_the_server_received_the_request() -> None:
    """Work a server does before our hook (optillm's own hooks, Flask's dispatch) counts against
    the request's deadline: its scope dates from the WSGI entry, which `stamp_arrivals` records."""
    from flask import Flask

    from selfmoa.scope import ARRIVED, RequestScope, open_scope

    app = Flask("dispatch")
    seen: dict[str, float | RequestScope] = {}

    @app.before_request
    def dispatch_work() -> None:  # registered first, as optillm's hooks are
        seen["dispatched"] = time.monotonic()
        time.sleep(0.2)

    @app.route("/v1/chat/completions", methods=["POST"])
    def chat() -> str:
        seen["scope"] = open_scope()
        return "ok"

    Optillm(types.SimpleNamespace(app=app)).stamp_arrivals(ARRIVED)  # type: ignore[arg-type]
    assert app.test_client().post("/v1/chat/completions").status_code == 200
    scope = seen["scope"]
    assert isinstance(scope, RequestScope) and scope.arrived <= seen["dispatched"]
