"""Multi-layer MoA: layer k > 1 proposers see layer k-1's answers as references."""

from __future__ import annotations

from selfmoa.approaches import Proposer, run_moa
from tests.conftest import make_caller, make_recipe
from tests.fakes import Call, FakeBackend, default_script

USER = [{"role": "user", "content": "Name a prime."}]


def test_two_layers_feed_references_forward() -> None:
    layer = {"n": 0}

    def script(call: Call) -> list[str]:
        if call.kind in ("propose", "references"):
            layer["n"] += 1
            return [f"L{'2' if call.kind == 'references' else '1'}-{call.model}-{i}" for i in range(call.n)]
        return default_script(call)

    client = FakeBackend(script)
    recipe = make_recipe(proposers=(Proposer("a", 2), Proposer("b", 1)), aggregator="a", layers=2)
    outcome = run_moa(recipe, USER, make_caller(client))
    kinds = [c.kind for c in client.calls]
    assert kinds.count("propose") == 2 and kinds.count("references") == 2 and kinds[-1] == "aggregate"
    second = client.of_kind("references")
    assert all(sorted(c.candidates) == ["L1-a-0", "L1-a-1", "L1-b-0"] for c in second)
    assert all(c.messages[0]["role"] == "system" and c.messages[1:] == USER for c in second)  # placement: system
    assert sorted(client.of_kind("aggregate")[0].candidates) == ["L2-a-0", "L2-a-1", "L2-b-0"]
    assert outcome.calls == 5


def test_one_layer_has_no_reference_prompt(fake: FakeBackend) -> None:
    run_moa(make_recipe(samples=3), USER, make_caller(fake))
    assert not fake.of_kind("references")
