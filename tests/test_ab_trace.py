"""Through a real `selfmoa serve` with `moa.trace`: quality, diversity and per-model cost, checked against
the simulator's own log of the backend calls each answer made."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from selfmoa.ab.diversity import vendi_score
from selfmoa.ab.tasks import load_tasks
from selfmoa.sim import extract_answer
from selfmoa.testing.live import BIN, Proxy, SimLog

RATES = {"sim-strong": (3.0, 12.0), "sim-weak": (0.5, 1.5)}


def test_trace_gives_quality_diversity_and_per_model_cost(proxy: Proxy, simlog: SimLog, tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("".join(f"{m}: {{prompt: {p}, completion: {c}}}\n" for m, (p, c) in RATES.items()))
    out = tmp_path / "out"
    answers = {t.id: t.numeric_answer for t in load_tasks("arithmetic")}
    per_row = []
    for limit in (1, 2):  # one task per run (a resume adds the second), so each row's backend calls are known
        simlog.clear()
        done = subprocess.run([str(BIN / "selfmoa"), "ab", "--tasks", "arithmetic", "--limit", str(limit),
                               "--approaches", "mixed_moa", "--baseline", "mixed_moa", "--model", "sim-strong",
                               "--moa", 'mixed_moa={"proposers": ["sim-strong", "sim-weak"], "samples": 4}',
                               "--prices", str(prices), "--out", str(out), "--url", f"{proxy.url}/v1",
                               "--no-progress"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        per_row.append(simlog.calls())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["arith-01", "arith-02"]

    expected_cost = 0.0
    for row, calls in zip(rows, per_row):
        proposals = [text for call in calls if call["kind"] == "propose" for text in call["outputs"]]
        assert row["proposals"] == len(proposals) == 4
        right = [extract_answer(text) == answers[row["id"]] for text in proposals]
        assert row["quality"] == pytest.approx(sum(right) / len(right))
        assert row["diversity"] == pytest.approx(vendi_score(proposals))
        assert set(row["usage_by_model"]) == {"sim-strong", "sim-weak"}
        for model, usage in row["usage_by_model"].items():
            mine = [c for c in calls if c["model"] == model]
            assert usage["prompt_tokens"] == sum(c["prompt_tokens"] for c in mine)
            assert usage["completion_tokens"] == sum(c["completion_tokens"] for c in mine)
            expected_cost += sum(c["prompt_tokens"] * RATES[model][0] + c["completion_tokens"] * RATES[model][1]
                                 for c in mine) / 1e6
    line = json.loads((out / "summary.json").read_text())["approaches"][0]
    assert line["cost_complete"] is True and line["cost"] == pytest.approx(expected_cost)
    assert line["tokens_complete"] is True
