"""`moa.answer` readers and `agreement`: each reader's forms and normalisation, reasoning kept out, `re:`
validation, share arithmetic, cut-off proposals, ties (pure functions: no backend, no HTTP)."""

from __future__ import annotations

import pytest

from selfmoa.approaches.agreement import (
    DEFAULT_READER,
    Agreement,
    AnswerReader,
    agreement,
    answers,
    check_share,
    parse_reader,
    votes_needed,
    without_reasoning,
)
from selfmoa.approaches.types import Candidate, Choice, Sample

NUMERIC, CHOICE, EXACT = AnswerReader("numeric"), AnswerReader("choice"), AnswerReader("exact")


def sample(text: str, cut_off: bool = False) -> Sample:
    choice = Choice(content=text, finish_reason="length" if cut_off else "stop")
    return Sample(candidate=Candidate(text=text, choice=choice), model="m")


@pytest.mark.parametrize(("text", "expected"), [
    ("42", "42"), ("The answer is 42.", "42"), ("12.0", "12"), ("12.00", "12"), ("-0.50", "-0.5"), ("-0", "0"),
    ("1,234", "1234"), ("1,234,567.80", "1234567.8"), ("$1,000", "1000"), ("a 50% rise", "50"), ("+7", "7"),
    ("\u22123", "-3"), (".5", "0.5"), ("3/4", "0.75"), ("6/8", "0.75"), ("4/2", "2"), ("1/3", "1/3"),
    ("-3/4", "-0.75"), (r"\boxed{\frac{3}{4}}", "0.75"), (r"\dfrac{1}{3}", "1/3"), ("1e3", "1000"),
    ("2.5E-2", "0.025"), ("first 3, then 4, finally 5", "5"), ("from 3-5", "5"), ("GPT-4", "4"),
    ("on 3/4/2025", "2025"), ("12,34", "34"), ("1/0", None), ("no digits here", None), ("", None),
    ("123456789012345678901234567890.5", "123456789012345678901234567890.5"),  # never rounded to 28 digits
])
def test_numeric_reads_the_last_number_in_canonical_form(text: str, expected: str | None) -> None:
    assert NUMERIC.read(text) == expected


def test_numeric_equal_values_agree_whatever_their_spelling() -> None:
    spellings = ["Answer: 12", "so 12.0", "**12.00**", "12.", "That makes 24/2"]
    assert {NUMERIC.read(text) for text in spellings} == {"12"}
    assert NUMERIC.read("0.75") == NUMERIC.read("3/4") == NUMERIC.read(r"\frac{6}{8}")
    assert NUMERIC.read("1234") == NUMERIC.read("1,234") and NUMERIC.read("12") != NUMERIC.read("12.5")


@pytest.mark.parametrize(("text", "expected"), [
    ("<think>7 * 6 = 43? no, 42</think>The answer is 41.", "41"),
    ("<think>99</think>", None),                          # only reasoning: no answer
    ("41 <THINKING>and 99</THINKING>", "41"),
    ("Let me see... 99</think> So: 5", "5"),              # a stray closing tag: what precedes it is reasoning
    ("Answer 3. <think>and then 99 more", "3"),           # cut off while thinking
])
def test_reasoning_is_never_read(text: str, expected: str | None) -> None:
    assert NUMERIC.read(text) == expected


def test_without_reasoning_keeps_only_the_answer() -> None:
    assert without_reasoning("a <think>b</think> c <think>d</think> e").split() == ["a", "c", "e"]
    assert without_reasoning("plain") == "plain"


@pytest.mark.parametrize(("text", "expected"), [
    ("Answer: B", "B"), ("answer: b", "B"), ("**Answer:** C", "C"), ("**Answer**: (D)", "D"),
    ("The answer is B.", "B"), ("The correct answer is: (C) Paris", "C"), (r"Final answer: \boxed{E}", "E"),
    ("I pick (B)", "B"), ("It has to be **C**.", "C"), ("Hmm.\nD\n", "D"), ("Hmm.\n(A)\n", "A"),
    ("So:\n**B.**", "B"), ("That is option D", "D"), ("(A) no, (B) no, (C) yes", "C"),     # the last mark
    ("Answer: A\n\n(B) and (C) are wrong because ...", "A"),   # a stated answer beats later marks
    ("Answer: B\nOn reflection, the answer is C.", "C"),       # the last stated answer wins
])
def test_choice_reads_the_chosen_letter(text: str, expected: str) -> None:
    assert CHOICE.read(text) == expected


