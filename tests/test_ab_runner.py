"""`selfmoa ab` against a scripted endpoint over HTTP: rows, traces, cost, errors, the trace fallback, judging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from selfmoa.ab.app import Settings, run_ab
from selfmoa.ab.diversity import vendi_score
from selfmoa.ab.report import SIMULATOR_NOTE
from selfmoa.ab.stats import mcnemar_exact
from tests.ab_backend import ScriptedEndpoint, completion, error, number_in, say_tasks

PROPOSALS = ["Answer: {n}", "Working... so {n}.", "Answer: {wrong}"]  # two of three right


def trace(n: int) -> dict[str, Any]:
    texts = [p.format(n=n, wrong=n + 1) for p in PROPOSALS]
    return {"approach": "self_moa", "aggregator": "m", "rounds": 1, "sequential": False, "calls": 2,
            "proposals": [{"model": "m", "text": t, "finish_reason": "stop", "completion_tokens": 7} for t in texts],
            "failures": [{"model": "small", "reason": "HTTP 500: boom", "status": 500}],
            "usage_by_model": {"m": {"calls": 2, "prompt_tokens": 300, "completion_tokens": 40, "cached_tokens": 100},
                               "small": {"calls": 1, "prompt_tokens": 50, "completion_tokens": 0, "cached_tokens": 0}},
            "fallback": None, "wall_s": 0.1}


def native(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Baseline `m` right on even tasks; self_moa always right, traced; optillm's moa: completion tokens only."""
    n, model = number_in(body), body["model"]
    if model == "m":
        return 200, completion(f"Answer: {n if n % 2 == 0 else n + 1}", cached_tokens=4)
    if model == "self_moa-m":
        traced = trace(n) if body.get("moa", {}).get("trace") else None
        return 200, completion(f"Answer: {n}", prompt_tokens=350, completion_tokens=40, trace=traced)
    if n == 3:
        return error(500, "upstream exploded")
    return 200, completion(f"Answer: {n}", prompt_tokens=None, completion_tokens=40)


def run(tmp_path: Path, url: str, **overrides: Any) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    tasks = tmp_path / "tasks.jsonl"
    if not tasks.exists():
        tasks.write_text(say_tasks(6))
    fields: dict[str, Any] = {"tasks": str(tasks), "approaches": ["none", "self_moa", "moa"], "model": "m",
                              "out": tmp_path / "out", "url": url, "progress": False, "concurrency": 3}
    code = run_ab(Settings(**{**fields, **overrides}))
    out = fields["out"] if "out" not in overrides else overrides["out"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return code, json.loads((out / "summary.json").read_text()), rows


def line(summary: dict[str, Any], approach: str) -> dict[str, Any]:
    return next(entry for entry in summary["approaches"] if entry["approach"] == approach)


def test_rows_requests_and_summary_from_native_replies(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"m": {"prompt": 1.0, "completion": 2.0, "cached_prompt": 0.5},
                                  "small": {"prompt": 0.1, "completion": 0.2}}))
    with ScriptedEndpoint(native) as endpoint:
        code, summary, rows = run(tmp_path, endpoint.url, seed=5, prices=prices,
                                  moa={"self_moa": {"samples": 3}})
        ours, plain, optillm = (endpoint.requests_for(m) for m in ("self_moa-m", "m", "moa-m"))
    assert code == 0
    assert sorted((r["id"], r["approach"]) for r in rows) == sorted(
        (f"t{i}", a) for i in range(6) for a in ("none", "self_moa", "moa"))
    assert all(b["moa"] == {"samples": 3, "trace": True} and b["seed"] == 5 for b in ours) and len(ours) == 6
    assert all("moa" not in b for b in plain + optillm) and len(plain) == 6
    assert len(optillm) == 6 + 2  # the openai client retried t3's 500 twice before the row recorded it

    mine = next(r for r in rows if r["id"] == "t4" and r["approach"] == "self_moa")
    texts = [p.format(n=4, wrong=5) for p in PROPOSALS]
    assert mine["quality"] == pytest.approx(2 / 3) and mine["proposals"] == 3
    assert mine["diversity"] == pytest.approx(vendi_score(texts)) and mine["failed_proposals"] == 1
    assert mine["usage_by_model"]["small"]["prompt_tokens"] == 50
    assert next(r for r in rows if r["id"] == "t4" and r["approach"] == "none")["cached_tokens"] == 4
    failed = next(r for r in rows if r["id"] == "t3" and r["approach"] == "moa")
    assert failed["score"] is None and failed["error"] == "HTTP 500: upstream exploded"

    base, self_moa, moa = (line(summary, a) for a in ("none", "self_moa", "moa"))
    assert (base["correct"], base["accuracy"], base["p_vs_baseline"]) == (3, 0.5, None)
    assert (self_moa["accuracy"], self_moa["wins"], self_moa["losses"]) == (1.0, 3, 0)
    assert self_moa["p_vs_baseline"] == pytest.approx(mcnemar_exact(3, 0))
    assert (moa["correct"], moa["errors"], moa["wins"], moa["losses"]) == (5, 1, 2, 0)  # the error counts as wrong
    # cost per model from the trace: m 200 uncached + 100 cached prompt, 40 completion; small 50 prompt
    per_task = (200 * 1.0 + 100 * 0.5 + 40 * 2.0 + 50 * 0.1) / 1e6
    assert self_moa["cost"] == pytest.approx(6 * per_task) and self_moa["cost_complete"] is True
    assert base["cost"] == pytest.approx(6 * (6 * 1.0 + 4 * 0.5 + 5 * 2.0) / 1e6)  # 4 of 10 prompt tokens cached
    assert (moa["cost"], moa["cost_complete"], moa["prompt_tokens"], moa["tokens_complete"]) == (None, False, None,
                                                                                                  False)
    assert moa["cost_lower_bound"] == pytest.approx(5 * 40 * 2.0 / 1e6)
    assert self_moa["quality"] == pytest.approx(2 / 3)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "`moa`: its replies did not report every token count" in report
    assert SIMULATOR_NOTE not in report


