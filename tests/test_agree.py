"""Spending less when samples agree: `moa.agree` skips the aggregation when that share of the usable
proposals give the same answer (read by `moa.answer`); `moa.first` draws that many samples first and
the rest only when they disagree. Seq checks before each round; layers before the final aggregation.
The reply says so (trace `early_exit`, log `exit=agree`), and its usage counts only the calls made."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from selfmoa.approaches import Proposer, run_moa
from selfmoa.config import ServerConfig, resolve
from selfmoa.testing.live import Proxy, SimLog
from selfmoa.validation import ConfigError
from tests.conftest import events_of, make_caller, make_recipe
from tests.conversations import BAKER
from tests.fakes import Call, FakeBackend, default_script

USER = [{"role": "user", "content": "What is 6 x 7?"}]


def answering(*proposals: str) -> FakeBackend:
    """Proposals answer `proposals` in turn (over every call); aggregations as the default script."""
    given = list(proposals)

    def script(call: Call) -> list[str]:
        if call.kind in ("propose", "references"):
            return [given.pop(0) if given else "Answer: 1" for _ in range(call.n)]
        return default_script(call)

    return FakeBackend(script)


def test_agreeing_samples_skip_the_aggregation() -> None:
    backend = answering("The answer is 42.", "42", "It's 42", "42.0")
    outcome = run_moa(make_recipe(samples=4, agree=1.0, answer="numeric"), USER, make_caller(backend))
    assert [c.kind for c in backend.calls] == ["propose"] and outcome.calls == 1  # usage: the calls made
    assert outcome.text == "The answer is 42." and outcome.rounds == 0  # the first complete proposal
    assert outcome.early_exit == {"reason": "agree", "share": 1.0}


def test_without_enough_agreement_they_are_aggregated() -> None:
    backend = answering("42", "42", "41", "40")
    outcome = run_moa(make_recipe(samples=4, agree=0.75, answer="numeric"), USER, make_caller(backend))
    assert [c.kind for c in backend.calls] == ["propose", "aggregate"] and outcome.early_exit is None
    assert run_moa(make_recipe(samples=4, agree=0.5, answer="numeric"), USER,
                   make_caller(answering("42", "42", "41", "40"))).early_exit == {"reason": "agree", "share": 0.5}


def test_a_cut_off_proposal_votes_but_is_never_the_answer() -> None:
    def script(call: Call) -> list[Any]:
        if call.kind == "propose":
            return [("42 because", "length"), "So 42", "42"]
        return default_script(call)

    outcome = run_moa(make_recipe(samples=3, agree=1.0, answer="numeric"), USER, make_caller(FakeBackend(script)))
    assert outcome.text == "So 42" and outcome.early_exit is not None


def test_first_draws_the_rest_only_when_the_first_disagree() -> None:
    agreeing = answering("42", "42", "42")
    outcome = run_moa(make_recipe(samples=6, first=3, agree=1.0, answer="numeric"), USER, make_caller(agreeing))
    assert [(c.kind, c.n) for c in agreeing.calls] == [("propose", 3)] and outcome.early_exit is not None
    assert len(outcome.proposals) == 3
    split = answering("42", "41", "42")
    outcome = run_moa(make_recipe(samples=6, first=3, agree=1.0, answer="numeric"), USER, make_caller(split))
    assert [(c.kind, c.n) for c in split.calls] == [("propose", 3), ("propose", 3), ("aggregate", 1)]
    assert len(outcome.proposals) == 6 and outcome.early_exit is None


def test_mixed_draws_the_first_proposers_share_first() -> None:
    backend = answering("42", "42", "42")
    recipe = make_recipe(proposers=(Proposer("a", 3), Proposer("b", 3)), aggregator="a", first=3, agree=1.0,
                         answer="numeric")
    run_moa(recipe, USER, make_caller(backend))
    assert [(c.model, c.n) for c in backend.calls] == [("a", 3)]


def test_seq_checks_before_each_round() -> None:
    backend = answering(*["42"] * 6)
    outcome = run_moa(make_recipe(samples=12, sequential=True, agree=1.0, answer="numeric"), USER,
                      make_caller(backend))
    assert outcome.early_exit is not None and outcome.rounds == 0 and not backend.of_kind("aggregate")
    later = answering(*["42", "41", "40", "39", "38", "37"], *["36"] * 6)
    outcome = run_moa(make_recipe(samples=9, sequential=True, agree=0.1, answer="numeric"), USER, make_caller(later))
    assert outcome.early_exit is not None  # 0.1 of the first window's 6 already agree


def test_seq_with_first_reads_the_drawn_samples_in_rounds() -> None:
    backend = answering("42", "41", "40", *["39"] * 9)
    outcome = run_moa(make_recipe(samples=12, sequential=True, first=3, agree=1.0, answer="numeric"), USER,
                      make_caller(backend))
    assert [c.kind for c in backend.calls][:2] == ["propose", "propose"] and outcome.sequential
    assert outcome.rounds == 3 and outcome.early_exit is None  # 1 + ceil((12 - 6) / 3)


def test_layers_check_before_the_final_aggregation_only() -> None:
    backend = answering(*["42"] * 2, *["43"] * 2)
    outcome = run_moa(make_recipe(samples=2, layers=2, agree=1.0, answer="numeric"), USER, make_caller(backend))
    assert [c.kind for c in backend.calls] == ["propose", "references"]  # layer 1 agreeing did not stop it
    assert outcome.text == "43" and outcome.early_exit is not None


def test_an_early_exit_streams_the_chosen_proposal_at_once() -> None:
    events = events_of(make_recipe(samples=3, agree=1.0, answer="exact"), USER,
                       make_caller(answering("Paris", "paris", "PARIS.")))
    pieces = [e for e in events if type(e).__name__ == "AnswerDelta"]
    assert len(pieces) == 1 and pieces[0].delta.content == "Paris"  # type: ignore[attr-defined]


def test_without_these_options_nothing_changes() -> None:
    backend = answering("42", "42", "42")
    outcome = run_moa(make_recipe(samples=3), USER, make_caller(backend))
    assert [c.kind for c in backend.calls] == ["propose", "aggregate"] and outcome.early_exit is None


# --- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("moa,field", [
    ({"answer": "digits"}, "moa.answer"),
    ({"answer": "re:[0-9]+"}, "moa.answer"),  # no capturing group
    ({"answer": "re:("}, "moa.answer"),
    ({"agree": 0}, "moa.agree"),
    ({"agree": 1.5}, "moa.agree"),
    ({"first": 3}, "moa.first"),  # without agree
    ({"first": 9, "agree": 1}, "moa.first"),  # more than the samples
    ({"first": 0, "agree": 1}, "moa.first"),
])
def test_bad_options_name_their_field(moa: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        resolve("self_moa", "m", {"moa": {"samples": 6, **moa}}, USER, ServerConfig())
    assert refused.value.field == field


def test_the_server_file_sets_them_too() -> None:
    server = ServerConfig.model_validate({"presets": {"cheap": {"first": 3, "agree": 1, "answer": "numeric"}}})
    recipe = resolve("self_moa", "m", {"moa": {"preset": "cheap"}}, USER, server)
    assert (recipe.first, recipe.agree, recipe.answer) == (3, 1, "numeric")


# --- over HTTP --------------------------------------------------------------------------------------------


def test_the_reply_says_it_exited_early_and_costs_only_its_calls(proxy: Proxy, simlog: SimLog) -> None:
    simlog.patch({"sim-sure": {"accuracy": 1.0}})
    reply = proxy.post({"model": "self_moa-sim-sure", "messages": BAKER,
                        "moa": {"samples": 6, "first": 3, "agree": 1, "answer": "numeric", "trace": True}}).json()
    calls = simlog.calls()
    assert [c["kind"] for c in calls] == ["propose"] and calls[0]["n"] == 3
    assert reply["selfmoa"]["early_exit"]["reason"] == "agree" and len(reply["selfmoa"]["proposals"]) == 3
    assert reply["usage"]["prompt_tokens"] == calls[0]["prompt_tokens"]
    assert reply["usage"]["completion_tokens"] == calls[0]["completion_tokens"]
    assert "exit=agree" in proxy.log_once("exit=agree")


def test_an_early_exit_streams_over_http(proxy: Proxy, simlog: SimLog) -> None:
    simlog.patch({"sim-sure": {"accuracy": 1.0}})
    stream = proxy.client().chat.completions.create(
        model="self_moa-sim-sure", messages=BAKER, stream=True,  # type: ignore[arg-type]
        extra_body={"moa": {"samples": 4, "agree": 1, "answer": "numeric"}})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "66" in text and not simlog.of_kind("aggregate")


def test_a_bad_answer_option_is_a_400_over_http(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="self_moa-sim-strong", messages=USER,  # type: ignore[arg-type]
                                       extra_body={"moa": {"answer": "re:(a)(b)"}})
    assert refused.value.body["param"] == "moa.answer"  # type: ignore[index]
