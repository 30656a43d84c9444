"""``lanes check``: validate a topology and show who serves what, before anything is deployed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from lane_router._topology import Topology

__all__ = ["HELP", "add_arguments", "format_canaries", "format_matrix", "run"]

HELP = "validate a topology file and print the lane x service table"

LEGEND = (
    "legend: NAME   the lane's own version\n"
    "        NAME*  falls back to NAME's version\n"
    "        503    a strict lane (or a walk ending in one) without a version: answers 503"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", required=True, metavar="FILE", help="the lanes.yaml")


def run(args: argparse.Namespace) -> int:
    from lane_router import TopologyError, load_topology

    try:
        topology = load_topology(args.file)
    except TopologyError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    _print(topology, sys.stdout)
    return 0


def format_matrix(topology: Topology) -> list[str]:
    """One row per service, one column per lane (baseline first); cells as in ``LEGEND``."""
    lanes = topology.all_lanes
    header = ["service", *lanes]
    rows = [header]
    for service, table in topology.routes.items():
        row = [service]
        for lane in lanes:
            res = table[lane]
            if res.strict_miss:
                row.append("503")
            elif res.is_fallback:
                row.append(f"{res.serving}*")
            else:
                row.append(str(res.serving))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def format_canaries(topology: Topology) -> list[str]:
    """One line per service with a canary: version, weight, content matches (OR of ANDs)."""
    lines = []
    for name, svc in topology.services.items():
        canary = svc.canary
        if canary is None:
            continue
        line = (
            f"  {name}: {canary.version} takes {canary.weight}% of baseline traffic "
            f"({topology.baseline} {100 - canary.weight}%)"
        )
        if canary.matches:
            shown = []
            for m in canary.matches:
                conds = [f"{n} {k} {json.dumps(v)}" for n, k, v in m.headers]
                if m.uri is not None:
                    conds.append(f"uri {m.uri[0]} {json.dumps(m.uri[1])}")
                shown.append(" and ".join(conds))
            line += "; always when " + " | ".join(shown)
        lines.append(line)
    return lines


def _print(topology: Topology, out: TextIO) -> None:
    n_s, n_l = len(topology.services), len(topology.lanes)
    print(
        f"ok: {n_s} service(s), {n_l} lane(s) besides {topology.baseline!r}; "
        f"header {topology.header!r}, baggage key {topology.baggage_key!r}",
        file=out,
    )
    for name, lane in topology.lanes.items():
        walk = " -> ".join(topology.chains[name])
        print(f"  {name}: {'strict' if lane.strict else walk}", file=out)
    canaries = format_canaries(topology)
    if canaries:
        print("canaries (baseline traffic only; lanes never reach them):", file=out)
        for line in canaries:
            print(line, file=out)
    print(file=out)
    for line in format_matrix(topology):
        print(line, file=out)
    print(file=out)
    print(LEGEND, file=out)