def test_a_run_where_everything_fails_still_writes_the_summary(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    with ScriptedEndpoint(lambda body: error(404, "The model `m` does not exist")) as endpoint:
        code, summary, rows = run(tmp_path, endpoint.url)
    assert code == 1
    assert "every request failed" in capsys.readouterr().err
    assert [line(summary, a)["errors"] for a in ("none", "self_moa", "moa")] == [6, 6, 6]
    assert all(r["score"] is None and r["error"] == "HTTP 404: The model `m` does not exist" for r in rows)
    assert (tmp_path / "out" / "report.md").exists()


def test_an_endpoint_refusing_moa_trace_is_asked_without_it_once_per_approach(tmp_path: Path) -> None:
    def older(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("moa", {}).get("trace"):
            return error(400, "self_moa: moa.trace: unknown key", param="moa.trace")
        return native(body)

    with ScriptedEndpoint(older) as endpoint:
        code, summary, rows = run(tmp_path, endpoint.url, concurrency=1)
        traced = [b for b in endpoint.requests_for("self_moa-m") if b.get("moa", {}).get("trace")]
    assert code == 0 and len(traced) == 1
    ours = [r for r in rows if r["approach"] == "self_moa"]
    assert len(ours) == 6 and all(r["error"] is None and r["quality"] is None for r in ours)
    assert "`self_moa`: the endpoint refused `moa.trace`" in (tmp_path / "out" / "report.md").read_text()


def test_the_report_says_when_the_endpoint_is_the_simulator(tmp_path: Path) -> None:
    with ScriptedEndpoint(native, owner="selfmoa-sim") as endpoint:
        run(tmp_path, endpoint.url, approaches=["none"])
    assert SIMULATOR_NOTE in (tmp_path / "out" / "report.md").read_text()


def judge_script(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Candidates write GOOD on even tasks; the judge prefers GOOD; task 5's verdicts have no tag;
    the baseline fails on task 4."""
    if body["model"] == "judge":
        prompt = body["messages"][-1]["content"]
        a = prompt.split('<response id="A">')[1].split("</response>")[0]
        b = prompt.split('<response id="B">')[1].split("</response>")[0]
        if "Say 5." in prompt:
            return 200, completion("Both fine, I cannot decide.")
        verdict = "A" if "GOOD" in a and "GOOD" not in b else "B" if "GOOD" in b and "GOOD" not in a else "tie"
        return 200, completion(f"Reasoning.\n<winner>{verdict}</winner>")
    n = number_in(body)
    if body["model"] == "m":
        return error(500, "baseline down") if n == 4 else (200, completion(f"plain {n}"))
    return 200, completion(f"GOOD {n}" if n % 2 == 0 else f"fine {n}")


def test_judge_mode_judges_both_orders_against_the_baseline(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "prompt": f"Say {i}.", "scorer": "judge"}) + "\n"
                             for i in range(6)))
    with ScriptedEndpoint(judge_script) as endpoint:
        code, summary, rows = run(tmp_path, endpoint.url, approaches=["none", "self_moa"], judge="judge", seed=1)
        judged = endpoint.requests_for("judge")
    assert code == 0
    scores = {r["id"]: r["score"] for r in rows if r["approach"] == "self_moa"}
    assert scores == {"t0": 1.0, "t1": 0.5, "t2": 1.0, "t3": 0.5, "t4": 1.0, "t5": 0.5}
    assert all(r["score"] == 0.5 for r in rows if r["approach"] == "none" and r["error"] is None)
    assert len(judged) == 2 * 5  # both orders, every task but t4 (its baseline failed: a win unjudged)
    t0 = [b["messages"][-1]["content"] for b in judged if "Say 0." in b["messages"][-1]["content"]]
    assert sorted(p.index("GOOD 0") < p.index("plain 0") for p in t0) == [False, True]  # A/B swapped
    assert all(b["temperature"] == 0 for b in judged)
    mine = line(summary, "self_moa")
    assert mine["ci_method"] == "bootstrap" and mine["judge_unparsed"] == 2
    assert mine["accuracy"] == pytest.approx(0.75) and (mine["wins"], mine["losses"]) == (3, 0)
    assert "2 judge verdict(s) had no readable" in (tmp_path / "out" / "report.md").read_text()


def test_judge_tasks_need_a_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_ab(Settings(tasks="open", approaches=["none"], model="m", out=tmp_path / "o", url="http://127.0.0.1:9/v1",
                           progress=False))
    assert code == 1 and "need --judge" in capsys.readouterr().err