@pytest.mark.parametrize("text", [
    "The answer is a good question", "Answer: Based on the text, it depends", "A) Paris\nB) Rome",
    "I think so", "answers: none", "<think>Answer: B</think>", "",
])
def test_choice_without_a_chosen_letter_is_none(text: str) -> None:
    assert CHOICE.read(text) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("Paris", "paris"), ("  PARIS. ", "paris"), ("**Paris**!", "paris"), ("_Paris_?", "paris"),
    ("`paris`", "paris"), ("The  city\nof   Paris...", "the city of paris"), ("snake_case", "snake_case"),
    ("<think>hmm</think>Paris", "paris"), ("\uff30aris", "paris"),  # NFKC: a full-width P
    ("...", None), ("", None), ("**  **", None),
])
def test_exact_normalises_the_whole_text(text: str, expected: str | None) -> None:
    assert EXACT.read(text) == expected


def test_exact_keeps_inner_punctuation_apart() -> None:
    assert EXACT.read("Paris, France") != EXACT.read("Paris France")


def test_a_pattern_reads_its_group_of_the_last_match_normalised() -> None:
    reader = parse_reader(r"re:FINAL=(\S*)")
    assert reader.read("FINAL=draft ... FINAL=**Yes**") == "yes"
    assert reader.read("FINAL=one FINAL=") == "one"                  # an empty last group is skipped
    assert reader.read("nothing final") is None
    assert parse_reader(r"re:(?i)verdict:\s*(?P<v>guilty|innocent)").read("Verdict: GUILTY.") == "guilty"
    assert parse_reader(r"re:(?:a|b)(x)?").read("a b") is None       # the group never took part
    assert reader.read("<think>FINAL=no</think> FINAL=si") == "si"


def test_a_runaway_pattern_reads_as_no_answer() -> None:
    """Catastrophic backtracking on a model's text ends as None (the request aggregates), not a hang;
    the same pattern on a short text, where backtracking is cheap, finds its answer."""
    reader = parse_reader(r"re:(?:(?:a|aa)+c|\s)(y)")
    assert reader.read("a" * 10 + "b y") == "y"
    assert reader.read("a" * 80 + "b y") is None


