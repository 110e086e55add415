"""`selfmoa ab` for issue 16's trade-off: one approach twice under two labels (`self_moa,self_moa@agree`, each
with its own `--moa`), compared with each other (`--baseline self_moa`), and the early exits its traces report;
through the real command line against a scripted endpoint over HTTP."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from selfmoa.ab.command import _approaches
from selfmoa.ab.endpoint import Trace, base_approach, is_ours, request_model
from selfmoa.ab.report import EARLY_EXIT_COLUMN, table
from selfmoa.ab.stats import mcnemar_exact
from selfmoa.cli import main
from tests.ab_backend import ScriptedEndpoint, completion, number_in, say_tasks

AGREE = {"first": 3, "agree": 1, "answer": "numeric"}
TASKS = 6


def trace(n: int, *, early: bool, proposals: int) -> dict[str, Any]:
    texts = [f"Answer: {n}"] * proposals
    return {"approach": "self_moa", "aggregator": "m", "calls": 1 if early else 2,
            "proposals": [{"model": "m", "text": t, "finish_reason": "stop", "completion_tokens": 5} for t in texts],
            "failures": [], "usage_by_model": {"m": {"calls": 1, "prompt_tokens": 10 * proposals,
                                                     "completion_tokens": 5 * proposals, "cached_tokens": 0}},
            "early_exit": {"reason": "agree", "share": 1.0} if early else None, "fallback": None}


def script(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Plain `m` right on even tasks. `self_moa` with 6 samples always right, never early. With AGREE: even
    tasks exit early on 3 agreeing samples (right); odd tasks draw all 6 and aggregate, wrong on t1 and t3."""
    n, moa = number_in(body), body.get("moa") or {}
    if body["model"] == "m":
        return 200, completion(f"Answer: {n if n % 2 == 0 else n + 1}")
    assert body["model"] == "self_moa-m", body["model"]
    if moa.get("agree") is None:
        return 200, completion(f"Answer: {n}", prompt_tokens=600, completion_tokens=60,
                               trace=trace(n, early=False, proposals=6))
    early = n % 2 == 0
    answer = n if early or n == 5 else n + 1
    tokens = (150, 15) if early else (600, 60)
    return 200, completion(f"Answer: {answer}", prompt_tokens=tokens[0], completion_tokens=tokens[1],
                           trace=trace(n, early=early, proposals=3 if early else 6))


def command(tasks: Path, out: Path, url: str, *extra: str, agree: dict[str, Any] = AGREE) -> list[str]:
    return ["ab", "--tasks", str(tasks), "--approaches", "none,self_moa,self_moa@agree", "--model", "m",
            "--baseline", "self_moa", "--moa", f"self_moa@agree={json.dumps(agree)}",
            "--moa", 'self_moa={"samples": 6}', "--out", str(out), "--url", url, "--no-progress",
            "--concurrency", "3", *extra]


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, catch_exceptions=False)


def rows_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def line(summary: dict[str, Any], approach: str) -> dict[str, Any]:
    return next(entry for entry in summary["approaches"] if entry["approach"] == approach)


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.jsonl"
    path.write_text(say_tasks(TASKS))
    return path


