"""The `selfmoa ab` click command: options checked here, the work done by `selfmoa.ab.app`.

Importing this module needs only click: the harness's own dependencies (scipy, matplotlib, tqdm:
the `selfmoa[ab]` extra) are imported when the command runs, and their absence is a one-line
message naming the install, not a traceback.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import click

EXTRA_MODULES = {"scipy", "matplotlib", "tqdm"}
INSTALL_HINT = "pip install 'selfmoa[ab]'"


_LABEL = re.compile(r"[A-Za-z0-9_.-]+")


def _check_alias(name: str) -> None:
    """`NAME@LABEL`: approach NAME run under its own label (and its own `--moa`); one `@`, both parts given."""
    base, sep, label = name.partition("@")
    if sep and (not base or not _LABEL.fullmatch(label)):
        raise click.BadParameter(f"{name!r}: an alias is APPROACH@LABEL, the label made of letters, digits, "
                                 "`_`, `.` and `-` (e.g. self_moa@agree)", param_hint="--approaches")


def _approaches(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names or len(set(names)) != len(names):
        raise click.BadParameter("a comma-separated list of distinct approaches, e.g. none,moa,self_moa "
                                 "(the same approach twice under two labels: self_moa,self_moa@agree)",
                                 param_hint="--approaches")
    for name in names:
        _check_alias(name)
    return names


def _moa(entries: tuple[str, ...], approaches: list[str]) -> dict[str, dict[str, Any]]:
    settings: dict[str, dict[str, Any]] = {}
    for entry in entries:
        name, sep, text = entry.partition("=")
        try:
            value = json.loads(text) if sep else None
        except ValueError as error:
            raise click.BadParameter(f"{entry!r}: the JSON does not parse ({error})", param_hint="--moa") from None
        if not isinstance(value, dict):
            raise click.BadParameter(f"{entry!r}: expected APPROACH=JSON-object", param_hint="--moa")
        if name not in approaches:
            raise click.BadParameter(f"{name!r} is not among --approaches (an alias's settings are given under "
                                     "its full name: --moa self_moa@agree=JSON)", param_hint="--moa")
        settings[name] = value
    return settings


def _endpoint(url: str | None, serve: bool, base_url: str | None) -> None:
    if serve and url:
        raise click.UsageError("give either --url or --serve --base-url, not both")
    if serve and not base_url:
        raise click.UsageError("--serve needs --base-url (the backend to put `selfmoa serve` in front of)")
    if base_url and not serve:
        raise click.UsageError("--base-url goes with --serve (or give the endpoint itself as --url)")
    if not serve and not url:
        raise click.UsageError("name the endpoint: --url URL, or --serve --base-url URL")


def load_app() -> Any:
    """`selfmoa.ab.app`, or a ClickException naming the install when the `selfmoa[ab]` extra is missing."""
    try:
        from . import app
    except ImportError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in EXTRA_MODULES:
            raise
        raise click.ClickException(f"selfmoa ab needs its optional dependencies ({missing} is missing): "
                                   f"{INSTALL_HINT}") from None
    return app


@click.command()
@click.option("--tasks", required=True, help="A JSONL task file, or a bundled set: arithmetic, choice, open.")
@click.option("--approaches", "approaches_text", required=True,
              help="Comma-separated, e.g. none,moa,self_moa; NAME@LABEL runs NAME again under LABEL (self_moa@agree).")
@click.option("--model", required=True, help="The model M; approach A is requested as A-M (none: M).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--url", help="The endpoint (optillm or `selfmoa serve`), an OpenAI base URL ending in /v1.")
@click.option("--serve", is_flag=True, help="Start our own `selfmoa serve` in front of --base-url.")
@click.option("--base-url", help="With --serve: the backend's OpenAI base URL.")
@click.option("--moa", "moa_entries", multiple=True, metavar="APPROACH=JSON",
              help="Per-approach `moa` settings (an alias under its full name: self_moa@agree=JSON).")
@click.option("--baseline", default="none", show_default=True, help="The approach the others are compared with.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", type=int, help="Sent as the requests' seed; also seeds the bootstrap.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N tasks.")
@click.option("--judge", help="Model judging open-ended (scorer: judge) tasks against the baseline.")
@click.option("--prices", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON or YAML: model -> {prompt, completion[, cached_prompt]} dollars per 1M tokens.")
@click.option("--timeout", default=600.0, show_default=True, type=click.FloatRange(min=1), help="Seconds per request.")
@click.option("--progress/--no-progress", default=True, help="The progress bar on stderr.")
def ab(tasks: str, approaches_text: str, model: str, out: Path, url: str | None, serve: bool, base_url: str | None,
       moa_entries: tuple[str, ...], baseline: str, concurrency: int, seed: int | None, limit: int | None,
       judge: str | None, prices: Path | None, timeout: float, progress: bool) -> None:
    """A/B approaches on your tasks: accuracy with intervals, significance, cost, latency, a report."""
    approaches = _approaches(approaches_text)
    _endpoint(url, serve, base_url)
    if baseline not in approaches:
        raise click.BadParameter(f"{baseline!r} is not among --approaches", param_hint="--baseline")
    moa = _moa(moa_entries, approaches)
    app = load_app()
    settings = app.Settings(tasks=tasks, approaches=approaches, model=model, out=out, url=url,
                            serve_base_url=base_url if serve else None, moa=moa, baseline=baseline,
                            concurrency=concurrency, seed=seed, limit=limit, judge=judge, prices=prices,
                            timeout=timeout, command=shlex.join(["selfmoa", *sys.argv[1:]]), progress=progress)
    sys.exit(app.run_ab(settings))
