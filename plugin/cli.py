"""The `selfmoa` command line: short commands that call into the package."""

from __future__ import annotations

from pathlib import Path

import click

from .ab.command import ab

PLUGINS_DIR = Path(__file__).parent / "optillm_plugins"


@click.group()
@click.version_option(package_name="selfmoa")
def main() -> None:
    """Self-MoA, Mixed-MoA and their Seq variants for the optillm proxy."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("optillm_args", nargs=-1, type=click.UNPROCESSED)
def serve(optillm_args: tuple[str, ...]) -> None:
    """optillm's proxy with the four approaches registered.

    Every optillm flag passes through (--base-url, --port, --approach, --plugins-dir, ...);
    --moa-config PATH names the server YAML (else SELFMOA_CONFIG).
    """
    from .serve import serve as run_server

    run_server(list(optillm_args))


@main.command("plugins-dir")
def plugins_dir() -> None:
    """Print a directory from which stock `optillm` serves the four approaches (start it there)."""
    click.echo(str(PLUGINS_DIR.resolve()))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8900, show_default=True, type=int)
@click.option("--profile", type=click.Path(exists=True, dir_okay=False), help="Simulated models (YAML).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--time-scale", type=float, help="Multiply every simulated latency (0: instant).")
def sim(host: str, port: int, profile: str | None, seed: int, time_scale: float | None) -> None:
    """The offline OpenAI-compatible simulator (simulated models, not real ones)."""
    from .sim import serve as run_sim

    run_sim(host=host, port=port, profile_path=profile, seed=seed, time_scale=time_scale)


main.add_command(ab)


@main.command()
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N tasks of the bundled set.")
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the report and plots go.")
def demo(limit: int | None, out: Path) -> None:
    """Offline end-to-end demo: simulator + `selfmoa serve` + `selfmoa ab` of six approaches, report and plots."""
    from .demo import run_demo

    run_demo(limit, out)
