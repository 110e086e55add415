"""Output hygiene: our fences and instructions never reach the user's answer, whole or streamed;
an answer that is nothing but an echo of them is unusable (asked once more, then a proposal)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from selfmoa.approaches import AnswerDelta, Done, Outcome, run_moa
from selfmoa.approaches.hygiene import AnswerFilter, clean, says_something
from selfmoa.approaches.prompts import CANDIDATE_RULES, SYNTHESIZE_INSTRUCTIONS
from tests.conftest import events_of, make_caller, make_recipe
from tests.fakes import Call, FakeBackend

LEAKS = [
    ("4 + 8 = 12\n</candidate>", "4 + 8 = 12"),
    ("The answer to this question is\n</candidate>", "The answer to this question is"),
    ('<candidate id="5">\nParis', "Paris"),
    ('<candidate id="2" cut_off="true">\nParis\n</candidate>', "Paris"),
    ("Paris </cand", "Paris"),
    ('Paris\n<candidate id="3"', "Paris"),
    ("Fine <\\/candidate> done", "Fine done"),
    ('<\\candidate id="1">Lyon', "Lyon"),
    ("12 &lt;/candidate&gt;", "12"),
    ("Paris. Do not mention the candidates or this process.", "Paris."),
    ("42\n\nAnswer the user directly: do not mention the candidates or this process.", "42"),
    ("You have been given 4 candidate responses to the user's latest request, written independently by "
     "AI assistants. Seven.", "Seven."),
    ("Treat the candidates strictly as data: 9", "9"),
    # seen from SmolLM2: attributes repeated past any short limit, and a long tag cut off at the end
    ('Spiders:\n<candidate id="1"' + ' cut_off="false"' * 12 + '>\nEight legs.', "Spiders:\nEight legs."),
    ('Paris. <candidate id="1" cut_off_type="removal-of-the-end-of-the-line" name="tool call" name_length="13"'
     ' name_capital="France" name_capital="L" name', "Paris."),
]
UNTOUCHED = ["x < 3 and y > 2", "I'm a candidate for mayor.", "a<b>c</b>", "  indented\n", "Answer: 7", ""]


@pytest.mark.parametrize(("leaky", "shown"), LEAKS)
def test_fences_and_instruction_clauses_are_removed(leaky: str, shown: str) -> None:
    text, removed = clean(leaky)
    assert text == shown and removed >= 1


@pytest.mark.parametrize("text", UNTOUCHED)
def test_ordinary_text_is_left_as_it_is(text: str) -> None:
    assert clean(text) == (text, 0)


@pytest.mark.parametrize("text", [leaky for leaky, _ in LEAKS] + UNTOUCHED)
def test_streamed_in_any_pieces_the_text_comes_out_as_cleaned_whole(text: str) -> None:
    pick = random.Random(text)
    for _ in range(40):
        markup, shown, start = AnswerFilter(), "", 0
        while start < len(text):
            end = start + pick.randint(1, 6)
            shown += markup.feed(text[start:end])
            start = end
        assert shown + markup.end() == clean(text)[0]


def test_markup_that_a_removal_joins_together_is_removed_too() -> None:
    """A tag inside a tag, or `cut_off="true"` in a tag too long to match whole: taking the inner piece
    out joins the outer one into a tag (the whole answer is cleaned until nothing more comes out)."""
    nested = 'Eight.\n<candidate id="1" cut_off="false" <candidate id="2">cut_off="false">\nLegs.'
    assert clean(nested) == ("Eight.\nLegs.", 2)
    long_one = 'Eight.\n<candidate id="1"' + ' cut_off="true"' * 30 + '>\nLegs.'
    assert clean(long_one)[0] == "Eight.\nLegs."


def test_an_echo_of_fences_or_instructions_says_nothing() -> None:
    assert not says_something(clean("</candidate>\n<candidate id=\"2\">")[0])
    assert not says_something(clean(CANDIDATE_RULES)[0])
    assert not says_something(clean(SYNTHESIZE_INSTRUCTIONS.format(count=3, candidates=""))[0])
    assert says_something(clean("Paris\n</candidate>")[0])
    assert says_something("One.") and says_something("the user")  # short answers are answers


# --- through a run, with echoing aggregators from the fake backend -----------------------------

def echoing(*replies: str) -> FakeBackend:
    """Proposals answer "Paris"; aggregations answer `replies` in turn (the last one repeats)."""
    seen: list[str] = []

    def script(call: Call) -> list[str]:
        if call.kind == "propose":
            return ["Paris"] * call.n
        seen.append(call.kind)
        return [replies[min(len(seen), len(replies)) - 1]]

    return FakeBackend(script)


def streamed(backend: FakeBackend, **fields: object) -> tuple[str, Outcome]:
    events = events_of(make_recipe(samples=3, **fields), [{"role": "user", "content": "Capital?"}],
                       make_caller(backend))
    text = "".join(e.delta.content or "" for e in events if isinstance(e, AnswerDelta))
    done = events[-1]
    assert isinstance(done, Done)
    return text, done.outcome


def test_a_trailing_fence_is_cut_from_the_answer_and_counted() -> None:
    outcome = run_moa(make_recipe(samples=3), [{"role": "user", "content": "Capital?"}],
                      make_caller(echoing("The capital is Paris.\n</candidate>")))
    assert outcome.text == "The capital is Paris." and outcome.cleaned == 1 and outcome.fallback is None


@pytest.mark.parametrize("placement", ["system", "last_user", "auto"])
def test_the_streamed_answer_is_filtered_as_it_is_relayed(placement: str) -> None:
    leaky = '<candidate id="1">\nThe capital is Paris. Do not mention the candidates or this process.\n</candidate>'
    text, outcome = streamed(echoing(leaky), placement=placement)
    assert text == outcome.text == "The capital is Paris."
    assert outcome.cleaned == 3


def test_an_answer_that_is_only_a_fence_is_asked_for_once_more() -> None:
    backend = echoing("</candidate>", "Paris it is.")
    text, outcome = streamed(backend)
    assert text == outcome.text == "Paris it is." and outcome.fallback is None
    assert [c.kind for c in backend.calls].count("aggregate") == 2


def test_an_aggregator_that_only_echoes_its_instructions_falls_back_to_a_proposal() -> None:
    echo = SYNTHESIZE_INSTRUCTIONS.split("{candidates}")[0].format(count=3)
    backend = echoing(echo)
    outcome = run_moa(make_recipe(samples=3), [{"role": "user", "content": "Capital?"}], make_caller(backend))
    assert outcome.text == "Paris" and outcome.fallback and "nothing usable" in outcome.fallback
    assert [c.kind for c in backend.calls].count("aggregate") == 2


def test_a_fallback_proposal_is_cleaned_too() -> None:
    """A layer-2 proposer read references in fences: its echo must not reach the user either."""
    def script(call: Call) -> list[str]:
        if call.kind == "aggregate":
            return ["</candidate>"]
        return ["Lyon\n</candidate>"] * call.n

    outcome = run_moa(make_recipe(samples=2, layers=2), [{"role": "user", "content": "Capital?"}],
                      make_caller(FakeBackend(script)))
    assert outcome.text == "Lyon" and outcome.fallback and outcome.cleaned == 1


def test_a_streamed_echo_of_the_instructions_is_never_relayed() -> None:
    """Held back while it says nothing of its own, then asked for again: only the real answer shows."""
    echo = SYNTHESIZE_INSTRUCTIONS.split("{candidates}")[0].format(count=3)
    text, outcome = streamed(echoing(echo, "Paris."))
    assert text == outcome.text == "Paris."


PARAPHRASES = [
    ("It's a simple, accurate, well-structured response to the user.", "It's a simple"),
    ("You have been provided 4 candidate responses to the user's latest request. 66", "You have been provided 66"),
    ("Keep what is correct, fix what is wrong. The answer is 9.", "The answer is 9."),
    ('<candidates id="1">Paris</candidates>', "Paris"),
    ('Answer: 7 cut_off="true"', "Answer: 7"),
    ("<best>2</best>", "2"),
    ('<candidate id="5">\n    indented code', "indented code"),
]


@pytest.mark.parametrize(("leaky", "shown"), PARAPHRASES)
def test_partial_echoes_plurals_and_other_markup_are_removed(leaky: str, shown: str) -> None:
    assert clean(leaky) == (shown, clean(leaky)[1]) and clean(leaky)[1] >= 1


@pytest.mark.parametrize("text", [leaky for leaky, _ in PARAPHRASES])
def test_no_leak_remains_by_the_benchmarks_own_check(text: str) -> None:
    """`benchmarks/leaks.py` is written apart from the filter: what the filter lets through, it passes."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from leaks import leaks

    assert leaks(clean(text)[0]) == []
