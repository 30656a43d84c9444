"""``lanes sidecar``: run the lane-routing proxy for one topology file."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "run the lane-routing sidecar proxy (HTTP/1.1) with an admin port"


def _hostport(text: str) -> tuple[str, int]:
    from lane_router._sidecar._config import parse_hostport

    try:
        return parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", required=True, help="the topology (lanes.yaml)")
    parser.add_argument(
        "--listen",
        action="append",
        type=_hostport,
        metavar="HOST:PORT",
        help="proxy address, repeatable; [::1]:15001 for IPv6; port 0 picks one "
        "(default 127.0.0.1:15001)",
    )
    parser.add_argument(
        "--admin",
        type=_hostport,
        default=("127.0.0.1", 15000),
        metavar="HOST:PORT",
        help="admin address: /healthz /readyz /metrics /routes (default 127.0.0.1:15000)",
    )
    parser.add_argument("--no-admin", action="store_true", help="do not start the admin server")
    parser.add_argument(
        "--admin-server",
        choices=("builtin", "aiohttp"),
        default="builtin",
        help="admin HTTP server: the sidecar's own (default, ~10 MB less memory) or aiohttp",
    )
    t = parser.add_argument_group("timeouts (seconds, 0 = none)")
    t.add_argument("--connect-timeout", type=float, default=5.0)
    t.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        help="no bytes either way during an exchange (504)",
    )
    t.add_argument(
        "--request-timeout",
        type=float,
        default=300.0,
        help="a whole exchange, request head to last response byte (504)",
    )
    t.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="to receive a request head once it started (slowloris, 408)",
    )
    t.add_argument(
        "--keepalive-timeout",
        type=float,
        default=75.0,
        help="idle client connections are closed after this",
    )
    t.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, wait this long for in-flight requests",
    )
    lim = parser.add_argument_group("limits")
    lim.add_argument("--max-header-bytes", type=int, default=65536, help="431 above this")
    lim.add_argument(
        "--max-connections",
        type=int,
        default=10000,
        help="client connections over this get a 503 and are closed",
    )
    lim.add_argument(
        "--max-hops",
        type=int,
        default=16,
        help="508 when the hop counter header reaches this (a routing loop)",
    )
    lim.add_argument("--hops-header", default="x-lanes-hops")
    lim.add_argument(
        "--eject-time",
        type=float,
        default=5.0,
        help="first ejection of a refusing endpoint; doubles per failure",
    )
    lim.add_argument("--eject-max", type=float, default=60.0)
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        help="how often to check the file for changes (0 = only on SIGHUP)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from lane_router._sidecar import SidecarConfig
    from lane_router._sidecar import run as run_sidecar

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s lanes-sidecar %(levelname)s %(message)s",
    )
    config = SidecarConfig(
        topology_path=args.file,
        listen=tuple(args.listen or [("127.0.0.1", 15001)]),
        admin=None if args.no_admin else args.admin,
        admin_server=args.admin_server,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout,
        request_timeout=args.request_timeout,
        header_timeout=args.header_timeout,
        keepalive_timeout=args.keepalive_timeout,
        drain_timeout=args.drain_timeout,
        max_header_bytes=args.max_header_bytes,
        max_connections=args.max_connections,
        max_hops=args.max_hops,
        hops_header=args.hops_header,
        eject_base=args.eject_time,
        eject_max=args.eject_max,
        reload_interval=args.reload_interval,
    )
    return run_sidecar(config)