def test_an_alias_is_its_approach_requested_with_its_own_moa_and_reported_under_its_label(
        tasks: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with ScriptedEndpoint(script) as endpoint:
        done = invoke(command(tasks, out, endpoint.url))
        asked = endpoint.requests_for("self_moa-m")
        models = {body["model"] for body in endpoint.bodies}
    assert done.exit_code == 0, done.output
    assert models == {"m", "self_moa-m"}                                   # never `self_moa@agree-m`
    assert sorted(json.dumps(b["moa"], sort_keys=True) for b in asked) == sorted(
        [json.dumps({"samples": 6, "trace": True}, sort_keys=True)] * TASKS
        + [json.dumps({**AGREE, "trace": True}, sort_keys=True)] * TASKS)

    rows = rows_of(out)
    assert sorted((r["id"], r["approach"]) for r in rows) == sorted(
        (f"t{i}", a) for i in range(TASKS) for a in ("none", "self_moa", "self_moa@agree"))
    aliased = {r["id"]: r for r in rows if r["approach"] == "self_moa@agree"}
    assert all(r["model"] == "self_moa-m" for r in aliased.values())
    assert [aliased[f"t{i}"]["early_exit"] for i in range(TASKS)] == [{"reason": "agree", "share": 1.0}, None] * 3
    assert aliased["t0"]["proposals"] == 3 and aliased["t0"]["quality"] == 1.0
    assert aliased["t0"]["usage_by_model"]["m"]["prompt_tokens"] == 30
    assert all(r["early_exit"] is None for r in rows if r["approach"] != "self_moa@agree")

    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == "self_moa"
    plain, agree, none = (line(summary, a) for a in ("self_moa", "self_moa@agree", "none"))
    assert (none["early_exits"], plain["early_exits"], agree["early_exits"]) == (None, 0, 3)
    assert (agree["correct"], agree["wins"], agree["losses"]) == (4, 0, 2)   # t1 and t3 lost against self_moa
    assert agree["p_vs_baseline"] == pytest.approx(mcnemar_exact(0, 2))
    assert (none["wins"], none["losses"]) == (0, 3)
    assert agree["prompt_tokens"] == 3 * 150 + 3 * 600 < plain["prompt_tokens"] == 6 * 600
    with open(out / "summary.csv") as handle:
        assert {r["approach"]: r["early_exits"] for r in csv.DictReader(handle)} == {
            "none": "", "self_moa": "0", "self_moa@agree": "3"}

    report = (out / "report.md").read_text()
    assert "| early exits |" in report and EARLY_EXIT_COLUMN in report
    assert "| self_moa@agree | 6 | 0.667 [" in report and " | 3/6 |" in report and " | 0/6 |" in report
    assert "| self_moa (baseline) | 6 |" in report
    assert "`self_moa@agree` vs `self_moa`: 0 wins, 2 losses" in report and "`none` vs `self_moa`" in report
    assert "- `self_moa@agree`: 3 of 6 tasks exited early" in report and "- `self_moa`: 0 of 6 tasks" in report
    assert '"self_moa@agree": {"first": 3' in report
    assert "early exits" in done.output and "self_moa@agree" in done.output   # the console table
    for plot in ("accuracy_vs_cost.png", "quality_diversity.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")


def test_aliases_resume_by_their_own_keys_and_refuse_other_settings(tasks: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with ScriptedEndpoint(script) as endpoint:
        assert invoke(command(tasks, out, endpoint.url)).exit_code == 0
        kept, asked = (out / "results.jsonl").read_bytes(), len(endpoint.bodies)

        again = invoke(command(tasks, out, endpoint.url))
        assert again.exit_code == 0 and len(endpoint.bodies) == asked and (out / "results.jsonl").read_bytes() == kept

        more = command(tasks, out, endpoint.url)
        more[more.index("--approaches") + 1] += ",self_moa@also"           # a new label: only its pairs are asked
        assert invoke(more).exit_code == 0
        new = endpoint.bodies[asked:]
        assert len(new) == TASKS and all(b["model"] == "self_moa-m" and b["moa"] == {"trace": True} for b in new)
        assert (out / "results.jsonl").read_bytes().startswith(kept)

        refused = invoke(command(tasks, out, endpoint.url, agree={**AGREE, "agree": 0.5}))
        assert len(endpoint.bodies) == asked + TASKS
    assert refused.exit_code == 1 and "moa differ" in refused.output
    keys = [(r["id"], r["approach"]) for r in rows_of(out)]
    assert len(keys) == len(set(keys)) == 4 * TASKS


@pytest.mark.parametrize(("approaches", "extra", "flag"), [
    ("none,self_moa@", [], "--approaches"), ("none,@agree", [], "--approaches"),
    ("none,self_moa@a@b", [], "--approaches"), ("none,self_moa@a b", [], "--approaches"),
    ("none,self_moa@x,self_moa@x", [], "--approaches"),
    ("none,self_moa@agree", ["--moa", "self_moa={}"], "--moa"),         # settings go under the alias's name
    ("none,self_moa", ["--moa", "self_moa@agree={}"], "--moa"),
    ("none,self_moa@agree", ["--baseline", "self_moa"], "--baseline"),
])
def test_bad_aliases_are_usage_errors_naming_the_flag(approaches: str, extra: list[str], flag: str) -> None:
    result = CliRunner().invoke(main, ["ab", "--tasks", "arithmetic", "--approaches", approaches, "--model", "m",
                                       "--out", "o", "--url", "http://127.0.0.1:9/v1", *extra])
    assert result.exit_code == 2 and flag in result.output, result.output


def test_alias_names() -> None:
    assert _approaches("none, self_moa ,self_moa@agree,mixed_moa@v1.2-b") == [
        "none", "self_moa", "self_moa@agree", "mixed_moa@v1.2-b"]
    assert base_approach("self_moa@agree") == "self_moa" and base_approach("moa") == "moa"
    assert is_ours("self_moa_seq@x") and not is_ours("moa@x") and not is_ours("none")
    assert request_model("self_moa@agree", "m") == "self_moa-m" and request_model("none@again", "m") == "m"


@pytest.mark.parametrize(("given", "read"), [
    ({"reason": "agree", "share": 0.83, "x": 1}, {"reason": "agree", "share": 0.83}),
    ("agree", {"reason": "agree", "share": None}), (True, {"reason": None, "share": None}),
    ({"reason": 3, "share": "most"}, {"reason": None, "share": None}),
    ({"share": True}, {"reason": None, "share": None}),
    (None, None), (False, None), (0.5, None), ([], None),
])
def test_early_exit_is_read_leniently_from_the_trace(given: object, read: dict[str, Any] | None) -> None:
    assert Trace.model_validate({"early_exit": given}).model_dump()["early_exit"] == read
    assert Trace.model_validate({}).early_exit is None


def test_the_table_gains_its_column_only_when_something_exited_early() -> None:
    base = {"approach": "a", "n": 2, "accuracy": 1.0, "ci_low": 0.5, "ci_high": 1.0, "p_vs_baseline": None,
            "wins": 0, "losses": 0, "latency_p50": 1.0, "latency_p95": 1.0, "prompt_tokens": 2,
            "completion_tokens": 2, "cost_lower_bound": None, "errors": 0, "quality": None, "diversity": None}
    assert "early exits" not in table([{**base, "early_exits": 0}, {**base, "early_exits": None}], "a")[0]
    shown = table([{**base, "early_exits": 1}, {**base, "early_exits": None}], "a")
    assert shown[0][-1] == "early exits" and [row[-1] for row in shown[1:]] == ["1/2", "n/a"]


def judged(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The judge always prefers response A; the candidates' replies carry traces (even tasks exit early)."""
    if body["model"] == "judge":
        return 200, completion("<winner>A</winner>")
    n = number_in(body)
    if body["model"] == "m":
        return 200, completion(f"plain {n}")
    return 200, completion(f"traced {n}", trace=trace(n, early=n % 2 == 0, proposals=3))


def test_judged_answers_of_ours_keep_their_trace_fields(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "prompt": f"Say {i}.", "scorer": "judge"}) + "\n"
                             for i in range(4)))
    out = tmp_path / "out"
    with ScriptedEndpoint(judged) as endpoint:
        done = invoke(["ab", "--tasks", str(tasks), "--approaches", "none,self_moa@agree", "--model", "m",
                       "--judge", "judge", "--moa", f"self_moa@agree={json.dumps(AGREE)}", "--out", str(out),
                       "--url", endpoint.url, "--no-progress"])
    assert done.exit_code == 0, done.output
    ours = {r["id"]: r for r in rows_of(out) if r["approach"] == "self_moa@agree"}
    assert all(r["score"] == 0.5 and "judge" in r for r in ours.values())         # A once, B once: a split
    assert [ours[f"t{i}"]["early_exit"] is not None for i in range(4)] == [True, False, True, False]
    assert all(r["usage_by_model"] == {"m": {"calls": 1, "prompt_tokens": 30, "completion_tokens": 15,
                                             "cached_tokens": 0}} for r in ours.values())
    assert line(json.loads((out / "summary.json").read_text()), "self_moa@agree")["early_exits"] == 2
