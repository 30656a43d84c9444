"""``lanes canary``: step, promote or abort a canary, editing the topology file in place.

The file keeps its comments and layout (only the changed values are rewritten), is validated
before it is written, and is replaced atomically, so a running ``lanes sidecar`` watching it
reloads the new table without dropping a request.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["HELP", "add_arguments", "run"]

HELP = "set a canary's weight, promote or abort it (edits the topology file in place)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", metavar="SERVICE", help="the service whose canary to change")
    parser.add_argument("-f", "--file", required=True, metavar="FILE", help="the lanes.yaml")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--weight",
        type=int,
        metavar="N",
        help="percent (0-100) of baseline traffic the canary takes, besides its content matches",
    )
    action.add_argument(
        "--promote",
        action="store_true",
        help="the canary's endpoints become the baseline's; the canary is removed",
    )
    action.add_argument(
        "--abort",
        action="store_true",
        help="weight 0 and no content matches: the canary takes nothing (the block stays)",
    )
    action.add_argument(
        "--remove",
        action="store_true",
        help="delete an aborted canary (weight 0, no matches) and its version entry",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the change as a unified diff and leave the file alone",
    )
    new = parser.add_argument_group("declare a canary (with --weight)")
    new.add_argument("--version", metavar="V", help="the version to expose (not a lane)")
    new.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="an endpoint of a new version (repeatable; none for Istio, which selects pods)",
    )
    new.add_argument(
        "--match",
        action="append",
        default=[],
        metavar="SPEC",
        help="a content match that always goes to the canary (repeatable, OR): "
        "header:NAME:exact|prefix|regex:VALUE or uri:exact|prefix|regex:VALUE",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lane_router._rollout import (
        RolloutError,
        check_endpoints,
        parse_match,
        step,
        write_atomically,
    )
    from lane_router._topology import TopologyError

    action = "weight"
    for name in ("promote", "abort", "remove"):
        if getattr(args, name):
            action = name
    path = Path(args.file)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"lanes canary: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    try:
        check_endpoints(args.endpoint)
        matches = [parse_match(m) for m in args.match]
        new_text, summary = step(
            text,
            args.service,
            action,
            weight=args.weight,
            version=args.version,
            endpoints=args.endpoint,
            matches=matches,
            source=str(path),
        )
    except (RolloutError, TopologyError) as exc:
        print(f"lanes canary: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        import difflib

        sys.stdout.writelines(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                new_text.splitlines(keepends=True),
                fromfile=str(path),
                tofile=f"{path} ({summary})",
            )
        )
        return 0
    try:
        write_atomically(path, new_text, expect=raw)
    except RolloutError as exc:
        print(f"lanes canary: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"lanes canary: cannot write {path}: {exc}", file=sys.stderr)
        return 1
    print(summary)
    return 0
