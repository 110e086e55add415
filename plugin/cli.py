"""The `selfmoa` command line."""
import click


@click.group()
def main() -> None:
    """Self-MoA and Mixed-MoA for optillm."""
