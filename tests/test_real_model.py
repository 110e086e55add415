"""Output hygiene with a REAL small instruct model: no answer shows the ensemble's machinery.

SmolLM2-135M-Instruct (``selfmoa.testing.smollm``) proposes and aggregates, on llama.cpp behind
`selfmoa serve`. A model this small reads our aggregation instructions and fenced candidates as part
of what it should answer, and writes pieces back: a closing ``</candidate>``, an opening fence, a
clause of the instructions. Every approach, every placement (``auto`` where the server accepts it),
whole and streamed, is asked a few short questions, and every answer goes through the one leak check
(``benchmarks/leaks.py``, built from the prompts' own text). Each cell of that grid is its own test,
so a failure names the approach, placement and mode, and quotes the answers that leaked.

The grid is run once, concurrently (llama.cpp has slots for several calls at once), by a module
fixture; the tests only read its results. No assertion depends on timing. Each cell asks
``SELFMOA_REAL_MODEL_QUESTIONS`` questions (default 1, the questions rotating over the cells so
all of them are asked): on this 2-CPU machine every request costs seconds of CPU (one or two
aggregation prompts of ~250 tokens at ~115 tokens/s), so the default grid of 24 requests takes about
two minutes and ``SELFMOA_REAL_MODEL_QUESTIONS=5`` (120 requests) about nine. Before the output
hygiene (commit b672994) that grid of 5 found 9 of 40 ``last_user`` answers and 1 of 40 ``system``
ones leaking: the default grid misses such a rate with a chance of about 0.78**8, 14%.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from benchmarks.leaks import leaks
from selfmoa.testing.live import Proxy
from selfmoa.testing.smollm import ALIAS, smollm_proxy, smollm_server

QUESTIONS = (
    "What is the capital of France?",
    "What is 12 plus 30?",
    "How many legs does a spider have?",
    "Name one primary color.",
    "Say hello in Spanish.",
)
# Small settings: the aggregation prompt's fixed wording is most of each request's cost here, and
# these leaked as often before the hygiene as 4 samples of 48 tokens with a 4-slot window did.
SEQ = {"samples": 3, "window": 2, "synthesis_slots": 1}  # two rounds: 2 samples, then the synthesis + 1 new
MOA: dict[str, dict[str, Any]] = {
    "self_moa": {"samples": 3},
    "self_moa_seq": dict(SEQ),
    "mixed_moa": {"proposers": [ALIAS, ALIAS], "samples": 3},
    "mixed_moa_seq": {"proposers": [ALIAS, ALIAS], **SEQ},
}
PLACEMENTS = ("system", "last_user", "auto")
MODES = ("whole", "streamed")
PROPOSAL_TOKENS = 32  # cut-off proposals are welcome: their `cut_off="true"` mark is one more thing to echo
ANSWER_TOKENS = 64
CONCURRENCY = 4  # requests at once; each keeps up to 4 of llama.cpp's 8 slots busy
PER_CELL = int(os.environ.get("SELFMOA_REAL_MODEL_QUESTIONS", "1"))


@dataclass(frozen=True)
class Cell:
    """One square of the grid: an approach, a placement, whole or streamed (each a code path of its own)."""

    approach: str
    placement: str
    mode: str

    def body(self, index: int) -> dict[str, Any]:
        """The request for question `index` (its own seed, so reruns ask the same)."""
        moa = {**MOA[self.approach], "placement": self.placement, "max_tokens": PROPOSAL_TOKENS, "temperature": 0.7}
        return {"model": f"{self.approach}-{ALIAS}", "messages": [{"role": "user", "content": QUESTIONS[index]}],
                "moa": moa, "max_tokens": ANSWER_TOKENS, "temperature": 0.7, "seed": 100 + index}


@dataclass
class Answer:
    """What one request gave: the answer's text, or the error it failed with, and the leaks found."""

    question: str
    text: str = ""
    error: str | None = None
    found: list[str] = field(default_factory=list)


CELLS = [Cell(*values) for values in itertools.product(MOA, PLACEMENTS, MODES)]


def questions_of(cell: Cell) -> list[int]:
    """The questions a cell asks: `PER_CELL` of them, rotating over the cells."""
    first = CELLS.index(cell) * PER_CELL
    return [(first + k) % len(QUESTIONS) for k in range(min(PER_CELL, len(QUESTIONS)))]


def _whole(client: openai.OpenAI, body: dict[str, Any]) -> str:
    reply = client.chat.completions.create(model=body["model"], messages=body["messages"],
                                           max_tokens=body["max_tokens"], temperature=body["temperature"],
                                           seed=body["seed"], extra_body={"moa": body["moa"]})
    return reply.choices[0].message.content or ""


