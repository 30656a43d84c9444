"""``lanes check``: validate a topology and show who serves what, before anything is deployed."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from lane_router._topology import Topology

__all__ = ["HELP", "add_arguments", "format_matrix", "run"]

HELP = "validate a topology file and print the lane x service table"

LEGEND = (
    "legend: NAME   the lane's own version\n"
    "        NAME*  falls back to NAME's version\n"
    "        503    a strict lane (or a walk ending in one) without a version: answers 503"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", required=True, metavar="FILE", help="the lanes.yaml")


def run(args: argparse.Namespace) -> int:
    from lane_router._topology import TopologyError, load_topology

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
    print(file=out)
    for line in format_matrix(topology):
        print(line, file=out)
    print(file=out)
    print(LEGEND, file=out)
