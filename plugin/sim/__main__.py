"""`python -m selfmoa.sim [--host H] [--port P] [--profile FILE] [--seed S] [--time-scale X]`."""

from __future__ import annotations

import argparse

from .runner import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m selfmoa.sim", description="Offline OpenAI-compatible simulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900, help="0 picks a free port (printed on start)")
    parser.add_argument("--profile", default=None, help="profile YAML (default: the bundled one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-scale", type=float, default=None, help="latency multiplier (0: none)")
    args = parser.parse_args(argv)
    serve(host=args.host, port=args.port, profile_path=args.profile, seed=args.seed, time_scale=args.time_scale)


if __name__ == "__main__":
    main()
