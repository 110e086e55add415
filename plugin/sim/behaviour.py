"""What a simulated model writes: pure, deterministic functions of the prompt and a seeded draw.

Nothing here knows about HTTP. The server derives one `random.Random` per sample from a hash of
(seed, model, prompt, sample number) and hands it in, so every output is reproducible while
successive samples of the same prompt still differ.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from . import judge
from .answers import answer_of, normalise_number
from .profile import ModelProfile
from .reading import Reading, message_text, prompt_text
from .tasks import Task, find_task
from .wording import synthesis_text

V = TypeVar("V", bound=Hashable)


def estimate_tokens(text: str) -> int:
    """The simulator's one token estimate: a quarter of the characters, rounded up."""
    return math.ceil(len(text) / 4)


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Prompt size: per message, the estimate of its text plus 4 tokens of framing."""
    return sum(estimate_tokens(message_text(m)) + 4 for m in messages)


def draw(*parts: object) -> random.Random:
    """A generator seeded by a stable hash of `parts` (Python's own hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


# --- proposals -------------------------------------------------------------------------------

# Working is 1-3 sentences: [opening] [step] conclusion, each picked from its group.
_NUMERIC_WORKING = (
    ("Let me work through this step by step.", "The quantities given are {nums}.",
     "Reading the question, the key numbers are {nums}."),
    ("I set up the calculation in the order the problem describes.", "Each step uses the previous result.",
     "I keep track of the units as I go."),
    ("Combining them one step at a time leads to {ans}.", "Checking the arithmetic once more, I get {ans}.",
     "So the result is {ans}."),
)
_CHOICE_WORKING = (
    ("Let me consider each option in turn.", "Only one of the options can be right."),
    ("Most of the options can be ruled out quickly.", "Recalling the relevant fact narrows it down."),
    ("Option {ans} matches the question best.", "I am fairly confident the answer is option {ans}.",
     "That leaves option {ans}."),
)
_GENERIC_WORKING = (
    ("This is a simulated reply.", "Here is a brief, made-up response."),
    ("A real model would answer this in detail.", "The simulator has no knowledge of this topic."),
    ("It ends with a placeholder answer.", "Treat the answer below as a token, not a fact."),
)
_GENERIC_TOKENS = ("amber", "birch", "cobalt", "delta", "ember", "fjord", "garnet", "harbor")
_DELTAS = (-3, -2, -1, 1, 2, 3)


def _working(groups: Sequence[Sequence[str]], rng: random.Random, **values: str) -> str:
    """1-3 made-up sentences: always a conclusion, optionally preceded by an opening and a step."""
    count = rng.randint(1, 3)
    chosen = [rng.choice(group) for group in groups[len(groups) - count:]]
    return " ".join(sentence.format(**values) for sentence in chosen)


def wrong_answer(task: Task, rng: random.Random) -> str:
    """A plausible mistake; half the time the task's one "common" mistake, so errors can agree."""
    if task.kind == "choice":
        options = [letter for letter in task.options if letter != task.answer]
    else:
        value = Decimal(task.answer)
        options = [normalise_number(str(value + delta)) or task.answer for delta in _DELTAS]
    common = options[int(hashlib.sha256(task.id.encode()).hexdigest(), 16) % len(options)]
    return common if rng.random() < 0.5 else rng.choice(options)


def task_answer(task: Task, accuracy: float, rng: random.Random) -> str:
    """The final answer a model gives to a bundled task: correct with probability `accuracy`."""
    return task.answer if rng.random() < accuracy else wrong_answer(task, rng)


def settled_answer(task: Task, model: ModelProfile, mind: str, rng: random.Random) -> str | None:
    """The model's settled answer to `task` for this sample, or None to draw one afresh.

    With probability `consistency` a sample repeats the answer the model settled on for the task (one
    per model, task and seed, itself right with probability `accuracy`), as a real model's mistakes
    repeat across samples of one question; so each sample stays right with probability `accuracy`,
    but samples of a task agree more often. At 0 no draw is made: outputs are as before the field.
    """
    if model.consistency <= 0 or rng.random() >= model.consistency:
        return None
    return task_answer(task, model.accuracy_for(task.task_set), draw("settled", mind, task.id))


def task_reply(task: Task, accuracy: float, rng: random.Random, answer: str | None = None) -> str:
    """A proposal for a bundled task: `answer` if given, else correct with probability `accuracy`."""
    answer = task_answer(task, accuracy, rng) if answer is None else answer
    if task.kind == "choice":
        working = _working(_CHOICE_WORKING, rng, ans=answer)
    else:
        numbers = re.findall(r"\d+(?:\.\d+)?", task.stem)[:4] or ["in the question"]
        nums = numbers[0] if len(numbers) == 1 else ", ".join(numbers[:-1]) + " and " + numbers[-1]
        working = _working(_NUMERIC_WORKING, rng, nums=nums, ans=answer)
    return f"{working}\nAnswer: {answer}"


def generic_token(question: str) -> str:
    """The final answer to an unknown prompt: a token that depends on the question only."""
    return _GENERIC_TOKENS[int(hashlib.sha256(question.encode()).hexdigest(), 16) % len(_GENERIC_TOKENS)]


def generic_reply(question: str, rng: random.Random) -> str:
    """A reply to an unknown prompt: echoes a few of its words; the final token depends on it only."""
    words = question.split()
    echo = " ".join(words[:8]) + (" ..." if len(words) > 8 else "")
    return f'You asked: "{echo}". {_working(_GENERIC_WORKING, rng)}\nAnswer: {generic_token(question)}'


def tool_result_reply(messages: Sequence[Mapping[str, Any]], model: ModelProfile, rng: random.Random) -> str:
    """The reply after a tool's result came back: it quotes the result, then answers the conversation's
    bundled task as usual (or with the generic token), so a client can see the result was read."""
    quoted = " ".join(message_text(messages[-1]).split())[:60]
    task = find_task(prompt_text(messages))
    if task is None:
        answer = generic_token(last_user_text(messages))
    else:
        answer = task_answer(task, model.accuracy_for(task.task_set), rng)
    return f"Using the tool result: {quoted}\nAnswer: {answer}"


def proposal(messages: Sequence[Mapping[str, Any]], model: ModelProfile, rng: random.Random, mind: str = "") -> str:
    """A first answer to the prompt; `mind` names the model and seed whose settled answers it keeps."""
    if messages and messages[-1].get("role") == "tool":
        return tool_result_reply(messages, model, rng)
    question = last_user_text(messages)
    task = find_task(question)
    if task is None:
        return generic_reply(question, rng)
    settled = settled_answer(task, model, mind, rng)
    return task_reply(task, model.accuracy_for(task.task_set), rng, settled)


# --- aggregation -----------------------------------------------------------------------------

def majority(answers: Sequence[V | None]) -> V | None:
    """The most common answer (or call set); ties go to the one that appears first."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def synthesis(candidates: Sequence[str], skill: float, rng: random.Random) -> str:
    """An aggregate answer: the majority with probability `skill`, else a random candidate's.

    The answer is drawn first and its wording after (wording.py), so rewording never moves an answer.
    """
    answers = [answer_of(c) for c in candidates]
    if rng.random() < skill:
        answer = majority(answers)
    else:
        answer = rng.choice(answers) if answers else None
        answer = answer if answer is not None else majority(answers)
    return synthesis_text(answers, answer, rng)


def selection(candidates: Sequence[str], skill: float, rng: random.Random) -> str:
    """`<best>k</best>`: a candidate carrying the majority answer with probability `skill`."""
    if not candidates:
        return "<best>1</best>"
    answers = [answer_of(c) for c in candidates]
    top = majority(answers)
    holders = [i for i, a in enumerate(answers) if top is not None and a == top]
    index = rng.choice(holders) if holders and rng.random() < skill else rng.randrange(len(candidates))
    return f"<best>{index + 1}</best>"


def reply(messages: Sequence[Mapping[str, Any]], reading: Reading, model: ModelProfile, rng: random.Random,
          mind: str = "") -> str:
    """The model's visible answer to a prompt, by what the prompt asks."""
    if reading.kind == "judge":
        return judge.verdict(prompt_text(messages), model.judge_skill, rng)
    if reading.kind == "select":
        return selection(reading.candidates, model.aggregator_skill, rng)
    if reading.kind == "aggregate":
        return synthesis(reading.candidates, model.aggregator_skill, rng)
    return proposal(messages, model, rng, mind)


def reasoning_text(messages: Sequence[Mapping[str, Any]], rng: random.Random) -> str:
    """Made-up chain of thought for reasoning models."""
    words = " ".join(last_user_text(messages).split()[:6])
    closing = rng.choice(
        ("Let me double-check before answering.", "I should verify the key step.", "That seems right.")
    )
    return f'The user asks: "{words}". I need to think about this carefully. {closing}'


# --- shaping the output ----------------------------------------------------------------------

def apply_stop(text: str, stop: str | Sequence[str] | None) -> str:
    """Cut the text before the earliest stop string (stop strings are not returned, as in OpenAI)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    cuts = [text.find(s) for s in stops if s and s in text]
    return text[: min(cuts)] if cuts else text


def clip_tokens(text: str, limit: int | None) -> tuple[str, bool]:
    """The text cut to at most `limit` estimated tokens, and whether it had to be cut."""
    if limit is None or estimate_tokens(text) <= limit:
        return text, False
    return text[: limit * 4], True


def truncate(text: str) -> str:
    """A visibly unfinished response: the first 40 % of it, final answer line gone."""
    return text[: max(1, int(len(text) * 0.4))] if text else text
