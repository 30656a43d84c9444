"""The ``lanes`` command. Each subcommand lives in ``lane_router/_cmd/<name>.py`` and exposes
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports stay inside ``run``
so that ``lanes check`` does not pay for the Kubernetes client."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Order is the order of ``lanes --help``.
_COMMANDS = (
    "check", "render", "canary", "sidecar", "inject", "controller", "token", "demo", "ui"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lanes",
        description="Lane routing for microservices: one topology, every data plane.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"lane_router._cmd.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lane_router._cmd.{name}":
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
