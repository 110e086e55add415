"""The choices of one call: what the model writes, in the form asked for, with its content faults.

Pure of HTTP: the server hands in the validated request and the parsed prompt, and gets the choices
back, ready for the wire. Order of the shaping, from the model's reply outwards: the structured form
(`response_format`), an echoing aggregator's leak, the reasoning's `<think>` block, the truncated or
empty fault, `stop`, the token limit.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

from . import behaviour, formats, leaks, tools
from .logprobs import content_logprobs
from .profile import ModelProfile
from .protocol import ChatRequest, tool_call_id
from .reading import Reading
from .state import SimState


@dataclass
class Choice:
    """One generated choice: text, or tool calls (then `content` is None), before it goes on the wire."""

    content: str | None
    reasoning: str | None
    finish_reason: str
    tokens: int
    reasoning_tokens: int = 0
    """The part of `tokens` that is reasoning (`reasoning_content`, or `<think>` blocks in the content)."""
    calls: list[tools.ToolCall] = field(default_factory=list)
    call_ids: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None
    """`logprobs.content` when the request asked for logprobs."""
    leak: leaks.LeakKind | None = None
    """How this reply leaked the aggregation prompt's machinery, if it did (the call log shows it)."""

    @property
    def output(self) -> str:
        """What the call log shows: the text, or one `[tool call] name(arguments)` line per call."""
        return self.content if self.content is not None else "\n".join(c.line() for c in self.calls)


@dataclass(frozen=True)
class Shaping:
    """What the request and the fault draws decide about one choice besides the model's reply."""

    form: formats.OutputFormat
    fault: str | None
    """`truncated`, `empty` or None."""
    leak: leaks.LeakKind | None
    leak_rng: random.Random
    mind: str = ""
    """Which model and seed the reply's settled answers belong to (see `behaviour.settled_answer`)."""


_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL)
"""A `<think>` block as it is left in the content: closed, or cut off by a stop or the token limit."""


def reasoning_tokens(content: str, reasoning: str | None) -> int:
    """The tokens of a reply's reasoning, as `usage.completion_tokens_details.reasoning_tokens` counts
    them (OpenAI, vLLM): the `reasoning_content` field's, or what is left of `<think>` blocks in the
    content after any cut. Counted with the one estimate, so it never exceeds the completion's tokens."""
    if reasoning is not None:
        return behaviour.estimate_tokens(reasoning)
    return behaviour.estimate_tokens("".join(_THINK_BLOCK.findall(content)))


def content_fault(state: SimState, name: str, model: ModelProfile, seq: int, index: int) -> str | None:
    """Truncated/empty is drawn per choice, so one bad sample in an n-call leaves the others usable."""
    u = state.uniform("content", name, seq, index)
    if u < model.rate_truncated:
        return "truncated"
    return "empty" if u < model.rate_truncated + model.rate_empty else None


def _shaping(state: SimState, model: ModelProfile, req: ChatRequest, reading: Reading, seq: int,
             index: int) -> Shaping:
    """The per-choice draws, from their own generators: the model's reply stays the same with or without them."""
    leak_rng = behaviour.draw(state.profile.seed, state.seed, "leak", req.model, seq, index)
    leak = leaks.draw_leak(model.leak_rate, model.leak_kinds, leak_rng) if reading.candidates else None
    return Shaping(req.output_format, content_fault(state, req.model, model, seq, index), leak, leak_rng,
                   mind=f"{state.profile.seed}:{state.seed}:{req.model}")


def _call_choice(calls: list[tools.ToolCall], messages: list[dict[str, Any]], model: ModelProfile,
                 rng: random.Random) -> Choice:
    """A tool-call choice. Its reasoning travels only as a field: its content must stay null."""
    reasoning = behaviour.reasoning_text(messages, rng) if model.reasoning == "field" else None
    tokens = sum(behaviour.estimate_tokens(c.name + c.arguments) for c in calls)
    thought = behaviour.estimate_tokens(reasoning or "")
    return Choice(None, reasoning, "tool_calls", tokens + thought, thought, calls)


def _written(text: str, reasoning: str | None, model: ModelProfile, reading: Reading,
             shaping: Shaping) -> tuple[str, str | None, leaks.LeakKind | None]:
    """The reply in its requested form, leaked if drawn so, its reasoning in tags if the model uses them.

    Structured content is JSON only: a think-tags model's reasoning is left out of it, as a
    grammar-constrained model cannot write it.
    """
    if shaping.form.structured:
        text = formats.render(shaping.form, formats.reply_answer(reading.kind, text))
    leak = shaping.leak
    if leak is not None:
        text, leak = leaks.leaked(text, leak, reading.instructions, shaping.leak_rng)
    if model.reasoning == "think_tags":
        text = text if shaping.form.structured else f"<think>\n{reasoning}\n</think>\n\n{text}"
        reasoning = None
    return text, reasoning, leak


def make_choice(messages: list[dict[str, Any]], reading: Reading, model: ModelProfile, req: ChatRequest,
                rng: random.Random, shaping: Shaping) -> Choice:
    """One choice: tool calls if the model makes any; else the reply, shaped (see the module's docstring)."""
    calls = tools.plan(messages, reading, req.tool_request)
    if calls:
        return _call_choice(calls, messages, model, rng)
    text = behaviour.reply(messages, reading, model, rng, mind=shaping.mind)
    reasoning = behaviour.reasoning_text(messages, rng) if model.reasoning != "none" else None
    text, reasoning, leak = _written(text, reasoning, model, reading, shaping)
    finish = "stop"
    if shaping.fault == "truncated":
        text, finish = behaviour.truncate(text), "length"
    elif shaping.fault == "empty":
        text = ""
    text, cut = behaviour.clip_tokens(behaviour.apply_stop(text, req.stop), req.token_limit)
    finish = "length" if cut else finish
    thought = reasoning_tokens(text, reasoning)
    tokens = behaviour.estimate_tokens(text) + behaviour.estimate_tokens(reasoning or "")
    return Choice(text, reasoning, finish, tokens, thought, leak=leak)


def _annotate(choice: Choice, seq: int, index: int, top: int | None, rng: random.Random) -> Choice:
    """Wire details that leave what the model wrote unchanged: tool call ids and made-up logprobs."""
    ids = [tool_call_id(seq, index, k) for k in range(len(choice.calls))]
    logprobs = None if top is None else content_logprobs(choice.content or "", top, rng)
    return dataclasses.replace(choice, call_ids=ids, logprobs=logprobs)


def generate(state: SimState, model: ModelProfile, req: ChatRequest, messages: list[dict[str, Any]],
             reading: Reading, seq: int) -> list[Choice]:
    """The choices of one call, each from its own sample number of this (model, prompt)."""
    n = req.n or 1
    count = {"honour": n, "refuse": n, "cap": min(n, model.max_n), "ignore": 1}[model.n_mode]
    prompt_key = json.dumps(messages, sort_keys=True)
    choices = []
    for index in range(count):
        sample = state.next_sample(req.model, prompt_key, greedy=req.temperature == 0)
        key = (state.profile.seed, state.seed, req.model, prompt_key, sample)
        shaping = _shaping(state, model, req, reading, seq, index)
        choice = make_choice(messages, reading, model, req, behaviour.draw(*key), shaping)
        choices.append(_annotate(choice, seq, index, req.top, behaviour.draw(*key, "logprobs")))
    return choices
