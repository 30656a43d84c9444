"""``lanes demo``: a local multi-service, multi-lane mesh that shows lane routing end to end."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = (
    "run a local bookinfo mesh with three lanes on loopback and show which version served each hop"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-plane",
        choices=("sidecar", "envoy"),
        default="sidecar",
        help="route through the lanes sidecar (default) or real Envoy with the rendered config",
    )
    parser.add_argument(
        "--serve", action="store_true", help="keep the mesh running and print curl commands to try"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, metavar="N", help="requests per scenario (default 3)"
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from lane_router._demo import run_demo

    if args.repeat < 1:
        raise SystemExit("lanes demo: --repeat must be at least 1")
    try:
        return asyncio.run(
            run_demo(data_plane=args.data_plane, serve=args.serve, repeat=args.repeat)
        )
    except asyncio.CancelledError:  # SIGINT/SIGTERM before the table: children already stopped
        return 130
    except (RuntimeError, TimeoutError) as exc:
        print(f"lanes demo: {exc}", file=sys.stderr)
        return 2
