"""Turning an answer into its `results.jsonl` row: score, usage and, from a trace, the proposals' view.

Rows hold facts (outputs, tokens, per-model usage); money is computed later from them, so a
corrected price table re-prices a finished run without asking anything again.
"""

from __future__ import annotations

from typing import Any

from .diversity import vendi_score
from .endpoint import Answer, Trace, is_ours, request_model
from .judge import Judgement
from .scorers import score
from .tasks import Task


def base_row(task: Task, approach: str, model: str, answer: Answer) -> dict[str, Any]:
    """An answer's row before scoring; ours carry their trace's fields (judged ones too: their cost is
    priced per model from `usage_by_model`)."""
    row = {"id": task.id, "approach": approach, "model": request_model(approach, model), "output": answer.output,
           "score": None, "latency_s": round(answer.latency_s, 4), "prompt_tokens": answer.prompt_tokens,
           "completion_tokens": answer.completion_tokens, "cached_tokens": answer.cached_tokens, "error": answer.error,
           "early_exit": None}
    if is_ours(approach):
        row.update(trace_fields(task, answer.trace))
    return row


def trace_fields(task: Task, trace: Trace | None) -> dict[str, Any]:
    """Our approaches' extra columns: proposal quality (mean score), diversity (Vendi), counts, usage,
    and `early_exit` (the trace's: `{"reason": "agree", "share": ...}` when the proposals agreed and
    the aggregation was skipped, else null)."""
    if trace is None:
        return {"quality": None, "diversity": None, "proposals": None, "usage_by_model": None, "early_exit": None}
    texts = [p.text or "" for p in trace.proposals]
    quality = None
    if texts and task.kind != "judge":
        quality = sum(score(task, text) for text in texts) / len(texts)
    usage = {name: u.model_dump() for name, u in trace.usage_by_model.items()} if trace.usage_by_model else None
    early = trace.early_exit.model_dump() if trace.early_exit is not None else None
    return {"quality": quality, "diversity": vendi_score(texts), "proposals": len(texts),
            "failed_proposals": len(trace.failures), "aggregator": trace.aggregator, "usage_by_model": usage,
            "early_exit": early}


def answer_row(task: Task, approach: str, model: str, answer: Answer) -> dict[str, Any]:
    """The row of an answer scored on its own (every scorer but `judge`, and the judge's baseline)."""
    row = base_row(task, approach, model, answer)
    if answer.error is None:
        row["score"] = 0.5 if task.kind == "judge" else score(task, answer.output or "")
        if task.kind == "judge":
            row["judge"] = {"note": "baseline: a tie with itself by definition"}
    return row


def judged_row(row: dict[str, Any], judgement: Judgement) -> dict[str, Any]:
    verdicts = [judgement.candidate_first, judgement.candidate_second]
    return {**row, "score": judgement.score, "judge": {"verdicts": verdicts, "unparsed": judgement.unparsed}}


def unjudged_row(row: dict[str, Any], *, score_: float | None, note: str, error: str | None = None) -> dict[str, Any]:
    """A judge-task row decided without a verdict (the baseline failed) or whose judging failed."""
    return {**row, "score": score_, "error": error, "judge": {"note": note}}
