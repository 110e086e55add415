"""The report's two PNG plots (matplotlib, Agg: no display needed).

- accuracy_vs_cost.png: each approach's accuracy with its 95% interval against its cost per task
  (tokens per task without a price table). A figure that is only a lower bound (incomplete usage) is
  drawn hollow and labelled with ">=".
- quality_diversity.png: the paper's view, one point per task and ensemble answer: the proposals'
  quality (x) and Vendi diversity (y), coloured by the ensemble's score, with the fitted coefficients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from .endpoint import is_ours  # noqa: E402
from .stats import equation  # noqa: E402

MARKERS = "osD^vP*X<>"
COST_PLOT = "accuracy_vs_cost.png"
QD_PLOT = "quality_diversity.png"


def cost_axis(line: Mapping[str, Any]) -> tuple[float | None, bool, str]:
    """The x value of an approach (per task), whether it is complete, and the axis label."""
    n = line["n"] or 1
    if line.get("cost_lower_bound") is not None:
        return line["cost_lower_bound"] / n, bool(line["cost_complete"]), "cost per task ($)"
    known = (line.get("prompt_tokens") or 0) + (line.get("completion_tokens") or 0)
    if line.get("prompt_tokens") is None and line.get("completion_tokens") is None:
        return None, False, "tokens per task"
    return known / n, bool(line.get("tokens_complete")), "tokens per task (prompt + completion)"


def plot_accuracy_cost(lines: Sequence[Mapping[str, Any]], path: Path, accuracy_label: str) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    label = "cost per task"
    for index, line in enumerate(lines):
        x, complete, label = cost_axis(line)
        if x is None or line["accuracy"] is None:
            continue
        below, above = line["accuracy"] - line["ci_low"], line["ci_high"] - line["accuracy"]
        colour = f"C{index % 10}"
        axes.errorbar([x], [line["accuracy"]], yerr=[[below], [above]], fmt="o", capsize=4,
                      markerfacecolor=colour if complete else "white", color=colour)
        axes.annotate(("" if complete else ">= ") + line["approach"], (x, line["accuracy"]),
                      textcoords="offset points", xytext=(6, 4), fontsize=9)
    axes.set_xlabel(label + ("  (hollow: lower bound, usage incomplete)" if any(
        not cost_axis(line)[1] for line in lines) else ""))
    axes.set_ylabel(f"{accuracy_label} (95% interval)")
    axes.set_ylim(-0.05, 1.05)
    axes.margins(x=0.2)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_quality_diversity(rows: Sequence[Mapping[str, Any]], fit: Mapping[str, Any], path: Path) -> None:
    points = [r for r in rows if is_ours(str(r.get("approach"))) and r.get("quality") is not None
              and r.get("diversity") is not None and r.get("error") is None]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    if points:
        for index, approach in enumerate(sorted({str(p["approach"]) for p in points})):
            mine = [p for p in points if p["approach"] == approach]
            shown = axes.scatter([p["quality"] for p in mine], [p["diversity"] for p in mine],
                                 c=[p["score"] or 0.0 for p in mine], cmap="RdYlGn", vmin=0, vmax=1,
                                 marker=MARKERS[index % len(MARKERS)], edgecolors="black", linewidths=0.4,
                                 label=approach)
        figure.colorbar(shown, ax=axes, label="ensemble score")
        axes.legend(fontsize=8, loc="best")
    else:
        axes.text(0.5, 0.5, "no traced proposals to plot", ha="center", va="center", transform=axes.transAxes)
    raw = fit.get("raw")
    title = equation(raw["alpha"], raw["beta"], raw["c"]) if raw else \
        f"too few varied points to fit ({fit.get('points', 0)})"
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("proposal quality (mean score of the proposals)")
    axes.set_ylabel("proposal diversity (Vendi score)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