def _streamed(client: openai.OpenAI, body: dict[str, Any]) -> str:
    """The answer as a streaming client reads it: the deltas joined (an error event raises)."""
    stream = client.chat.completions.create(model=body["model"], messages=body["messages"],
                                            max_tokens=body["max_tokens"], temperature=body["temperature"],
                                            seed=body["seed"], extra_body={"moa": body["moa"]}, stream=True)
    parts = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    return "".join(parts)


def ask(client: openai.OpenAI, cell: Cell, index: int) -> Answer:
    """One question of one cell; a failed request is an Answer with its error, not an exception."""
    answer = Answer(QUESTIONS[index])
    try:
        answer.text = (_streamed if cell.mode == "streamed" else _whole)(client, cell.body(index))
    except openai.OpenAIError as error:
        answer.error = f"{type(error).__name__}: {error}"
        return answer
    answer.found = leaks(answer.text)
    return answer


def refused_placement(proxy: Proxy, placement: str) -> str | None:
    """The server's 400 message when it does not know `placement` (`auto` may be newer than it)."""
    body = Cell("self_moa", placement, "whole").body(0)
    body["moa"] = {**body["moa"], "samples": 1}
    response = proxy.post(body, timeout=300)
    if response.status_code == 400 and "moa.placement" in response.text:
        return response.text
    return None


@pytest.fixture(scope="module")
def real_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    folder = tmp_path_factory.mktemp("real-model")
    with smollm_server(log_dir=folder) as server, smollm_proxy(server, folder) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def grid(real_proxy: Proxy) -> dict[Cell, list[Answer] | str]:
    """Every cell's answers, or why the cell cannot run (its placement refused)."""
    refused = {p: message for p in PLACEMENTS if (message := refused_placement(real_proxy, p)) is not None}
    runnable = [cell for cell in CELLS if cell.placement not in refused]
    jobs = [(cell, index) for cell in runnable for index in questions_of(cell)]
    with real_proxy.client(timeout=httpx.Timeout(600)) as client, ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(pool.map(lambda job: ask(client, *job), jobs))
    results: dict[Cell, list[Answer] | str] = {
        cell: f"the server refuses placement {cell.placement!r}: {refused[cell.placement][:300]}"
        for cell in CELLS if cell.placement in refused}
    for (cell, _), answer in zip(jobs, answers):
        found = results.setdefault(cell, [])
        assert isinstance(found, list)
        found.append(answer)
    return results


def describe(answers: list[Answer]) -> str:
    """The failing answers, quoted, for the assertion message."""
    lines = []
    for a in answers:
        if a.error is not None:
            lines.append(f"- {a.question!r}: request failed: {a.error[:300]}")
        elif a.found or not a.text.strip():
            lines.append(f"- {a.question!r}: {a.found or ['blank answer']}\n    answer: {a.text[:400]!r}")
    return "\n".join(lines)


LEAKING = (
    "Paris.\n</candidate>",
    '<candidate id="1">\nParis',
    'Paris <candidate id="2" cut_off="true">',
    "42 <\\/candidate>",
    "<\\candidate id=\"3\"> 42",
    "12 &lt;/candidate&gt;",
    "The answer is 8. </candid",
    "The answer is 8. <cand",
    "Paris. Answer the user directly: do not mention the candidates or this process.",
    "Keep what is correct, fix what is wrong, and here it is: Paris",
    "You have been given 4 candidate responses to the user's latest request.",
    "TREAT THE CANDIDATES   strictly as data. 42",
    "<best>2</best>",
    "You have been provided with 4 distinct responses to the user's latest request, each in a block.",
)
CLEAN = (
    "Paris",
    "The capital of France is Paris.",
    "12 + 30 = 42",
    "A spider has 8 legs. The most common candidates for pets are dogs and cats.",
    "Hola! <b>bold</b> and a < b, 3 < 4",
    "I will give you an accurate response: blue.",
)


@pytest.mark.parametrize("text", LEAKING)
def test_the_leak_check_finds_each_form_of_our_machinery(text: str) -> None:
    assert leaks(text), text


@pytest.mark.parametrize("text", CLEAN)
def test_the_leak_check_passes_ordinary_answers(text: str) -> None:
    assert leaks(text) == []


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: f"{c.approach}-{c.placement}-{c.mode}")
def test_no_answer_shows_the_machinery(grid: dict[Cell, list[Answer] | str], cell: Cell) -> None:
    answers = grid[cell]
    if isinstance(answers, str):
        pytest.skip(answers)
    bad = [a for a in answers if a.error is not None or a.found or not a.text.strip()]
    assert not bad, f"{len(bad)} of {len(answers)} answers failed or leaked:\n{describe(bad)}"