@pytest.mark.parametrize(("option", "message"), [
    ("maths", "unknown answer reader 'maths': expected one of numeric, choice, exact or re:PATTERN"),
    ("Numeric", "unknown answer reader"), ("", "unknown answer reader"),
    ("re:", "needs a pattern"), ("re:(unclosed", "does not compile"), ("re:no group", "exactly one capturing group"),
    (r"re:(a)(b)", "(it has 2)"), ("re:(" + "a" * 1000 + ")", "at most 1000"),
])
def test_bad_options_raise_value_errors_that_say_what_is_allowed(option: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_reader(option)
    assert message in str(raised.value)


@pytest.mark.parametrize("option", [None, 3, ["numeric"]])
def test_a_non_string_option_is_refused(option: object) -> None:
    with pytest.raises(ValueError, match="expected a string"):
        parse_reader(option)


def test_readers_are_values() -> None:
    assert parse_reader("numeric") == NUMERIC and str(parse_reader(r"re:(\d+)")) == r"re:(\d+)"
    assert parse_reader(r"re:(\d+)") == parse_reader(r"re:(\d+)") and len({NUMERIC, CHOICE, EXACT}) == 3
    assert parse_reader(DEFAULT_READER) == EXACT


def texts(*answers_: str) -> list[Sample]:
    return [sample(f"Answer: {a}") for a in answers_]


def test_agreement_at_the_share_asked() -> None:
    proposals = texts("4", "4", "4", "5", "4", "4")
    found = agreement(proposals, NUMERIC, 5 / 6)
    assert found == Agreement(answer="4", count=5, total=6, index=0) and found.share == pytest.approx(5 / 6)
    assert found.trace_entry() == {"reason": "agree", "share": 0.833}
    assert agreement(proposals, NUMERIC, 1) is None
    assert agreement(texts("4", "5", "4", "5", "4", "6"), NUMERIC, 0.5) == Agreement("4", 3, 6, 0)
    assert agreement(texts("4", "5", "4", "5", "6", "7"), NUMERIC, 0.5) is None


def test_unreadable_proposals_count_in_the_denominator() -> None:
    proposals = [*texts("7", "7"), sample("I cannot tell."), sample("no idea")]
    assert agreement(proposals, NUMERIC, 0.5) == Agreement("7", 2, 4, 0)
    assert agreement(proposals, NUMERIC, 0.6) is None
    assert answers(proposals, NUMERIC) == ["7", "7", None, None]
    assert agreement([sample("?"), sample("??")], NUMERIC, 0.1) is None
    assert agreement([], NUMERIC, 1) is None


def test_the_answer_is_the_first_complete_proposal_with_it() -> None:
    proposals = [sample("Answer: 9", cut_off=True), sample("Answer: 8"), sample("So 9.0"), sample("Answer: 9")]
    assert agreement(proposals, NUMERIC, 0.75) == Agreement("9", 3, 4, 2)   # the cut-off one votes, is not chosen


def test_no_agreement_when_every_agreeing_proposal_was_cut_off() -> None:
    proposals = [sample("Answer: 9", cut_off=True), sample("Answer: 9", cut_off=True), sample("Answer: 8")]
    assert agreement(proposals, NUMERIC, 0.5) is None   # and not the minority answer 8 instead


def test_a_tie_goes_to_the_answer_that_reached_the_count_first() -> None:
    assert agreement(texts("A", "B", "B", "A"), CHOICE, 0.5) == Agreement("B", 2, 4, 1)
    assert agreement(texts("A", "B", "A", "B"), CHOICE, 0.5) == Agreement("A", 2, 4, 0)
    assert agreement(texts("A", "B", "B", "A", "A"), CHOICE, 0.4) == Agreement("A", 3, 5, 0)  # most votes first


def test_one_usable_proposal_agrees_with_itself() -> None:
    """Documented, not special-cased: whether one sample may end a request is the caller's choice."""
    assert agreement(texts("3"), NUMERIC, 1) == Agreement("3", 1, 1, 0)


def test_texts_and_candidates_are_read_too() -> None:
    assert agreement(["Paris.", "**paris**", "Rome"], EXACT, 0.6) == Agreement("paris", 2, 3, 0)
    cut = Candidate(text="Paris", choice=Choice(content="Paris", finish_reason="length"))
    assert agreement([cut, "PARIS"], EXACT, 1) == Agreement("paris", 2, 2, 1)


def test_the_readers_differ_in_what_agrees() -> None:
    proposals = [sample("After some work: Answer: 12"), sample("Clearly 12.0"), sample("answer: 12")]
    assert agreement(proposals, NUMERIC, 1) is not None
    assert agreement(proposals, EXACT, 1) is None
    assert agreement(proposals, parse_reader(r"re:(?i)answer:\s*(\d+)"), 2 / 3) == Agreement("12", 2, 3, 0)


@pytest.mark.parametrize(("share", "total", "needed"), [
    (1, 6, 6), (1.0, 1, 1), (0.5, 6, 3), (0.5, 5, 3), (0.7, 10, 7), (0.3, 10, 3), (2 / 3, 3, 2), (0.66, 3, 2),
    (0.67, 3, 3), (0.01, 6, 1), (0.83, 6, 5), (5 / 6, 6, 5), (0.1, 0, 1),
])
def test_votes_needed_is_exact_for_shares_written_or_computed(share: float, total: int, needed: int) -> None:
    assert votes_needed(share, total) == needed


def test_seven_of_ten_reach_a_share_of_0_7() -> None:
    proposals = texts(*["1"] * 7, *["2"] * 3)
    assert agreement(proposals, NUMERIC, 0.7) == Agreement("1", 7, 10, 0)   # 0.7 * 10 is 7.000000000000001


@pytest.mark.parametrize("share", [0, -0.5, 1.01, float("nan"), float("inf"), True, "1", None])
def test_a_share_outside_0_1_is_refused(share: object) -> None:
    with pytest.raises(ValueError, match=r"share in \(0, 1\]"):
        check_share(share)
    with pytest.raises(ValueError):
        agreement(texts("1"), NUMERIC, share)  # type: ignore[arg-type]
